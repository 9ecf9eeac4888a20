"""Seed ensembles: average the class probabilities of several models trained the same way.

Runs that differ only in their seed make partly independent mistakes; the mean of their probabilities is
usually a better classifier than a typical member (and than the mean ± std that `compare` reports). Averaging
probabilities, not logits, keeps each member's calibration meaningful and works for any mix of backends.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UserError
from .classifier import TextClassifier


def average_probabilities(members: Sequence[np.ndarray]) -> np.ndarray:
    """The element-wise mean of equally shaped (texts, classes) probability arrays."""
    if not members:
        raise ValueError("need at least one probability array")
    shapes = {np.shape(m) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"probability arrays differ in shape: {sorted(shapes)}")
    return np.mean(np.stack(members), axis=0)


class EnsemblePredictor(TextClassifier):
    """Predictors (Predictor, OnnxPredictor, ...) of the same labels, in the same order, as one predictor."""

    def __init__(self, members: Sequence[TextClassifier], names: Sequence[str] | None = None):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        names = list(names) if names is not None else [f"member {i + 1}" for i in range(len(members))]
        self.members, self.label_names = list(members), list(members[0].label_names)
        for name, member in zip(names[1:], self.members[1:]):
            if list(member.label_names) != self.label_names:
                raise UserError(f"--model {name} has the labels {', '.join(member.label_names)} but --model {names[0]} "
                                f"has {', '.join(self.label_names)}: an ensemble needs models trained on the same "
                                "labels, in the same order")

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return average_probabilities([member.probabilities(texts) for member in self.members])
