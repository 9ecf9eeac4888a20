"""Temperature scaling and calibration measures, on synthetic data whose right answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import brier_score_loss

from freezetune.posthoc.calibration import (
    brier_score,
    calibration_metrics,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    reliability_diagram,
)


def sample_labels(probs: np.ndarray, rng) -> np.ndarray:
    """One label per row drawn from that row's probabilities: the probabilities are then calibrated by construction."""
    return (probs.cumsum(axis=1) < rng.random((len(probs), 1))).sum(axis=1)


def test_calibrated_probabilities_have_ece_near_zero_and_overconfident_ones_do_not():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.7, size=100_000)
    labels = sample_labels(probs, rng)
    # Sampling noise alone: about sum_b sqrt(n_b) / (2n) <= sqrt(15 / n) / 2 ~ 0.006.
    assert expected_calibration_error(probs, labels) < 0.01
    overconfident = softmax(3 * np.log(probs), axis=1)
    assert expected_calibration_error(overconfident, labels) > 0.1


def test_ece_and_bins_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])
    # Two bins: (0, 0.5] is empty, (0.5, 1] holds all four: confidence 0.7375, accuracy 0.75.
    counts, confidence, accuracy = reliability_bins(probs, labels, bins=2)
    np.testing.assert_array_equal(counts, [0, 4])
    np.testing.assert_allclose(confidence[1], (0.9 + 0.8 + 0.7 + 0.55) / 4)
    assert accuracy[1] == 0.75
    assert expected_calibration_error(probs, labels, bins=2) == pytest.approx(abs(0.75 - 0.7375))
    # Four bins: (0.5, 0.75] holds 0.7 and 0.55 (both right), (0.75, 1] holds 0.9 (right) and 0.8 (wrong).
    expected = (2 * abs(1 - 0.625) + 2 * abs(0.5 - 0.85)) / 4
    assert expected_calibration_error(probs, labels, bins=4) == pytest.approx(expected)


def test_brier_score_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32)
    labels = [0, 1]
    row0 = 0.3**2 + 0.2**2 + 0.1**2
    row1 = 0.1**2 + 0.7**2 + 0.6**2
    assert brier_score(probs, labels) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert brier_score(np.eye(3)[[2, 0]], [2, 0]) == 0
    assert calibration_metrics(probs, labels)["brier"] == brier_score(probs, labels)
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=50)
    labels = rng.integers(0, 4, 50)
    assert brier_score(probs, labels) == pytest.approx(brier_score_loss(labels, probs, labels=range(4)))


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_temperature_recovers_the_one_that_generated_the_labels(true_temperature):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(20_000, 4))
    labels = sample_labels(softmax(logits / true_temperature, axis=1), rng)
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(true_temperature, rel=0.05)
    assert negative_log_likelihood(logits / temperature, labels) < negative_log_likelihood(logits, labels)
    before, after = softmax(logits, axis=1), softmax(logits / temperature, axis=1)
    assert expected_calibration_error(after, labels) < expected_calibration_error(before, labels)
    # Scaling never changes a label.
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))


def test_reliability_diagram_writes_a_png(tmp_path):
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=3.0, size=(500, 3))
    labels = sample_labels(softmax(logits / 2, axis=1), rng)
    path = reliability_diagram(tmp_path / "reliability.png", softmax(logits, axis=1),
                               softmax(logits / fit_temperature(logits, labels), axis=1), labels)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["reliability.png"]  # no temporary file left


def test_mismatched_arrays_are_refused():
    with pytest.raises(ValueError, match="need scores"):
        expected_calibration_error(np.full((3, 2), 0.5), [0, 1])
    with pytest.raises(ValueError, match="class ids"):
        fit_temperature(np.zeros((2, 2)), [0, 5])


def test_with_a_decision_rule_the_temperature_is_fitted_again_on_the_served_logits():
    """Offsets that favour a rare class make softmax(z / T + o) overconfident in it; the served scale is refitted
    on validation so that it is NLL-optimal itself, and not one label changes."""
    from types import SimpleNamespace

    from freezetune.posthoc.decision import decision_offsets
    from freezetune.posthoc.fit import fit_post_hoc

    rng = np.random.default_rng(0)
    # Imbalanced 3-class logits whose labels are calibrated at temperature 1.5 (so T is fitted, offsets favour 0).
    logits = rng.normal(0, 1.5, size=(3000, 3)) + np.array([-1.5, 1.0, 0.5])
    labels = sample_labels(softmax(logits / 1.5, axis=1), rng)
    config = SimpleNamespace(fits_temperature=True, fits_offsets=True, decision="macro_f1")
    post_hoc = fit_post_hoc(config, logits, labels, say=lambda message: None)

    first = fit_temperature(logits, labels)
    offsets = decision_offsets("macro_f1", logits / first, labels)
    assert np.all(offsets[1:] < 0)  # class 0 is fixed at 0: the rule moves probability towards it, the rare class
    old_served, served = logits / first + offsets, logits / post_hoc.temperature + post_hoc.offsets
    assert np.array_equal(served.argmax(axis=1), old_served.argmax(axis=1))
    assert fit_temperature(served, labels) == pytest.approx(1.0, abs=1e-3)
    assert negative_log_likelihood(served, labels) < negative_log_likelihood(old_served, labels)
