"""A post-hoc decision rule: per-class logit offsets fitted on the validation split (`--decision macro_f1`).

Argmax of the logits maximises accuracy when the probabilities are right, not macro-F1: a rare class is
usually best predicted somewhat more often than its probability says. Adding a per-class offset to the
logits before the argmax moves each boundary; the offsets are chosen on validation (never on test) and then
folded into the classifier's bias (`posthoc.fold.fold_into_classifier`), so every prediction path applies them.

Only differences between offsets matter, so class 0's is fixed at 0. The search is coordinate ascent over a
grid, deterministic, starting from zero offsets and keeping the current value unless another is strictly
better, with ties going to the offset nearest 0: the fitted split's metric is never below argmax's.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

from ..choices import Decision
from ..errors import UserError
from ..metrics import classification_report

DECISIONS: tuple[str, ...] = get_args(Decision)
OffsetMetric = Literal["macro_f1", "accuracy"]

# Offsets in logit units. Fit them on temperature-scaled logits (z / T), whose differences are log-odds:
# +-4 moves a boundary by odds of e^4 ~ 55, and a 0.05 step is finer than a small validation split can resolve.
OFFSET_GRID = np.round(np.arange(-4.0, 4.0 + 1e-9, 0.05), 2)
MAX_ROUNDS = 10


def check_decision(decision: str) -> None:
    if decision not in DECISIONS:
        raise UserError(f"--decision {decision!r} is not valid: use one of {', '.join(DECISIONS)}")


def decision_offsets(decision: str, logits, labels) -> np.ndarray:
    """The offsets for a `--decision` choice: zeros for `argmax`, else fitted to that metric on (logits, labels)."""
    check_decision(decision)
    logits = np.asarray(logits, dtype=np.float64)
    if decision == "argmax":
        return np.zeros(logits.shape[1])
    return fit_logit_offsets(logits, labels, metric=decision)


def reports_by_rule(validation: tuple, evaluation: tuple, label_names: list[str], served: tuple[str, dict]) -> dict[str, dict]:
    """The evaluation split's classification report under every decision rule, from one training.

    So a user sees what the rule changes without training twice. `validation` and `evaluation` are
    (temperature-scaled logits, labels) pairs; each other rule's offsets are fitted on validation only, as
    training fits them. `served` is the run's own (rule, report), kept as it is: that report is what the saved
    classifier (offsets folded in) predicts, and recomputing it here could differ from it by float rounding.
    """
    served_rule, served_report = served
    logits, labels = evaluation
    reports = {}
    for rule in DECISIONS:
        if rule == served_rule:
            reports[rule] = served_report
            continue
        offsets = decision_offsets(rule, *validation)
        reports[rule] = classification_report(labels, np.argmax(np.asarray(logits) + offsets, axis=1), label_names)
    return reports


def score(labels: np.ndarray, preds: np.ndarray, n_classes: int, metric: OffsetMetric) -> float:
    """Accuracy or macro-F1 as `freezetune.metrics` (scikit-learn) computes them, from one bincount.

    macro-F1 averages over the classes present in the labels or the predictions, as scikit-learn does
    without `labels=`; the search calls this thousands of times, scikit-learn's checks would dominate.
    """
    if metric == "accuracy":
        return float(np.mean(labels == preds))
    confusion = np.bincount(labels * n_classes + preds, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    true_positives = np.diag(confusion)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)  # 2TP + FP + FN
    present = denominator > 0
    return float(np.mean(2 * true_positives[present] / denominator[present]))


def fit_logit_offsets(logits, labels, metric: OffsetMetric = "macro_f1", grid: np.ndarray = OFFSET_GRID,
                      max_rounds: int = MAX_ROUNDS) -> np.ndarray:
    """Per-class offsets o (o[0] = 0) maximising `metric` of argmax(logits + o), by coordinate ascent over `grid`."""
    logits, labels = _checked(logits, labels, metric, grid)
    n_classes = logits.shape[1]
    offsets = np.zeros(n_classes)
    evaluate = lambda o: score(labels, np.argmax(logits + o, axis=1), n_classes, metric)  # noqa: E731
    start = best = evaluate(offsets)
    # Candidates nearest 0 first, so the first best value found is the tie-break winner.
    candidates = sorted(grid, key=lambda g: (abs(g), g))
    for _ in range(max_rounds):
        changed = False
        for c in range(1, n_classes):
            for value in candidates:
                trial = offsets.copy()
                trial[c] = value
                if (got := evaluate(trial)) > best or (got == best and abs(value) < abs(offsets[c])):
                    offsets, best, changed = trial, got, True
        if not changed:
            break
    assert best >= start, "coordinate ascent never accepts a worse metric"
    return offsets


def _checked(logits, labels, metric: str, grid) -> tuple[np.ndarray, np.ndarray]:
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(labels) != len(logits) or len(labels) == 0:
        raise ValueError(f"need logits (n, classes) and n labels, got {logits.shape} and {labels.shape}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must be class ids 0..{logits.shape[1] - 1}")
    if metric not in get_args(OffsetMetric):
        raise ValueError(f"metric must be one of {get_args(OffsetMetric)}, got {metric!r}")
    if 0 not in np.asarray(grid):
        raise ValueError("the grid must contain 0 (the argmax rule)")
    return logits, labels
