"""Character n-gram TF-IDF + logistic regression: the cheap baseline every fine-tune must beat.

Not a straw man: its regularisation C is chosen on validation from a small grid by the study's selection
metric, and it takes the same class weighting as the fine-tunes (`--class-weights`).
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from freezetune.losses import check_class_weights
from freezetune.measure import peak_memory_mb
from freezetune.metrics import SELECTION_METRICS, classification_report
from freezetune.results import epoch_row, scored_result

# Inverse regularisation strengths, a factor ~3 apart around scikit-learn's default of 1.
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)


def run_tfidf(splits, seed: int = 0, class_weight: str = "none", metric: str = "accuracy",
              c_grid: tuple[float, ...] = C_GRID) -> dict:
    """Fit one model per C on train, keep the best by validation `metric`, report it like `train` does.

    Character 1-3-grams need no word segmentation, which matters for Chinese short texts. Ties between Cs go
    to the earlier one in `c_grid` (the smaller, more regularised one for the default grid). `class_weight` is
    `none` or `balanced` (scikit-learn's rule, as `--class-weights`). The result records the chosen C and every
    C's validation scores under "tfidf"; its time is the whole search's.
    """
    check_class_weights(class_weight)
    if metric not in SELECTION_METRICS:
        raise ValueError(f"metric must be one of {SELECTION_METRICS}")
    if not c_grid or min(c_grid) <= 0:
        raise ValueError(f"c_grid needs at least one C > 0, got {c_grid}")
    labels = splits.validation["label"]
    with peak_memory_mb() as peak:
        start = time.perf_counter()
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        features = vectorizer.fit_transform(splits.train["text"])
        val_features = vectorizer.transform(splits.validation["text"])
        fits = [_fit(c, class_weight, seed, features, splits.train["label"]) for c in c_grid]
        reports = [classification_report(labels.tolist(), m.predict(val_features), splits.label_names) for m in fits]
        best = max(range(len(fits)), key=lambda i: (reports[i][metric], -i))
        model, validation = fits[best], reports[best]
        seconds = time.perf_counter() - start
        eval_loss = float(log_loss(labels, model.predict_proba(val_features), labels=model.classes_))
        eval_features = vectorizer.transform(splits.evaluation_split[1]["text"])
        eval_preds, eval_probs = model.predict(eval_features), _probabilities(model, eval_features, len(splits.label_names))
    n_params = model.coef_.size + model.intercept_.size
    grid = [{"C": float(c), "accuracy": report["accuracy"], "macro_f1": report["macro_f1"]} for c, report in zip(c_grid, reports)]
    return scored_result(
        splits,
        strategy="tfidf",
        selection_metric=metric,
        epochs=[epoch_row(1, None, eval_loss, validation)],
        best_epoch=1,
        validation=validation,
        evaluation_predictions=eval_preds,
        evaluation_probabilities=eval_probs,
        trainable_params=n_params,
        total_params=n_params,
        train_seconds=seconds,
        train_samples_per_second=len(splits.train) * len(c_grid) / max(seconds, 1e-9),
        peak_memory_mb=peak[0],
        details={"tfidf": {"C": float(c_grid[best]), "class_weight": class_weight, "grid": grid}},
    ).to_dict()


def _fit(c: float, class_weight: str, seed: int, features, labels) -> LogisticRegression:
    weighting = None if class_weight == "none" else class_weight
    return LogisticRegression(C=c, max_iter=2000, class_weight=weighting, random_state=seed).fit(features, labels)


def _probabilities(model: LogisticRegression, features, n_classes: int) -> np.ndarray:
    """(texts, n_classes) probabilities; a class train lacks (the model never saw it) gets probability 0."""
    probabilities = np.zeros((features.shape[0], n_classes))
    probabilities[:, model.classes_] = model.predict_proba(features)
    return probabilities
