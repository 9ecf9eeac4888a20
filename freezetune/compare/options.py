"""The options of `freezetune compare`: every training option (inherited from `TrainOptions`) plus the study's own.

The CLI flags and the YAML config files are generated from this dataclass (see cli.parse_dataclass): defaults
< a --config file < flags.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from freezetune.compare.executors import check_executor_options
from freezetune.compare.grid import parse_recipe
from freezetune.config import DEFAULT_MODEL, WHERE_AND_HOW, TrainOptions, option, seed_value
from freezetune.errors import UserError

DEFAULT_STRATEGIES = ["full", "freeze6", "head", "lstm", "tfidf"]
# Options that do not change what a run computes; every other option must match to --resume a study.
# Recipes name their runs (like strategies), so a study resumed with more of them keeps the finished ones.
NOT_RUN_DEFINING = WHERE_AND_HOW | {"strategies", "recipes", "seeds", "executor", "ray_address", "ray_cpus_per_run",
                                    "ray_gpus_per_run"}
Executor = Literal["serial", "ray"]


@dataclass(kw_only=True)
class CompareOptions(TrainOptions):
    """Everything that defines a tuning study. Defaults are the offline default study."""

    output_dir: str = option("", "folder of the study (runs/, report.md, report.html, ...)", required=True,
                             aliases=["-o"])
    config: str | None = option(None, "YAML file, or packaged config name (compare --list-configs), of options "
                                "(keys are the option names); flags given on the command line override it")
    models: list[str] = option([], "models to compare (space- or comma-separated hub ids, local folders or builtin: "
                               "names): every strategy runs on each on the same splits (runs/MODEL/STRATEGY-seedN), "
                               "the baselines once, and the report compares the models; replaces --model (one model "
                               "is the same study as --model)")
    strategies: list[str] = option(list(DEFAULT_STRATEGIES), "strategies to compare (space- or comma-separated): any "
                                   "training strategy (full, freezeN, freezeN+emb, head, topN, bitfit, lora, "
                                   "freezeN+lora, llrd, gradual, ...), the baselines lstm and tfidf, and sweep[:0,2,...] "
                                   "(freezeN at each point)")
    recipes: list[str] = option([], "imbalance recipes to cross with every transformer strategy: a --loss spec with an "
                                "optional +balanced (class weights), +rdrop=ALPHA (R-Drop) and +ema=DECAY (weight "
                                "average), e.g. ce ce+balanced focal ce+balanced+rdrop=3; each recipe sets the loss "
                                "and class weights of its runs (R-Drop and the average where it says so), named "
                                "STRATEGY@RECIPE; default: none, every run uses --loss, --class-weights, --rdrop and "
                                "--ema")
    seeds: list[str] = option(["0", "1", "2"], "seeds: one run per strategy and seed (space- or comma-separated)")
    lstm_lr: float = option(2e-3, "learning rate of the LSTM baseline (trained from scratch, it wants a larger one)")
    lr_grid: str | None = option(None, "choose each strategy's learning rate on validation first: `auto` (each "
                                 "strategy family's default grid) or a comma-separated list; seed 0 runs at every "
                                 "candidate, the best by validation runs all seeds")
    resume: bool = option(False, "keep the finished runs of an existing --output-dir and run the rest")
    overwrite: bool = option(False, "replace the runs of an existing --output-dir")
    # Where the runs run (see compare/executors.py); none of these changes a run's result.
    executor: Executor = option("serial", "serial: the runs one after another in this process; ray: each run a Ray "
                                "task with its own CPUs/GPUs, on a local Ray or on the cluster at --ray-address")
    ray_address: str | None = option(None, "with --executor ray: a running Ray cluster to use (auto, HOST:6379 or "
                                     "ray://HOST:10001); default: start a Ray on this machine")
    ray_cpus_per_run: float = option(1.0, "with --executor ray: CPUs each run asks for (and its number of threads)")
    ray_gpus_per_run: float = option(0.0, "with --executor ray: GPUs each run asks for (0.5: two runs share a GPU)")

    def __post_init__(self):
        # YAML 1.1 reads `5e-5` as a string, so numbers are coerced here rather than trusted.
        for name, kind in (("epochs", int), ("batch_size", int), ("eval_batch_size", int), ("max_length", int),
                           ("lstm_lr", float), ("validation_fraction", float), ("ray_cpus_per_run", float),
                           ("ray_gpus_per_run", float)):
            try:
                setattr(self, name, kind(getattr(self, name)))
            except (TypeError, ValueError):
                raise UserError(f"{name} must be a number, got {getattr(self, name)!r}") from None
        super().__post_init__()
        if not self.output_dir:
            raise UserError("compare needs --output-dir (or output_dir in the --config file)")
        self._take_models()
        self.strategies = _as_list(self.strategies)
        self.recipes = _as_list(self.recipes or [])
        for recipe in self.recipes:
            parse_recipe(recipe)  # a bad recipe fails here, before any run
        self.seeds = _seeds(self.seeds)
        if not self.strategies or not self.seeds:
            raise UserError("compare needs at least one strategy and one seed")
        if not (math.isfinite(self.lstm_lr) and self.lstm_lr > 0):
            raise UserError(f"--lstm-lr must be a positive number, got {self.lstm_lr}")
        if self.lr_grid is not None:
            self.lr_grid = _lr_grid(self.lr_grid)
        if self.lr == "auto" and self.lr_grid is None:
            self.lr_grid = "auto"  # `--lr auto` means the same in a study
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other: pass one of them")
        check_executor_options(self.executor, self.ray_address, self.ray_cpus_per_run, self.ray_gpus_per_run)

    def _take_models(self) -> None:
        """--models replaces --model: `model` becomes the first of them (what a one-model study reads), and `models`
        stays empty unless there are several, so `--models A` is the study `--model A` is, folders and record alike."""
        self.models = _as_list(self.models or [])
        if not self.models:
            return
        if self.model not in (DEFAULT_MODEL, *self.models):
            raise UserError(f"--model {self.model} and --models {','.join(self.models)} name different models: pass "
                            "--models alone")
        self.model, self.models = self.models[0], self.models if len(self.models) > 1 else []

    @property
    def input_paths(self) -> dict[str, str | list[str]]:
        return {**super().input_paths, "--models": self.models}

    def run_defining(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in NOT_RUN_DEFINING}


def _as_list(value, keep_duplicates: bool = False) -> list[str]:
    """Accept `a,b c` (CLI), YAML lists and single values alike; drop duplicates (unless `keep_duplicates`), keep
    order."""
    items = value if isinstance(value, (list, tuple)) else [value]
    parts = [p.strip() for item in items for p in str(item).split(",")]
    parts = [p for p in parts if p]
    return parts if keep_duplicates else list(dict.fromkeys(parts))


def _seeds(value) -> list[int]:
    """--seeds as distinct integer seeds: a seed given twice would merge two runs into one without a word."""
    seeds = [seed_value(s, "--seeds") for s in _as_list(value, keep_duplicates=True)]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds names {', '.join(map(str, repeated))} more than once ({', '.join(map(str, seeds))}): "
                        "give each seed once")
    return seeds


def _lr_grid(value) -> str:
    """`auto`, or a comma-separated list of positive learning rates (kept as text: it is recorded as given)."""
    text = ",".join(_as_list(value))
    if text.lower() == "auto":
        return "auto"
    try:
        rates = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--lr-grid must be auto or comma-separated learning rates, got {value!r}") from None
    if not rates or not all(math.isfinite(r) and r > 0 for r in rates):
        raise UserError(f"--lr-grid rates must be positive numbers, got {value!r}")
    return ",".join(f"{r:g}" for r in rates)
