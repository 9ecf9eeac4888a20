"""Calibrated probabilities: temperature scaling fitted on validation, and how to measure calibration.

A fine-tuned classifier is usually overconfident: of the texts it labels with 95% probability, fewer than 95%
are right. Dividing the logits by one temperature T > 1 (Guo et al. 2017, "On Calibration of Modern Neural
Networks") fixes most of that without changing a single label, since argmax(z / T) = argmax(z). T is fitted
on the validation split by minimising the negative log-likelihood, then folded into the classifier
(`posthoc.fold.fold_into_classifier`). Calibration is measured by the top-label expected calibration error
(ECE, equal-width confidence bins) and the multi-class Brier score, before and after.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

# Temperatures outside this range mean something else is wrong (e.g. logits of another model).
TEMPERATURE_BOUNDS = (0.05, 20.0)
ECE_BINS = 15  # Guo et al.'s choice


def negative_log_likelihood(logits, labels) -> float:
    """Mean cross-entropy of the softmax of `logits` (float64, so tiny probabilities stay exact)."""
    logits, labels = _checked(logits, labels)
    return float(-np.mean(log_softmax(logits, axis=1)[np.arange(len(labels)), labels]))


def fit_temperature(logits, labels, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The T minimising the NLL of softmax(logits / T) on (validation) data.

    The search is over log T (bounded Brent): the NLL is convex in 1/T, so it has one minimum on the line,
    and log T treats "twice as hot" and "twice as cold" alike.
    """
    logits, labels = _checked(logits, labels)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits / np.exp(log_t), labels),
                             bounds=np.log(bounds), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def reliability_bins(probs, labels, bins: int = ECE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width confidence bin ((0, 1/bins], ..., (1 - 1/bins, 1]): count, mean confidence, accuracy.

    Confidence is the top-label probability; empty bins have confidence and accuracy NaN.
    """
    probs, labels = _checked(probs, labels)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    which = np.digitize(confidence, np.linspace(0, 1, bins + 1)[1:-1], right=True)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=bins) / counts
    return counts, mean_confidence, accuracy


def expected_calibration_error(probs, labels, bins: int = ECE_BINS) -> float:
    """Top-label ECE: the count-weighted mean over bins of |accuracy - mean confidence|."""
    counts, confidence, accuracy = reliability_bins(probs, labels, bins)
    filled = counts > 0
    return float(np.sum(counts[filled] * np.abs(accuracy[filled] - confidence[filled])) / counts.sum())


def brier_score(probs, labels) -> float:
    """Multi-class Brier score: the mean over examples of sum_c (p_c - [y = c])^2 (0 best, 2 worst)."""
    probs, labels = _checked(probs, labels)
    # scikit-learn's brier_score_loss computes the same, but warns about float32 rows that sum to 1 +- 1e-7.
    return float(np.mean(np.sum((probs - np.eye(probs.shape[1])[labels]) ** 2, axis=1)))


def calibration_metrics(probs, labels) -> dict[str, float]:
    """What metrics.json records per split, before and after temperature scaling."""
    return {"ece": expected_calibration_error(probs, labels), "brier": brier_score(probs, labels)}


def reliability_diagram(path, probs_before, probs_after, labels, bins: int = ECE_BINS) -> Path:
    """A PNG with two reliability diagrams side by side (raw / as served): accuracy per confidence bin.

    matplotlib is imported here, through its object API (no pyplot, no global backend), so importing this
    module stays cheap and any backend the caller uses is left alone. Written to a temporary file and renamed.
    """
    from matplotlib.figure import Figure

    path = Path(path)
    figure = Figure(figsize=(9, 4.2))
    # Fixed margins, not layout="constrained": its layout pass doubled the cost of the figure, and every run writes one.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.1)
    edges = np.linspace(0, 1, bins + 1)
    panels = zip(figure.subplots(1, 2, sharey=True), (probs_before, probs_after), ("before temperature scaling", "as served"))
    for ax, probs, title in panels:
        _, _, accuracy = reliability_bins(probs, labels, bins)
        ax.bar(edges[:-1], np.nan_to_num(accuracy), width=1 / bins, align="edge", edgecolor="black", alpha=0.8,
               label="accuracy")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-label probability)",
               title=f"{title}: ECE {expected_calibration_error(probs, labels, bins):.3f}")
        ax.grid(alpha=0.3)
    figure.axes[0].set_ylabel("accuracy")
    figure.axes[0].legend(loc="upper left")
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    figure.savefig(temporary, format="png", dpi=110)
    os.replace(temporary, path)
    return path


def _checked(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or labels.shape != (len(scores),) or len(labels) == 0:
        raise ValueError(f"need scores (n, classes) and n labels, got {scores.shape} and {labels.shape}")
    if labels.min() < 0 or labels.max() >= scores.shape[1]:
        raise ValueError(f"labels must be class ids 0..{scores.shape[1] - 1}")
    return scores, labels
