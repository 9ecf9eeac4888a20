"""Per-class logit offsets fitted for macro-F1: never worse than argmax where fitted, better where it should be."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from freezetune import UserError
from freezetune.posthoc.decision import decision_offsets, fit_logit_offsets, score


def biased_logits(n: int, seed: int, bias: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """Noisy logits of 3 classes (60/30/10%) whose rare class 2 is scored `bias` too low, as an unweighted loss does."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])
    logits = 1.5 * np.eye(3)[labels] + rng.normal(size=(n, 3))
    logits[:, 2] -= bias
    return logits, labels


def macro_f1(labels, logits, offsets=0.0) -> float:
    return f1_score(labels, np.argmax(logits + offsets, axis=1), average="macro", zero_division=0)


@pytest.mark.parametrize("seed", range(5))
def test_score_is_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    labels, preds = rng.integers(0, 4, 50), rng.integers(0, 3, 50)  # class 3 never predicted
    if seed == 0:
        labels[labels == 1] = 0  # a class in neither labels nor predictions is left out, as scikit-learn does
        preds[preds == 1] = 2
    assert score(labels, preds, 4, "macro_f1") == pytest.approx(f1_score(labels, preds, average="macro", zero_division=0))
    assert score(labels, preds, 4, "accuracy") == pytest.approx(accuracy_score(labels, preds))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_offsets_never_lower_the_fitted_splits_metric(seed, metric):
    logits, labels = biased_logits(300, seed, bias=[0.0, 1.5][seed % 2])
    offsets = fit_logit_offsets(logits, labels, metric=metric)
    assert offsets[0] == 0
    as_sklearn = {"macro_f1": macro_f1, "accuracy": lambda y, z, o=0.0: accuracy_score(y, np.argmax(z + o, axis=1))}[metric]
    assert as_sklearn(labels, logits, offsets) >= as_sklearn(labels, logits)


def test_offsets_undo_a_bias_against_the_rare_class_and_generalise():
    validation, test = biased_logits(2000, seed=1), biased_logits(2000, seed=2)
    offsets = fit_logit_offsets(*validation)
    assert offsets[2] == offsets.max() > 0  # the rare class gets back some of the 1.5 it lost
    labels, logits = test[1], test[0]
    assert macro_f1(labels, logits, offsets) > macro_f1(labels, logits) + 0.02  # on data it was not fitted on


def test_fitting_is_deterministic_and_ties_keep_zero():
    logits, labels = biased_logits(500, seed=3)
    np.testing.assert_array_equal(fit_logit_offsets(logits, labels), fit_logit_offsets(logits, labels))
    # Separable logits: argmax is already perfect, and every offset that keeps it perfect ties with 0.
    separable = 10 * np.eye(3)[labels]
    np.testing.assert_array_equal(fit_logit_offsets(separable, labels), np.zeros(3))


def test_decision_argmax_is_zero_offsets_and_unknown_decisions_are_refused():
    logits, labels = biased_logits(100, seed=4)
    np.testing.assert_array_equal(decision_offsets("argmax", logits, labels), np.zeros(3))
    np.testing.assert_array_equal(decision_offsets("macro_f1", logits, labels), fit_logit_offsets(logits, labels))
    with pytest.raises(UserError, match="--decision 'f1' is not valid: use one of argmax, macro_f1"):
        decision_offsets("f1", logits, labels)


def test_bad_arrays_are_refused():
    with pytest.raises(ValueError, match="need logits"):
        fit_logit_offsets(np.zeros((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="class ids"):
        fit_logit_offsets(np.zeros((2, 2)), [0, 2])
