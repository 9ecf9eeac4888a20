"""Fitting the post-hoc step on validation: the temperature, then the decision rule's offsets (training's phase 3
calls `fit_post_hoc`, then folds the result into the head with fold.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import softmax

from .calibration import calibration_metrics, fit_temperature
from .decision import decision_offsets


@dataclass
class PostHoc:
    """What is fitted on validation after training: a temperature (calibration) and logit offsets (decision rule).

    Served logits = raw logits / temperature + offsets, folded into the saved classifier's last layer.
    """

    temperature: float
    offsets: np.ndarray
    decision: str
    calibration: dict = field(default_factory=dict)
    """Per split: ECE and Brier score of the raw probabilities (`before`), of softmax(raw / temperature) without
    the offsets (`after_temperature`), and as served (`served`: what every way of loading OUT gives)."""
    probabilities: dict = field(default_factory=dict)
    """The evaluation split's probabilities before and as served, and its labels, for the reliability diagram."""

    @property
    def changes_model(self) -> bool:
        return self.temperature != 1.0 or bool(np.any(self.offsets))

    def measure(self, raw: dict, served: dict, labels: dict) -> None:
        for split, logits in raw.items():
            before, after = softmax(logits, axis=-1), softmax(served[split], axis=-1)
            scaled = softmax(logits / self.temperature, axis=-1)
            self.calibration[split] = {"before": calibration_metrics(before, labels[split]),
                                       "after_temperature": calibration_metrics(scaled, labels[split]),
                                       "served": calibration_metrics(after, labels[split])}
            self.probabilities = {"split": split, "before": before, "after": after, "labels": labels[split]}

    def record(self) -> dict:
        return {"decision": {"rule": self.decision, "logit_offsets": self.offsets.tolist()},
                "calibration": {"temperature": self.temperature, **self.calibration}}


def fit_post_hoc(config, validation_logits: np.ndarray, validation_labels: np.ndarray, say=print) -> PostHoc:
    """Fit the temperature, then the offsets on the scaled logits; both on validation only, never on test.

    The offsets move probability towards the classes they favour, so softmax(z / T + o) is no longer what T
    calibrated (on builtin:inews the served ECE rose above the raw one). With both, the temperature is fitted
    once more on what will be served, (z / T + o) / s: a positive scale changes no label, only the probabilities.
    `config`: the run's TrainConfig (its decision rule and calibration); `say`: where the fitted values are told.
    """
    temperature = fit_temperature(validation_logits, validation_labels) if config.fits_temperature else 1.0
    offsets = decision_offsets(config.decision, validation_logits / temperature, validation_labels)
    if config.fits_temperature and np.any(offsets):
        rescale = fit_temperature(validation_logits / temperature + offsets, validation_labels)
        temperature, offsets = temperature * rescale, offsets / rescale
    if config.fits_temperature:
        say(f"temperature {temperature:.3f} fitted on validation (calibrated probabilities; labels unchanged)")
    if config.fits_offsets:
        say(f"decision rule {config.decision}: logit offsets {np.round(offsets, 2).tolist()} fitted on validation")
    return PostHoc(float(temperature), np.asarray(offsets, dtype=np.float64), config.decision)
