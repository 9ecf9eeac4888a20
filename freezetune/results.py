"""What every run returns and writes as metrics.json: one typed record for transformer runs and baselines.

`compare` tabulates, tests and plots every strategy with the same code because every run, a fine-tune, the
LSTM or TF-IDF, fills this one record. Fields that only some runs have default to None.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .metrics import classification_report

PROBABILITY_DECIMALS = 4
"""Enough to average seeds' probabilities (compare's seed ensembles); more would only make metrics.json larger."""


@dataclass(kw_only=True)
class RunResult:
    epochs: list[dict]
    """One row per epoch: epoch, train_loss, eval_loss, accuracy, macro_f1, weighted_f1 (validation numbers)."""
    best_epoch: int
    selection_metric: str | None
    label_names: list[str]
    validation: dict
    """The best epoch's classification report on the validation split."""
    evaluation_split: str
    """`test` when the data has one, else `validation`."""
    evaluation: dict
    evaluation_predictions: list[int]
    evaluation_probabilities: list[list[float]] | None = None
    """Per evaluation example, the class probabilities the run predicts with, rounded (`rounded_probabilities`)."""
    strategy: str
    trainable_params: int
    total_params: int
    train_seconds: float
    train_samples_per_second: float
    peak_memory_mb: float
    data_notes: list[str] = field(default_factory=list)
    # Transformer runs only.
    lr: float | None = None
    cached_layers: int | None = None
    precision: str | None = None
    class_weights: list[float] | None = None
    init: str | None = None
    lr_search: list[dict] | None = None
    """With `--lr auto`: each candidate learning rate and its validation metric."""
    details: dict = field(default_factory=dict)
    """Anything a run adds that others do not have (e.g. a baseline's chosen hyperparameters)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def epoch_row(epoch: int, train_loss: float | None, eval_loss: float | None, validation: dict) -> dict:
    """One row of the per-epoch table (validation numbers after that epoch)."""
    return {"epoch": epoch, "train_loss": train_loss, "eval_loss": eval_loss,
            **{m: validation[m] for m in ("accuracy", "macro_f1", "weighted_f1")}}


def rounded_probabilities(probabilities) -> list[list[float]]:
    """(examples, classes) probabilities as metrics.json records them: plain floats, PROBABILITY_DECIMALS decimals."""
    return np.round(np.asarray(probabilities, dtype=np.float64), PROBABILITY_DECIMALS).tolist()


def scored_result(splits, evaluation_predictions, evaluation_probabilities=None, **fields) -> RunResult:
    """A RunResult whose evaluation report is computed here, so every kind of run is scored by the same code."""
    split_name, frame = splits.evaluation_split
    predictions = [int(p) for p in evaluation_predictions]
    return RunResult(
        evaluation_split=split_name,
        evaluation=classification_report(frame["label"].tolist(), predictions, splits.label_names),
        evaluation_predictions=predictions,
        evaluation_probabilities=None if evaluation_probabilities is None else rounded_probabilities(evaluation_probabilities),
        label_names=list(splits.label_names),
        data_notes=list(splits.notes),
        **fields,
    )
