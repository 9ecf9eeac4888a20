"""Knowledge distillation (`--distill-from DIR [DIR ...]`): train one model to predict like saved ones.

A seed ensemble is a better classifier than any of its members, but it costs its size at every prediction.
Distillation (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network") moves most of that gain into
one model: the teachers' averaged probabilities on the training texts become soft targets, and the loss is

    (1 - W) x the run's loss on the labels (--loss, --class-weights)  +  W x KL(teachers || model)

per training row, with W = --distill-weight. The soft targets say what the labels cannot: which neutral headline
is nearly positive. The teachers' probabilities are what `predict --model DIR ...` gives for them (their
temperature and decision offsets included), computed once before training, in eval mode; the KL term uses them
as they are (no distillation temperature: a freezetune model's probabilities are already calibrated). Only
training rows carry soft targets: validation (the best epoch, the fitted temperature and offsets) and the
validation loss stay on the labels alone. The train loss the run logs is the mixture (with W = 1, the KL alone).

The soft targets travel with each training example (key `soft_targets`) and are taken out of the batch before
the model sees it; they work on every fast path (prefix cache, compact embeddings) and with R-Drop.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from transformers import Trainer

from ..errors import UserError
from ..inference.ensemble import average_probabilities
from ..losses.terms import batch_mean, distillation_kl

SOFT_TARGETS = "soft_targets"
"""The key of a training example's soft targets: (classes,) probabilities."""
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def check_teachers(teachers: Sequence[str], label_names: Sequence[str]) -> None:
    """Each teacher is a trained model folder for these labels in this order (config and file names only: no
    weights load, so this runs before any slow work)."""
    from ..models import load_config

    for teacher in teachers:
        if not Path(teacher).is_dir():
            raise UserError(f"--distill-from {teacher} is not a folder: pass the output folders of `freezetune train` "
                            "runs on this data")
        if not any((Path(teacher) / name).is_file() for name in WEIGHT_FILES):
            raise UserError(f"--distill-from {teacher} holds no model weights ({', '.join(WEIGHT_FILES)}): pass the "
                            "output folder of a finished `freezetune train` run")
        config = load_config(teacher)
        labels = [config.id2label[i] for i in range(config.num_labels)] if getattr(config, "id2label", None) else []
        if labels != list(label_names):
            raise UserError(f"--distill-from {teacher} predicts the labels {', '.join(map(str, labels)) or '(none)'} but "
                            f"the data has {', '.join(label_names)}: a teacher must be trained on the same labels, in "
                            "the same order (a `freezetune train` output folder for this data)")


_memo: dict[tuple, np.ndarray] = {}
"""Soft targets already computed in this process: a study's runs share the teachers and the training texts."""


def teacher_probabilities(teachers: Sequence[str], texts: list[str], precision: str, batch_size: int) -> np.ndarray:
    """(texts, classes): the mean of the teachers' predicted probabilities, each teacher loaded in turn."""
    from ..inference.predict import Predictor

    key = (tuple(_fingerprint(t) for t in teachers), precision, batch_size,
           hashlib.sha256(json.dumps(texts).encode()).hexdigest())
    if key not in _memo:
        # A minute or more per teacher on a CPU: say so, or the run looks stuck before its first epoch.
        logging.getLogger("freezetune").info("distillation: %d teacher(s) predict the %d training texts", len(teachers),
                                             len(texts))
        members = [Predictor(teacher, batch_size, precision=precision).probabilities(texts) for teacher in teachers]
        _memo.clear()  # one set of targets at a time: a study has one
        _memo[key] = average_probabilities(members).astype(np.float32)
    return _memo[key]


def add_soft_targets(features: list[dict], texts: list[str], teachers: Sequence[str], precision: str,
                     batch_size: int) -> None:
    """Give each tokenized training example (of `texts`, in order) the teachers' probabilities for its text."""
    soft = teacher_probabilities(teachers, texts, precision, batch_size)
    for feature, targets in zip(features, soft.tolist(), strict=True):
        feature[SOFT_TARGETS] = targets


def _fingerprint(teacher: str) -> tuple:
    """A teacher folder's identity for the memo: its path and its files' sizes and modification times."""
    path = Path(teacher).expanduser().resolve()
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(path.iterdir()) if f.is_file()]
    return str(path), tuple(stats)


class DistillTrainer(Trainer):
    """A Trainer whose training loss mixes the run's loss with the KL to the teachers' soft targets."""

    def __init__(self, *args, distill_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.distill_weight = distill_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:  # evaluation: validation rows have labels only
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if SOFT_TARGETS not in inputs:  # a data path lost them: training on would silently not distil
            raise RuntimeError(f"a training batch has no {SOFT_TARGETS!r}: the data path dropped the teachers' targets")
        inputs = dict(inputs)
        targets = inputs.pop(SOFT_TARGETS)  # (rows, classes)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        kl = batch_mean(distillation_kl(outputs["logits"], targets), num_items_in_batch)
        loss = (1 - self.distill_weight) * loss + self.distill_weight * kl
        return (loss, outputs) if return_outputs else loss
