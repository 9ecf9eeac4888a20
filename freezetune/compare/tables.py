"""The study's results as DataFrames: one row per run and epoch (results.csv), and per-strategy summaries."""

from __future__ import annotations

import pandas as pd

from freezetune.compare.grid import Run
from freezetune.compare.stats import mean_std

RUN_COLUMNS = ("trainable_params", "total_params", "train_seconds", "train_samples_per_second", "peak_memory_mb")


def results_frame(results: list[tuple[Run, dict]]) -> pd.DataFrame:
    """Per-epoch validation numbers, with each run's evaluation-split and cost numbers repeated on its rows."""
    rows = []
    for run, metrics in results:
        evaluation = metrics["evaluation"]
        per_run = {
            "evaluation_split": metrics["evaluation_split"],
            "evaluation_accuracy": evaluation["accuracy"],
            "evaluation_macro_f1": evaluation["macro_f1"],
            "evaluation_weighted_f1": evaluation["weighted_f1"],
            **{f"evaluation_f1[{name}]": c["f1"] for name, c in evaluation["per_class"].items()},
            **{column: metrics[column] for column in RUN_COLUMNS},
            "frozen_layers": run.strategy.frozen_layers,
            "freeze_embeddings": run.strategy.freeze_embeddings,
            "lr": metrics.get("lr"),
        }
        for epoch in metrics["epochs"]:
            rows.append({
                "strategy": run.strategy.name,
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
    """Per strategy (in grid order): mean and std over seeds of the evaluation numbers and costs."""
    rows = []
    for strategy, runs in per_run(frame).groupby("strategy", sort=False):
        row = {"strategy": strategy, "seeds": len(runs)}
        columns = {"accuracy": "evaluation_accuracy", "macro_f1": "evaluation_macro_f1",
                   **{f"f1[{n}]": f"evaluation_f1[{n}]" for n in label_names}, **{c: c for c in RUN_COLUMNS}}
        for name, column in columns.items():
            row[f"{name}_mean"], row[f"{name}_std"] = mean_std(runs[column])
        row["trainable_params"] = int(runs["trainable_params"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)
