"""What a baseline run returns: the same dict shape as `freezetune.train.train` (its metrics.json).

Keeping one shape lets `freezetune compare` tabulate, test and plot every strategy with the same code.
"""

from __future__ import annotations

from freezetune.metrics import classification_report


def epoch_row(epoch: int, train_loss: float | None, eval_loss: float | None, validation: dict) -> dict:
    """One row of the per-epoch table (validation numbers after that epoch)."""
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "eval_loss": eval_loss,
        "accuracy": validation["accuracy"],
        "macro_f1": validation["macro_f1"],
        "weighted_f1": validation["weighted_f1"],
    }


def run_result(
    splits,
    *,
    strategy: str,
    selection_metric: str | None,
    epochs: list[dict],
    best_epoch: int,
    validation: dict,
    evaluation_predictions,
    trainable_params: int,
    total_params: int,
    train_seconds: float,
    samples_seen: int,
    peak_memory_mb: float,
) -> dict:
    """Assemble the metrics dict; the evaluation report is computed here so it is scored like `train`."""
    split_name, frame = splits.evaluation_split
    predictions = [int(p) for p in evaluation_predictions]
    return {
        "epochs": epochs,
        "best_epoch": best_epoch,
        "selection_metric": selection_metric,
        "validation": validation,
        "evaluation_split": split_name,
        "evaluation": classification_report(frame["label"].tolist(), predictions, splits.label_names),
        "evaluation_predictions": predictions,
        "label_names": list(splits.label_names),
        "strategy": strategy,
        "trainable_params": int(trainable_params),
        "total_params": int(total_params),
        "train_seconds": float(train_seconds),
        "train_samples_per_second": samples_seen / train_seconds if train_seconds > 0 else 0.0,
        "peak_memory_mb": float(peak_memory_mb),
        "data_notes": list(splits.notes),
    }
