"""Classification metrics, all from scikit-learn so every strategy is scored by the same code."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

# The metrics a run can be selected on (`--metric`).
SELECTION_METRICS = ("accuracy", "macro_f1")


def summary_metrics(labels, preds) -> dict[str, float]:
    """Accuracy, macro-F1 and weighted-F1 of integer predictions."""
    return {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, preds, average="weighted", zero_division=0)),
    }


def classification_report(labels, preds, label_names: list[str]) -> dict:
    """Summary metrics plus per-class precision/recall/F1/support and the confusion matrix.

    Rows of the confusion matrix are true labels, columns predictions, both in `label_names` order.
    """
    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=ids, zero_division=0
    )
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(label_names)
    }
    return {
        **summary_metrics(labels, preds),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, preds, labels=ids).tolist(),
    }


def format_report(report: dict, label_names: list[str]) -> str:
    """A plain-text rendering of `classification_report` for the terminal."""
    lines = [
        f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
        f"weighted-F1 {report['weighted_f1']:.4f}",
        "",
        f"{'class':<16}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for name in label_names:
        c = report["per_class"][name]
        lines.append(f"{name:<16}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}{c['support']:>10d}")
    width = max(7, *(len(n) for n in label_names))
    header = " " * (width + 1) + " ".join(f"{n[:width]:>{width}}" for n in label_names)
    lines += ["", "confusion matrix (rows = true, columns = predicted)", header]
    for name, row in zip(label_names, report["confusion_matrix"]):
        lines.append(f"{name[:width]:<{width}} " + " ".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)


def predictions_from_logits(logits) -> np.ndarray:
    return np.asarray(logits).argmax(axis=-1)
