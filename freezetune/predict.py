"""Inference with a trained output folder: label probabilities for texts, and evaluation on labelled data."""

from __future__ import annotations

import json
from pathlib import Path

from .data import LABEL, TEXT, load_splits
from .errors import UserError
from .inference import TorchClassifier
from .metrics import classification_report
from .models import load_classifier, load_tokenizer
from .precision import resolve_precision

DEFAULT_MAX_LENGTH = 512


def trained_max_length(model_dir: str) -> int:
    """The max length the model was trained with (from run_config.json), else the tokenizer's limit."""
    run_config = Path(model_dir) / "run_config.json"
    if run_config.is_file():
        return int(json.loads(run_config.read_text(encoding="utf-8"))["max_length"])
    return DEFAULT_MAX_LENGTH


class Predictor(TorchClassifier):
    """A trained output folder loaded with PyTorch; `precision` as in training (`auto`: bf16 where native)."""

    def __init__(self, model_dir: str, batch_size: int = 64, max_length: int | None = None, precision: str = "auto"):
        model = load_classifier(model_dir).eval()
        super().__init__(model, load_tokenizer(model_dir), batch_size, max_length or trained_max_length(model_dir),
                         resolve_precision(precision, model.device.type))


def evaluate(model_dir: str, data: str, split: str | None = None, text_column: str = "sentence",
             label_column: str = "label", batch_size: int = 64, precision: str = "auto") -> dict:
    """The training report (accuracy, F1s, per-class, confusion matrix) of a trained model on any split."""
    predictor = Predictor(model_dir, batch_size, precision=precision)
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
