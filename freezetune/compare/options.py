"""The options of `freezetune compare`: one dataclass, filled from defaults < a YAML file < CLI flags."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from freezetune.config import CLASS_WEIGHTS, DEFAULT_DATA, DEFAULT_MODEL, PRECISIONS
from freezetune.errors import UserError
from freezetune.metrics import SELECTION_METRICS

DEFAULT_STRATEGIES = ["full", "freeze6", "head", "lstm", "tfidf"]

# Options that change what a run computes: resuming with different values would mix incomparable runs.
RUN_DEFINING = (
    "model", "data", "text_column", "label_column", "epochs", "batch_size", "lr", "max_length",
    "metric", "validation_fraction", "lstm_lr", "precision", "class_weights",
)


@dataclass
class CompareOptions:
    """Everything that defines a freezing study. Defaults are the offline default study."""

    output_dir: str | None = None
    strategies: list[str] = field(default_factory=lambda: list(DEFAULT_STRATEGIES))
    """full, freezeN, freezeN+emb, head, lstm, tfidf."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    model: str = DEFAULT_MODEL
    data: str = DEFAULT_DATA
    text_column: str = "sentence"
    label_column: str = "label"
    epochs: int = 3
    """Epochs of every transformer and LSTM run."""
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 5e-5
    """Learning rate of the transformer runs."""
    lstm_lr: float = 2e-3
    """The LSTM trains from scratch and wants a much larger rate than fine-tuning."""
    max_length: int = 30
    metric: str = "accuracy"
    """Selects each run's best epoch and the best strategy (`accuracy` or `macro_f1`)."""
    validation_fraction: float = 0.1
    precision: str = "auto"
    """Matmul precision of the transformer runs (see TrainConfig.precision)."""
    class_weights: str = "none"
    """`balanced`: class-weighted loss in the transformer runs (see TrainConfig.class_weights)."""
    resume: bool = False
    overwrite: bool = False
    config: str | None = None
    """The YAML file the options came from (recorded, not re-read)."""

    def __post_init__(self):
        # YAML reads `5e-5` as a string (YAML 1.1), so numbers are coerced here rather than trusted.
        for name, kind in (("epochs", int), ("batch_size", int), ("eval_batch_size", int), ("max_length", int),
                           ("lr", float), ("lstm_lr", float), ("validation_fraction", float)):
            try:
                setattr(self, name, kind(getattr(self, name)))
            except (TypeError, ValueError):
                raise UserError(f"{name} must be a number, got {getattr(self, name)!r}") from None
        self.strategies = _as_list(self.strategies)
        try:
            self.seeds = [int(s) for s in _as_list(self.seeds)]
        except ValueError:
            raise UserError(f"seeds must be integers, e.g. 0,1,2 (got {self.seeds!r})") from None
        if not self.strategies or not self.seeds:
            raise UserError("compare needs at least one strategy and one seed")
        if self.metric not in SELECTION_METRICS:
            raise UserError(f"metric {self.metric!r} is not valid: use one of {', '.join(SELECTION_METRICS)}")
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other: pass one of them")

    def run_defining(self) -> dict:
        return {name: getattr(self, name) for name in RUN_DEFINING}


def _as_list(value) -> list:
    """Accept `a,b,c` strings (CLI, YAML) and YAML lists alike; drop duplicates, keep order."""
    items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else [value]
    return list(dict.fromkeys(str(v).strip() for v in items if str(v).strip()))


FIELDS = {f.name: f for f in dataclasses.fields(CompareOptions)}


def load_yaml(path: str) -> dict:
    """A YAML mapping of option names (`batch_size` or `batch-size`) to values."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must be a mapping of option names to values")
    options = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(options) - set(FIELDS) - {"config"})
    if unknown:
        raise UserError(f"config file {path}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(FIELDS)}")
    return options


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `compare` flags. Flags default to "not given" so that a --config file can fill them."""
    add = lambda *a, **k: parser.add_argument(*a, default=argparse.SUPPRESS, **k)  # noqa: E731
    add("--config", metavar="FILE.yaml", help="YAML file of options (keys = option names); flags override it")
    add("--strategies", help=f"comma-separated: full, freezeN, freezeN+emb, head, lstm, tfidf (default {','.join(DEFAULT_STRATEGIES)})")
    add("--seeds", help="comma-separated seeds, one run per strategy and seed (default 0,1,2)")
    add("--model", help=f"hub id, local folder or builtin:NAME (default {DEFAULT_MODEL})")
    add("--data", help=f"data spec as for `train` (default {DEFAULT_DATA})")
    add("--text-column", dest="text_column")
    add("--label-column", dest="label_column")
    add("--epochs", type=int, help="epochs of each transformer and LSTM run (default 3)")
    add("--batch-size", dest="batch_size", type=int, help="default 16")
    add("--eval-batch-size", dest="eval_batch_size", type=int, help="default 64")
    add("--lr", type=float, help="transformer learning rate (default 5e-5)")
    add("--lstm-lr", dest="lstm_lr", type=float, help="LSTM learning rate (default 2e-3)")
    add("--max-length", dest="max_length", type=int, help="tokens (characters for the LSTM) per text (default 30)")
    add("--metric", choices=SELECTION_METRICS, help="picks best epochs and the best strategy (default accuracy)")
    add("--validation-fraction", dest="validation_fraction", type=float, help="default 0.1")
    add("--class-weights", dest="class_weights", choices=CLASS_WEIGHTS, help="transformer runs' loss weights (default none)")
    add("--precision", choices=PRECISIONS, help="of the transformer runs (default auto: bf16 where native)")
    add("--output-dir", "-o", dest="output_dir", help="folder of the study (runs/, report.md, report.html, ...)")
    add("--resume", action="store_true", help="keep finished runs of an existing --output-dir, run the rest")
    add("--overwrite", action="store_true", help="replace the runs of an existing --output-dir")


def options_from_args(args: argparse.Namespace) -> CompareOptions:
    """Defaults, then the --config file, then the flags actually given."""
    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    values = load_yaml(given["config"]) if given.get("config") else {}
    values.update(given)
    return CompareOptions(**values)
