"""Aggregation over seeds and significance of differences between strategies on the same examples."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over seeds; the std of a single seed is 0."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def mcnemar_exact(reference_correct, other_correct) -> float:
    """Two-sided exact McNemar p-value: a binomial test on the examples exactly one of the two got right."""
    reference_correct, other_correct = np.asarray(reference_correct, bool), np.asarray(other_correct, bool)
    only_reference = int((reference_correct & ~other_correct).sum())
    only_other = int((~reference_correct & other_correct).sum())
    if only_reference + only_other == 0:
        return 1.0
    return float(binomtest(only_reference, only_reference + only_other, 0.5).pvalue)


def scores(labels: np.ndarray, preds: np.ndarray, metric: str) -> np.ndarray:
    """`metric` of each row of `preds` (..., n) against `labels` broadcastable to it; vectorised for bootstrap.

    Macro-F1 averages over the classes present in labels or predictions, as scikit-learn does, so this
    agrees with `freezetune.metrics`.
    """
    if metric == "accuracy":
        return (labels == preds).mean(axis=-1)
    f1_sum = present = 0
    for c in np.union1d(np.unique(labels), np.unique(preds)):
        is_true, is_pred = labels == c, preds == c
        denominator = is_true.sum(-1) + is_pred.sum(-1)  # 2TP + FP + FN
        f1_sum = f1_sum + np.where(denominator > 0, 2 * (is_true & is_pred).sum(-1) / np.maximum(denominator, 1), 0.0)
        present = present + (denominator > 0)
    return f1_sum / present


def paired_bootstrap(labels, reference, other, metric: str = "accuracy", resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Observed difference (other - reference) of the seed-mean `metric`, and its two-sided bootstrap p-value.

    `reference` and `other` are (seeds, examples) predictions with seed-matched rows. Each resample draws
    examples with replacement, the same draw for every seed, so seed noise and example noise both count.
    The p-value is the share of resampled differences at least as far from the observed one as the observed
    one is from 0 (the shifted null), with the +1 correction so it is never 0.
    """
    labels = np.asarray(labels)
    reference, other = np.atleast_2d(reference), np.atleast_2d(other)
    observed = float(scores(labels, other, metric).mean() - scores(labels, reference, metric).mean())
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, resamples, 250):  # chunks bound memory at 250 x seeds x examples
        idx = rng.integers(0, len(labels), size=(min(250, resamples - start), len(labels)))
        deltas = scores(labels[idx], other[:, idx], metric).mean(0) - scores(labels[idx], reference[:, idx], metric).mean(0)
        extreme += int((np.abs(deltas - observed) >= abs(observed) - 1e-12).sum())
    return observed, (extreme + 1) / (resamples + 1)
