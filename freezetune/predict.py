"""Inference with a trained output folder: label probabilities for texts, and evaluation on labelled data."""

from __future__ import annotations

import abc
import json
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax

from .data import LABEL, TEXT, load_splits
from .errors import UserError
from .metrics import classification_report
from .models import load_classifier, load_tokenizer

DEFAULT_MAX_LENGTH = 512


def trained_max_length(model_dir: str) -> int:
    """The max length the model was trained with (from run_config.json), else the tokenizer's limit."""
    run_config = Path(model_dir) / "run_config.json"
    if run_config.is_file():
        return int(json.loads(run_config.read_text(encoding="utf-8"))["max_length"])
    return DEFAULT_MAX_LENGTH


class BatchedClassifier(abc.ABC):
    """Scores texts in length-sorted batches (less padding, same results); subclasses run the model.

    Shared by the PyTorch `Predictor` and the ONNX Runtime `OnnxPredictor`, so both batch and sort alike.
    """

    tensor_type = "pt"  # what the tokenizer returns for `_logits`
    label_names: list[str]  # set by the subclass from the model's id2label

    def __init__(self, model_dir: str, batch_size: int, max_length: int | None):
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        self.tokenizer = load_tokenizer(model_dir)
        self.batch_size = batch_size
        self.max_length = max_length or trained_max_length(model_dir)

    @abc.abstractmethod
    def _logits(self, batch) -> np.ndarray:
        """The model's float32 logits for one tokenized batch."""

    def probabilities(self, texts: list[str]) -> np.ndarray:
        order = np.argsort([len(t) for t in texts], kind="stable")
        probs = np.zeros((len(texts), len(self.label_names)), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors=self.tensor_type)
            probs[idx] = softmax(self._logits(batch), axis=-1)
        return probs

    def predict(self, texts: list[str]) -> list[dict]:
        probs = self.probabilities(texts)
        return [
            {"text": text, "label": self.label_names[int(p.argmax())], "probability": float(p.max())}
            for text, p in zip(texts, probs)
        ]


class Predictor(BatchedClassifier):
    """A trained output folder loaded with PyTorch."""

    def __init__(self, model_dir: str, batch_size: int = 64, max_length: int | None = None):
        super().__init__(model_dir, batch_size, max_length)
        self.model = load_classifier(model_dir).eval()
        self.label_names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]

    @torch.inference_mode()
    def _logits(self, batch) -> np.ndarray:
        return self.model(**batch).logits.float().numpy()


def evaluate(model_dir: str, data: str, split: str | None = None, text_column: str = "sentence",
             label_column: str = "label", batch_size: int = 64) -> dict:
    """The training report (accuracy, F1s, per-class, confusion matrix) of a trained model on any split."""
    predictor = Predictor(model_dir, batch_size)
    splits = load_splits(data, text_column, label_column)
    frames = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    split = split or splits.evaluation_split[0]
    if frames.get(split) is None:
        raise UserError(f"the data has no {split} split: choose one of {', '.join(k for k, v in frames.items() if v is not None)}")
    # The data's own label ids -> the model's, by label name.
    known = {name: i for i, name in enumerate(predictor.label_names)}
    unknown = sorted(set(splits.label_names) - set(known))
    if unknown:
        raise UserError(f"the data has labels the model was not trained on: {', '.join(unknown)}; "
                        f"the model knows {', '.join(predictor.label_names)}")
    frame = frames[split]
    labels = [known[splits.label_names[i]] for i in frame[LABEL]]
    preds = predictor.probabilities(frame[TEXT].tolist()).argmax(axis=-1)
    return {"split": split, "rows": len(frame), **classification_report(labels, preds, predictor.label_names)}
