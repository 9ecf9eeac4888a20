"""The study's results as DataFrames: one row per run and epoch (results.csv), and per-strategy summaries.

A row of the study is a strategy, or with several models (`--models`) a (model, strategy) pair: the frames then
have a `model` column (the model's folder under runs/; empty for the baselines, which have no model) and every
summary is per (model, strategy), see `keys`.

Beside the mean ± std over seeds: each strategy's seed ensemble (the seeds' probabilities averaged), each
decision rule's numbers from the same runs (`details.decision.alternatives`), calibration before and after
temperature scaling, and the class counts of every split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from freezetune.compare.grid import Run
from freezetune.compare.stats import mean_std
from freezetune.inference.ensemble import average_probabilities
from freezetune.metrics import summary_metrics

RUN_COLUMNS = ("trainable_params", "total_params", "train_seconds", "train_samples_per_second", "peak_memory_mb")
PER_CLASS = ("precision", "recall", "f1")
TRADEOFF_TOLERANCE = 0.01
"""A recipe counts as accurate enough when its mean accuracy is within 1 point of the best one."""


def keys(frame: pd.DataFrame) -> list[str]:
    """The columns that name a row of the study: its strategy, after its model in a multi-model study."""
    return ["model", "strategy"] if "model" in frame.columns else ["strategy"]


def row_key(run: Run, several: bool = True) -> tuple:
    """What `keys` holds for `run`: (strategy,), or in a multi-model study (`several`) (model, strategy), model None
    for a baseline."""
    return (None if run.model is None else run.model.slug, run.strategy.name) if several else (run.strategy.name,)


def multi_model(results: list[tuple[Run, dict]]) -> bool:
    """Whether the study compares several models (its rows then have a model)."""
    return any(run.model is not None for run, _ in results)


def _key_columns(run: Run, several: bool) -> dict:
    """The `keys` columns of `run`'s rows: {strategy}, or {model, strategy} in a multi-model study (`several`)."""
    return dict(zip(["model", "strategy"] if several else ["strategy"], row_key(run, several)))


def _groups(frame: pd.DataFrame):
    """(the row's `keys` values as a dict, its rows) for each row of the study, in grid order (baselines kept)."""
    names = keys(frame)
    for values, rows in frame.groupby(names, sort=False, dropna=False):
        yield dict(zip(names, values)), rows


def results_frame(results: list[tuple[Run, dict]]) -> pd.DataFrame:
    """Per-epoch validation numbers, with each run's evaluation-split and cost numbers repeated on its rows."""
    rows = []
    several = multi_model(results)
    for run, metrics in results:
        evaluation = metrics["evaluation"]
        per_run = {
            "evaluation_split": metrics["evaluation_split"],
            "evaluation_accuracy": evaluation["accuracy"],
            "evaluation_macro_f1": evaluation["macro_f1"],
            "evaluation_weighted_f1": evaluation["weighted_f1"],
            **{f"evaluation_{m}[{name}]": c[m] for name, c in evaluation["per_class"].items() for m in PER_CLASS},
            **{column: metrics[column] for column in RUN_COLUMNS},
            "frozen_layers": run.strategy.frozen_layers,
            "freeze_embeddings": run.strategy.freeze_embeddings,
            "lr": metrics.get("lr"),
        }
        for epoch in metrics["epochs"]:
            rows.append({
                **_key_columns(run, several),
                "seed": run.seed,
                "epoch": epoch["epoch"],
                "best_epoch": epoch["epoch"] == metrics["best_epoch"],
                "train_loss": epoch["train_loss"],
                "validation_loss": epoch["eval_loss"],
                "validation_accuracy": epoch["accuracy"],
                "validation_macro_f1": epoch["macro_f1"],
                "validation_weighted_f1": epoch["weighted_f1"],
                **per_run,
            })
    frame = pd.DataFrame(rows)
    # pandas makes an all-None column object-typed; numbers should stay numbers in the CSV.
    for column in ("train_loss", "validation_loss"):
        frame[column] = pd.to_numeric(frame[column])
    return frame


