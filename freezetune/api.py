"""The Python API in keywords: the options of `freezetune train` and `freezetune compare`, as arguments.

    import freezetune

    run = freezetune.train(model="builtin:multilingual-e5-small", data="builtin:inews", strategy="freeze6",
                           output_dir="runs/freeze6")
    study = freezetune.study(strategies=["full", "freeze6"], seeds=[0, 1, 2], output_dir="runs/study")

- `freezetune.train(config=None, splits=None, **options)`: one run. `config` is a `TrainConfig` (keywords then
  replace some of its values), a YAML file or packaged config name (what `--config` takes), or None.
  `splits`: data already loaded (`freezetune.load_splits`), as `compare` passes it. Returns metrics.json's
  content as a `display.RunMetrics`: a dict that Jupyter shows as the run's per-epoch table.
  `freezetune.training.train(config, splits)` is the core it calls, unchanged.
- `freezetune.study(options=None, **options)` is `freezetune.compare.compare` (`freezetune.compare` itself is the
  package): a study. `options` is a `CompareOptions` or None; `config=` names a YAML file as `--config` does.
  Returns the study's folder as a `display.StudyFolder`: a `pathlib.Path` that Jupyter shows as the comparison table.

Keywords are the command line's options with `-` written `_` (`--batch-size 32` is `batch_size=32`,
`--no-prefix-cache` is `prefix_cache=False`, `--freeze 6` is `freeze=6`), over a config file's values, over the
defaults. The values check themselves as on the command line (`TrainConfig` and `CompareOptions` validate in
`__post_init__`), so a bad one raises `UserError` with the CLI's one-line message, before any slow work; a
keyword that is no option raises `UserError` naming the closest ones.

While either runs, freezetune speaks as the CLI does: `[freezetune] ...` lines on stderr, and progress bars (the
Trainer's own HTML ones in Jupyter). A program that configured the `freezetune` logger itself (a level or a handler,
e.g. `logging.getLogger("freezetune").setLevel(logging.WARNING)` for quiet) is left as it set it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import logging
import sys

from .config import TrainConfig
from .errors import UserError
from .layout import is_main_process

LOG_FORMAT = "[freezetune] %(message)s"  # the CLI's voice (cli._log_to_stderr)


def train(config: TrainConfig | str | None = None, splits=None, **options):
    """Fine-tune one model with one strategy (see the module docstring); returns metrics.json's content."""
    from .display import RunMetrics
    from .training import train as train_run

    config = build(TrainConfig, config, options, "train")
    if not config.output_dir:
        raise UserError("train needs output_dir= (--output-dir): the folder the model and metrics.json are written to")
    with cli_voice():
        return RunMetrics(train_run(config, splits))


def compare_options(options, keywords: dict):
    """The `CompareOptions` of `compare(options, **keywords)`."""
    from .compare.options import CompareOptions

    return build(CompareOptions, options, keywords, "compare")


def build(kind, base, keywords: dict, entry: str):
    """An instance of the config dataclass `kind` from `base` (an instance, a YAML file or packaged config name,
    or None) and keyword options: defaults < `base` < keywords; `config=` among the keywords is a YAML file too."""
    keywords = known_options(kind, keywords, entry)
    if isinstance(base, kind) and not keywords:
        return base
    if isinstance(base, kind):
        values = {f.name: getattr(base, f.name) for f in dataclasses.fields(kind)}
    elif isinstance(base, str):
        values = _yaml_options(kind, base)
        if "config" in {f.name for f in dataclasses.fields(kind)}:
            values["config"] = base  # recorded, as the CLI records --config
    elif base is None:
        values = {}
    else:
        raise UserError(f"{entry}() takes a {kind.__name__}, a YAML config file or keyword options, not a "
                        f"{type(base).__name__}")
    if isinstance(keywords.get("config"), str):  # CompareOptions records its config file; its values come first
        values.update(_yaml_options(kind, keywords["config"]))
    return kind(**{**values, **keywords})


def known_options(kind, keywords: dict, entry: str) -> dict:
    """`keywords` with the CLI's older spellings (`freeze`) under their option's name; an unknown one is refused."""
    names = [f.name for f in dataclasses.fields(kind)]
    aliases = {alias[2:].replace("-", "_"): f.name for f in dataclasses.fields(kind)
               for alias in f.metadata.get("aliases", []) if alias.startswith("--")}
    out, spelled = {}, {}
    for key, value in keywords.items():
        name = aliases.get(key, key)
        if name not in names:
            close = difflib.get_close_matches(key, names + list(aliases), n=3)
            hint = f"did you mean {' or '.join(close)}?" if close else f"the options are {', '.join(names)}"
            raise UserError(f"{entry}() got an unknown option {key!r}: {hint} (help(freezetune.{kind.__name__}) "
                            "says what each one does)")
        if name in out:
            raise UserError(f"{entry}() got both {spelled[name]} and {key}, two spellings of one option: pass one")
        out[name], spelled[name] = value, key
    return out


def _yaml_options(kind, name: str) -> dict:
    from .configs import load_yaml

    values = load_yaml(name, valid=[f.name for f in dataclasses.fields(kind)])
    return {key: value for key, value in values.items() if key not in ("config", "help")}


@contextlib.contextmanager
def cli_voice():
    """For the call: the `freezetune` logger's info lines on stderr, as the CLI prints them, unless the program
    configured that logger itself. Without them the Trainer would also print raw dicts instead of its bars
    (it shows bars only when freezetune's logger is at INFO)."""
    logger = logging.getLogger("freezetune")
    if logger.handlers or logger.level != logging.NOTSET or not is_main_process():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the root logger's handlers, if any, would print each line a second time
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
