"""Aggregation and significance, checked against values computed by hand."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from freezetune.compare.stats import mcnemar_exact, mean_std, paired_bootstrap, scores


def test_mean_std_uses_the_sample_std():
    # mean 0.8; deviations -0.1, 0, 0.1 -> sum of squares 0.02 / (3 - 1) = 0.01 -> std 0.1
    assert mean_std([0.7, 0.8, 0.9]) == pytest.approx((0.8, 0.1))
    assert mean_std([0.5]) == (0.5, 0.0)


def test_mcnemar_on_a_known_table():
    # Discordant pairs: reference-only right b = 1, other-only right c = 6, plus 3 both right.
    # Exact two-sided p = 2 * P(X <= 1 | n = 7, 1/2) = 2 * (1 + 7) / 128 = 0.125.
    reference = [1, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    other = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    assert mcnemar_exact(reference, other) == pytest.approx(0.125)
    assert mcnemar_exact(reference, reference) == 1.0


def test_macro_f1_matches_scikit_learn():
    labels = np.array([0, 0, 1, 1, 2, 2, 3])
    preds = np.array([[0, 1, 1, 1, 2, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
    expected = [f1_score(labels, p, average="macro", zero_division=0) for p in preds]
    assert scores(labels, preds, "macro_f1") == pytest.approx(expected)


def test_paired_bootstrap_difference_and_p_values():
    labels = np.array([0, 1, 1, 0])
    # Seed-matched predictions: the reference gets 2/4 and 3/4 right (mean 0.625), the other 4/4 and 3/4 (0.875).
    reference = np.array([[0, 0, 0, 0], [0, 1, 1, 1]])
    other = np.array([[0, 1, 1, 0], [0, 1, 1, 1]])
    delta, p = paired_bootstrap(labels, reference, other, "accuracy", resamples=500)
    assert delta == pytest.approx(0.25)
    # The exact bootstrap p: all 4^4 equally likely resamples of the 4 examples, enumerated.
    import itertools

    resamples = np.array(list(itertools.product(range(4), repeat=4)))
    deltas = scores(labels[resamples], other[:, resamples], "accuracy").mean(0) - \
        scores(labels[resamples], reference[:, resamples], "accuracy").mean(0)
    exact = np.mean(np.abs(deltas - 0.25) >= 0.25 - 1e-12)
    _, estimate = paired_bootstrap(labels, reference, other, "accuracy", resamples=20000)
    assert 0 < exact < 1 and estimate == pytest.approx(exact, abs=0.01)
    # Identical predictions: every resampled difference is 0, as far from 0 as the observed one -> p = 1.
    assert paired_bootstrap(labels, reference, reference, resamples=100) == (0.0, 1.0)
    # Always right vs always wrong: every resample differs by exactly +1, none as extreme as 0 -> p = 1/(B+1).
    assert paired_bootstrap(labels, [1 - labels], [labels], resamples=99) == (1.0, pytest.approx(0.01))