def per_run(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run (its best epoch)."""
    return frame[frame["best_epoch"]].reset_index(drop=True)


def summary_frame(frame: pd.DataFrame, label_names: list[str]) -> pd.DataFrame:
    """Per row (strategy, or model and strategy; in grid order): mean and std over seeds of the evaluation numbers
    (per class too) and costs."""
    rows = []
    for key, runs in _groups(per_run(frame)):
        row = {**key, "seeds": len(runs)}
        columns = {"accuracy": "evaluation_accuracy", "macro_f1": "evaluation_macro_f1",
                   **{f"{m}[{n}]": f"evaluation_{m}[{n}]" for n in label_names for m in PER_CLASS},
                   **{c: c for c in RUN_COLUMNS}}
        for name, column in columns.items():
            row[f"{name}_mean"], row[f"{name}_std"] = mean_std(runs[column])
        row["trainable_params"] = int(runs["trainable_params"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def ensemble_frame(results: list[tuple[Run, dict]], labels) -> pd.DataFrame:
    """Per row (strategy, or model and strategy): accuracy and macro-F1 of the mean of its seeds' evaluation
    probabilities.

    That is what a user gets by keeping every seed's model (`freezetune predict` with several --model). A
    strategy with a run that recorded no probabilities (a metrics.json from before they were recorded) gets
    NaN rather than an ensemble of some of its seeds.
    """
    members: dict[tuple, tuple[dict, list]] = {}
    several = multi_model(results)
    for run, metrics in results:
        key = row_key(run, several)
        members.setdefault(key, (_key_columns(run, several), []))[1].append(metrics.get("evaluation_probabilities"))
    rows = []
    for key, probabilities in members.values():
        row = {**key, "ensemble_members": len(probabilities),
               "ensemble_accuracy": np.nan, "ensemble_macro_f1": np.nan}
        if all(p is not None for p in probabilities):
            predictions = average_probabilities([np.asarray(p) for p in probabilities]).argmax(axis=1)
            scores = summary_metrics(labels, predictions)
            row.update(ensemble_accuracy=scores["accuracy"], ensemble_macro_f1=scores["macro_f1"])
        rows.append(row)
    return pd.DataFrame(rows)


def _reports_by_rule(metrics: dict) -> dict[str, tuple[dict, bool]]:
    """A run's evaluation report under each decision rule it recorded, and whether it is the rule it serves.

    Baselines (and runs from before alternatives were recorded) have one: their own, by argmax unless stated.
    """
    decision = metrics.get("details", {}).get("decision", {})
    served = decision.get("rule", "argmax")
    alternatives = decision.get("alternatives") or {served: metrics["evaluation"]}
    return {rule: (report, rule == served) for rule, report in alternatives.items()}


def recipes_frame(results: list[tuple[Run, dict]]) -> pd.DataFrame:
    """One row per strategy and decision rule (from the same runs): mean ± std of accuracy and macro-F1.

    `served` marks the rule the saved models apply (the study's --decision; argmax for baselines).
    """
    scores: dict[tuple, dict] = {}
    several = multi_model(results)
    for run, metrics in results:
        for rule, (report, served) in _reports_by_rule(metrics).items():
            cell = scores.setdefault((*row_key(run, several), rule), {"key": _key_columns(run, several), "rule": rule,
                                                             "served": served, "accuracy": [], "macro_f1": []})
            cell["accuracy"].append(report["accuracy"])
            cell["macro_f1"].append(report["macro_f1"])
    rows = []
    for cell in scores.values():
        row = {**cell["key"], "decision": cell["rule"], "served": cell["served"], "seeds": len(cell["accuracy"])}
        for metric in ("accuracy", "macro_f1"):
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(cell[metric])
        rows.append(row)
    return pd.DataFrame(rows)


def best_tradeoff(recipes: pd.DataFrame, tolerance: float = TRADEOFF_TOLERANCE) -> tuple[pd.Series, pd.Series]:
    """(the recipe with the best mean accuracy, the best mean macro-F1 among those within `tolerance` of it).

    Ties go to the earlier row (grid order). The 1e-12 keeps a recipe exactly `tolerance` below the best
    in, whatever the float rounding of the subtraction.
    """
    most_accurate = recipes.loc[recipes["accuracy_mean"].idxmax()]
    close = recipes[recipes["accuracy_mean"] >= most_accurate["accuracy_mean"] - tolerance - 1e-12]
    return most_accurate, close.loc[close["macro_f1_mean"].idxmax()]


def calibration_frame(results: list[tuple[Run, dict]]) -> pd.DataFrame:
    """Per strategy with calibration numbers (transformer runs): on the evaluation split, the mean over seeds
    of the temperature and of ECE and Brier score before post-hoc fitting and as served (after the temperature and,
    with a decision rule, its offsets)."""
    rows = []
    several = multi_model(results)
    for run, metrics in results:
        calibration = metrics.get("details", {}).get("calibration", {})
        split = calibration.get(metrics["evaluation_split"])
        if split is None:
            continue
        stages = {"before": split["before"], "served": split["served"]}
        rows.append({**_key_columns(run, several), "temperature": calibration["temperature"],
                     **{f"{m}_{stage}": values[m] for stage, values in stages.items() for m in ("ece", "brier")}})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    return pd.DataFrame([{**key, **group.drop(columns=keys(frame)).mean(), "seeds": len(group)}
                         for key, group in _groups(frame)])


def class_counts_frame(splits) -> pd.DataFrame:
    """Examples per class (rows, in label order) and split (columns train, validation[, test])."""
    frames = {"train": splits.train, "validation": splits.validation}
    if splits.test is not None:
        frames["test"] = splits.test
    n_classes = len(splits.label_names)
    return pd.DataFrame({name: np.bincount(frame["label"], minlength=n_classes) for name, frame in frames.items()},
                        index=pd.Index(splits.label_names, name="class"))
