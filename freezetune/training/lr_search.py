"""`--lr auto`: choose the learning rate on validation, from the strategy's default grid.

A strategy at someone else's learning rate is not a fair comparison (a linear probe at a fine-tuning rate
never leaves the majority class), so each strategy family names a grid (`Strategy.lr_grid`). Each candidate
is a whole run with the same seed; the best by the validation metric is kept as the result, the others
are deleted. Nothing here looks at the test split.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path

from ..config import TrainConfig
from ..data import Splits, load_splits
from ..outputs import check_output_dir, write_json_atomic
from ..strategies import parse_strategy
from .distributed import is_main_process

log = logging.getLogger("freezetune")


def default_grid(strategy: str) -> tuple[float, ...]:
    return parse_strategy(strategy).lr_grid


def best_by_validation(trials: list[dict], metric: str) -> dict:
    """The trial with the best validation `metric`; ties go to the smaller learning rate (the safer one)."""
    return max(trials, key=lambda t: (t["validation"][metric], -t["lr"]))


def train_with_lr_search(config: TrainConfig, splits: Splits | None = None, grid: tuple[float, ...] | None = None) -> dict:
    """Train at each learning rate of `grid` (default: the strategy's), keep the best run as `config.output_dir`."""
    from .run import METRICS_FILE, train

    out = check_output_dir(config.output_dir, config.overwrite)
    grid = tuple(grid or default_grid(config.strategy))
    if splits is None:
        splits = load_splits(config.data, config.text_column, config.label_column, config.seed, config.validation_fraction)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.lr-search-", dir=out.parent))
    try:
        trials = []
        for lr in grid:
            log.info("learning-rate search: %s at lr %g", config.strategy, lr)
            folder = scratch / f"lr{lr:g}"
            metrics = train(dataclasses.replace(config, lr=lr, output_dir=str(folder), overwrite=False), splits)
            trials.append({"lr": lr, "folder": folder, "metrics": metrics, "validation": metrics["validation"],
                           "train_seconds": metrics["train_seconds"]})
        best = best_by_validation(trials, config.metric)
        metrics = {**best["metrics"], "lr_search": _search_record(trials, config.metric)}
        log.info("learning-rate search: chose %g by validation %s", best["lr"], config.metric)
        if is_main_process():  # under torchrun / accelerate the others wrote no candidate folder
            write_json_atomic(best["folder"] / METRICS_FILE, metrics)
            if out.exists():  # --overwrite; checked again: the folder may have changed during the search
                check_output_dir(out, config.overwrite)
                shutil.rmtree(out)
            os.replace(best["folder"], out)
        return metrics
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _search_record(trials: list[dict], metric: str) -> list[dict]:
    """What metrics.json records of the search: each candidate's lr, validation score and training time."""
    return [{"lr": t["lr"], f"validation_{metric}": t["validation"][metric], "train_seconds": t["train_seconds"]}
            for t in trials]
