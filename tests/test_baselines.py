"""The baselines learn a small learnable dataset and return the same dict shape as `train`."""

import pytest

from freezetune.baselines import run_lstm, run_tfidf

TRAIN_KEYS = {
    "epochs", "best_epoch", "validation", "evaluation_split", "evaluation", "evaluation_predictions", "label_names",
    "trainable_params", "total_params", "train_seconds", "train_samples_per_second", "peak_memory_mb",
}


def majority_accuracy(splits) -> float:
    majority = splits.train["label"].mode()[0]
    return float((splits.test["label"] == majority).mean())


@pytest.mark.parametrize("run", [lambda s: run_tfidf(s, seed=0), lambda s: run_lstm(s, seed=0, epochs=6)], ids=["tfidf", "lstm"])
def test_baseline_beats_majority_class(tiny_splits, run):
    result = run(tiny_splits)
    assert TRAIN_KEYS <= set(result)
    assert result["evaluation_split"] == "test"
    assert len(result["evaluation_predictions"]) == len(tiny_splits.test)
    assert result["evaluation"]["accuracy"] > majority_accuracy(tiny_splits) + 0.15
    assert result["trainable_params"] > 0
    assert 1 <= result["best_epoch"] <= len(result["epochs"])


def test_lstm_is_deterministic_and_keeps_the_best_epoch(tiny_splits):
    first, second = (run_lstm(tiny_splits, seed=1, epochs=3, metric="macro_f1") for _ in range(2))
    assert first["epochs"] == second["epochs"]
    assert first["evaluation_predictions"] == second["evaluation_predictions"]
    best = max(first["epochs"], key=lambda row: row["macro_f1"])
    assert first["best_epoch"] == best["epoch"]
    assert first["validation"]["macro_f1"] == best["macro_f1"]


def test_tfidf_counts_coefficients_and_has_no_train_loss(tiny_splits):
    result = run_tfidf(tiny_splits, seed=0, class_weight="balanced")
    assert [row["train_loss"] for row in result["epochs"]] == [None]
    # One weight per (class, n-gram) plus one intercept per class.
    assert result["trainable_params"] % len(tiny_splits.label_names) == 0
