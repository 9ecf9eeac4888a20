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
- `freezetune.study(options=None, **options)`: a study, run by `freezetune.compare.compare` (`freezetune.compare`
  itself is the package). `options` is a `CompareOptions` or None; `config=` names a YAML file as `--config` does.
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

from .config import TrainConfig, build_options
from .errors import UserError
from .logs import cli_voice


def train(config: TrainConfig | str | None = None, splits=None, **options):
    """Fine-tune one model with one strategy (see the module docstring); returns metrics.json's content."""
    from .display import RunMetrics
    from .training import train as train_run

    config = build_options(TrainConfig, config, options, "train")
    if not config.output_dir:
        raise UserError("train needs output_dir= (--output-dir): the folder the model and metrics.json are written to")
    with cli_voice():
        return RunMetrics(train_run(config, splits))


def study(options=None, **keywords):
    """A study (see the module docstring): `freezetune.compare.compare`, its folder returned as a
    `display.StudyFolder`."""
    from .compare import compare
    from .display import StudyFolder

    return StudyFolder(compare(options, **keywords))
