"""The study's grid: strategy names, one run per strategy x seed, and running one run to its metrics.json."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from freezetune.errors import UserError
from freezetune.tuning import Strategy as Freezing

METRICS_FILE = "metrics.json"  # the same file `train` writes; its presence marks a finished run
VALID_FORMS = "full, freezeN (e.g. freeze6; embeddings stay trainable), freezeN+emb (embeddings frozen too), head, lstm, tfidf"
BASELINES = ("lstm", "tfidf")
_FREEZE = re.compile(r"freeze(\d+)(\+emb)?")


@dataclass(frozen=True)
class GridStrategy:
    name: str
    """Canonical name, used for run folders and reports (`freeze0` is `full`)."""
    freezing: Freezing | None = None
    """What a transformer run freezes; None for the baselines."""

    @property
    def frozen_layers(self) -> int | None:
        """Encoder layers frozen: 0 for full, N for freezeN, None for head (all) and the baselines (n/a)."""
        return self.freezing.frozen_layers if self.freezing else None


def parse_strategy(text: str) -> GridStrategy:
    name = text.strip().lower()
    if name in BASELINES:
        return GridStrategy(name)
    if name in ("full", "head"):
        freezing = Freezing(0 if name == "full" else None, name == "head")
    elif match := _FREEZE.fullmatch(name):
        freezing = Freezing(int(match[1]), bool(match[2]))
    else:
        raise UserError(f"unknown strategy {text!r}: valid forms are {VALID_FORMS}")
    return GridStrategy(freezing.name, freezing)


def parse_strategies(names: list[str]) -> list[GridStrategy]:
    """Parse all names (so a typo fails before any run) and drop duplicates such as freeze0 after full."""
    unique: dict[str, GridStrategy] = {}
    for name in names:
        strategy = parse_strategy(name)
        unique.setdefault(strategy.name, strategy)
    return list(unique.values())


@dataclass(frozen=True)
class Run:
    strategy: GridStrategy
    seed: int

    @property
    def name(self) -> str:
        return f"{self.strategy.name}-seed{self.seed}"

    def folder(self, output_dir: Path) -> Path:
        return output_dir / "runs" / self.name

    def finished(self, output_dir: Path) -> bool:
        return (self.folder(output_dir) / METRICS_FILE).is_file()


def grid(strategies: list[GridStrategy], seeds: list[int]) -> list[Run]:
    """Seed-major order: every strategy gets a first result early, and the ETA mixes cheap and slow runs."""
    return [Run(strategy, seed) for seed in seeds for strategy in strategies]


def execute(run: Run, splits, options, output_dir: Path) -> dict:
    """Run one strategy x seed on the shared splits; its folder gets metrics.json atomically, last."""
    folder = run.folder(output_dir)
    if run.strategy.freezing is not None:
        return _train_transformer(run, splits, options, folder)
    from freezetune.baselines import run_lstm, run_tfidf
    from freezetune.outputs import write_json_atomic

    if run.strategy.name == "tfidf":
        result = run_tfidf(splits, seed=run.seed)
    else:
        result = run_lstm(
            splits, seed=run.seed, epochs=options.epochs, batch_size=options.batch_size,
            eval_batch_size=options.eval_batch_size, lr=options.lstm_lr, max_length=options.max_length,
            metric=options.metric,
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / METRICS_FILE, result)
    return result


def _train_transformer(run: Run, splits, options, folder: Path) -> dict:
    """Exactly the `freezetune train` code path, with the study's shared splits."""
    from freezetune.training import train

    return train(train_config(run, options, folder), splits)


def train_config(run: Run, options, folder: Path):
    """The TrainConfig of a transformer run (also what `compare` validates before any work)."""
    from freezetune.config import TrainConfig

    freezing = run.strategy.freezing
    return TrainConfig(
        output_dir=str(folder), model=options.model, data=options.data, text_column=options.text_column,
        label_column=options.label_column,
        freeze="head" if freezing.frozen_layers is None else str(freezing.frozen_layers),
        freeze_embeddings=freezing.freeze_embeddings, epochs=options.epochs, batch_size=options.batch_size,
        eval_batch_size=options.eval_batch_size, lr=options.lr, max_length=options.max_length, seed=run.seed,
        metric=options.metric, validation_fraction=options.validation_fraction, precision=options.precision,
        class_weights=options.class_weights,
        # An unfinished run's folder (no metrics.json) holds nothing worth keeping.
        overwrite=True,
    )
