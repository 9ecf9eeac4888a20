"""Character n-gram TF-IDF + logistic regression: the cheap baseline every fine-tune must beat."""

from __future__ import annotations

import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from freezetune.results import epoch_row, scored_result
from freezetune.measure import peak_memory_mb
from freezetune.metrics import classification_report


def run_tfidf(splits, seed: int = 0, class_weight: str | None = None) -> dict:
    """Fit on train, report validation as its single "epoch" and the evaluation split like `train` does.

    Character 1-3-grams need no word segmentation, which matters for Chinese short texts.
    `class_weight="balanced"` reweights rare classes (sklearn semantics).
    """
    with peak_memory_mb() as peak:
        start = time.perf_counter()
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        features = vectorizer.fit_transform(splits.train["text"])
        model = LogisticRegression(max_iter=2000, class_weight=class_weight, random_state=seed)
        model.fit(features, splits.train["label"])
        seconds = time.perf_counter() - start

        def predict(frame):
            x = vectorizer.transform(frame["text"])
            return model.predict(x), model.predict_proba(x)

        val_preds, val_proba = predict(splits.validation)
        eval_loss = float(log_loss(splits.validation["label"], val_proba, labels=model.classes_))
        validation = classification_report(splits.validation["label"].tolist(), val_preds, splits.label_names)
        eval_preds, _ = predict(splits.evaluation_split[1])
    n_params = model.coef_.size + model.intercept_.size
    return scored_result(
        splits,
        strategy="tfidf",
        selection_metric=None,  # one fit, nothing to select
        epochs=[epoch_row(1, None, eval_loss, validation)],
        best_epoch=1,
        validation=validation,
        evaluation_predictions=eval_preds,
        trainable_params=n_params,
        total_params=n_params,
        train_seconds=seconds,
        train_samples_per_second=len(splits.train) / max(seconds, 1e-9),
        peak_memory_mb=peak[0],
    ).to_dict()
