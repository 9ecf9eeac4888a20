"""Choosing the learning rate on validation, and `train`, the entry that does it for `--lr auto`.

A strategy at someone else's learning rate is not a fair comparison (a linear probe at a fine-tuning rate
never leaves the majority class), so each strategy family names a grid (`Strategy.lr_grid`). `search` is the one
rule both users of a grid share: each candidate is a whole run with the same seed, the best by the validation
metric wins. `train --lr auto` runs its candidates here, one after another, and keeps the best as OUT;
`compare --lr-grid` runs them through its executor and hands `search` their finished results. Nothing here looks
at the test split.

This module sits above run.py: it imports `train_one`, and run.py never imports it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from ..data import Splits, load_splits
from ..layout import METRICS_FILE
from ..outputs import check_not_input, check_output_dir, write_json_atomic
from ..strategies import parse_strategy
from .distributed import is_main_process
from .run import train_one
from .tracking import candidate_run_name

log = logging.getLogger("freezetune")


@dataclass(frozen=True)
class Trial:
    """One candidate learning rate and the metrics.json of its run."""

    lr: float
    metrics: dict

    def score(self, metric: str) -> float:
        return self.metrics["validation"][metric]


@dataclass(frozen=True)
class Search:
    """The candidates of one search, in the order they were tried, and the validation metric that ranks them."""

    trials: tuple[Trial, ...]
    metric: str

    @property
    def best(self) -> Trial:
        """The best validation `metric`; ties go to the smaller learning rate (the safer one)."""
        return max(self.trials, key=lambda t: (t.score(self.metric), -t.lr))

    def record(self) -> list[dict]:
        """What metrics.json records of the search (`lr_search`): each candidate's lr, score and training time."""
        return [{"lr": t.lr, f"validation_{self.metric}": t.score(self.metric),
                 "train_seconds": t.metrics["train_seconds"]} for t in self.trials]

    def selection(self, seed: int) -> dict:
        """A study's record of one strategy's search (lr_selection.json): the choice, the candidates' scores, and
        what the search cost beyond the chosen run (which is also the study's run at `seed`)."""
        best = self.best
        return {"chosen_lr": best.lr, "seed": seed,
                "candidates": {f"{t.lr:g}": t.score(self.metric) for t in self.trials},
                "extra_train_seconds": sum(t.metrics["train_seconds"] for t in self.trials if t is not best)}


def search(lrs: Sequence[float], metric: str, run: Callable[[float], dict], name: str = "") -> Search:
    """Each learning rate of `lrs` through `run` (lr -> the metrics.json of a run at that lr), ranked by validation
    `metric`. `run` trains (train --lr auto) or reads a run already finished (compare, whose executor ran them);
    `name` (the strategy) is for the log line."""
    result = Search(tuple(Trial(lr, run(lr)) for lr in lrs), metric)
    log.info("learning-rate search: %s: lr %g chosen by validation %s", name, result.best.lr, metric)
    return result


def train(config: TrainConfig, splits: Splits | None = None) -> dict:
    """Fine-tune `config.model` on `config.data` with `config.strategy`; write `config.output_dir`.

    Returns the contents of metrics.json. `splits` may be passed to reuse data already loaded (compare does).
    With `lr="auto"` the learning rate is chosen on validation first, from the strategy's grid; otherwise this is
    `run.train_one`. Under torchrun or accelerate every process trains; only the main one writes the output folder.
    """
    if config.lr != "auto":
        return train_one(config, splits)
    check_not_input(config.output_dir, config.input_paths)  # before the search: it replaces OUT at its end
    out = check_output_dir(config.output_dir, config.overwrite)
    if splits is None:
        splits = load_splits(config.data, config.text_column, config.label_column, config.seed, config.validation_fraction)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.lr-search-", dir=out.parent))
    try:
        def candidate(lr: float) -> dict:
            log.info("learning-rate search: %s at lr %g", config.strategy, lr)
            return train_one(dataclasses.replace(config, lr=lr, output_dir=str(scratch / f"lr{lr:g}"), overwrite=False,
                                                 run_name=candidate_run_name(config, lr)), splits)

        result = search(parse_strategy(config.strategy).lr_grid, config.metric, candidate, config.strategy)
        metrics = {**result.best.metrics, "lr_search": result.record()}
        if is_main_process():  # under torchrun / accelerate the others wrote no candidate folder
            best_folder = scratch / f"lr{result.best.lr:g}"
            write_json_atomic(best_folder / METRICS_FILE, metrics)
            if out.exists():  # --overwrite; checked again: the folder may have changed during the search
                check_output_dir(out, config.overwrite)
                shutil.rmtree(out)
            os.replace(best_folder, out)
        return metrics
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
