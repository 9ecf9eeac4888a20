"""The baselines learn a small learnable dataset and return the same dict shape as `train`."""

import pytest

from freezetune import UserError
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
    # One weight per (class, n-gram of train) plus one intercept per class.
    from sklearn.feature_extraction.text import TfidfVectorizer

    n_grams = len(TfidfVectorizer(analyzer="char", ngram_range=(1, 3)).fit(tiny_splits.train["text"]).vocabulary_)
    classes = len(tiny_splits.label_names)
    assert result["trainable_params"] == result["total_params"] == classes * n_grams + classes


@pytest.mark.parametrize("metric", ["accuracy", "macro_f1"])
def test_tfidf_keeps_the_c_with_the_best_validation_metric(tiny_splits, metric):
    grid = (0.03, 1.0, 30.0)
    alone = [run_tfidf(tiny_splits, metric=metric, c_grid=(c,)) for c in grid]
    result = run_tfidf(tiny_splits, metric=metric, c_grid=grid)
    scores = [run["validation"][metric] for run in alone]
    best = scores.index(max(scores))  # the first of equals: the more regularised C
    assert result["details"]["tfidf"]["C"] == grid[best]
    assert result["selection_metric"] == metric
    assert result["validation"] == alone[best]["validation"]
    assert result["evaluation_predictions"] == alone[best]["evaluation_predictions"]
    assert [row[metric] for row in result["details"]["tfidf"]["grid"]] == scores
    assert len(set(scores)) > 1  # the grid matters on this data, so picking the best is tested


@pytest.mark.parametrize("choice, passed", [("none", None), ("balanced", "balanced")])
def test_tfidf_passes_the_class_weighting_through(tiny_splits, monkeypatch, choice, passed):
    from sklearn.linear_model import LogisticRegression

    seen = []

    class Spy(LogisticRegression):
        def fit(self, *args, **kwargs):
            seen.append(self.class_weight)
            return super().fit(*args, **kwargs)

    monkeypatch.setattr("freezetune.baselines.tfidf.LogisticRegression", Spy)
    result = run_tfidf(tiny_splits, class_weight=choice)
    assert seen and set(seen) == {passed}
    assert result["details"]["tfidf"]["class_weight"] == choice


def test_tfidf_refuses_an_unknown_class_weighting(tiny_splits):
    with pytest.raises(UserError, match="--class-weights 'inverse' is not valid"):
        run_tfidf(tiny_splits, class_weight="inverse")
