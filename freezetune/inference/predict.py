"""Inference with a trained output folder: label probabilities for texts, and evaluation on labelled data."""

from __future__ import annotations

import json
from pathlib import Path

from ..config import DEFAULT_LABEL_COLUMN, DEFAULT_TEXT_COLUMN
from ..data import load_evaluation_set
from ..errors import UserError
from ..layout import RUN_CONFIG_FILE
from ..metrics import classification_report
from ..models import load_tokenizer, load_trained_classifier, match_tokenizer
from ..precision import device_type, resolve_precision
from .classifier import TorchClassifier

DEFAULT_MAX_LENGTH = 512


def trained_max_length(model_dir: str) -> int:
    """The max length the model was trained with (from run_config.json), else the tokenizer's limit."""
    run_config = Path(model_dir) / RUN_CONFIG_FILE
    if run_config.is_file():
        return int(json.loads(run_config.read_text(encoding="utf-8"))["max_length"])
    return DEFAULT_MAX_LENGTH


class Predictor(TorchClassifier):
    """A trained output folder loaded with PyTorch, on the GPU when there is one.

    `precision` as in training: `auto` is bf16 where the CPU or GPU runs it natively (fp16 on a GPU without bf16),
    else fp32. 16-bit matmuls can flip a near-tie between two classes; `fp32` gives exactly the labels of the
    ONNX export and of a plain `transformers.pipeline`.
    """

    def __init__(self, model_dir: str, batch_size: int = 64, max_length: int | None = None, precision: str = "auto"):
        model = load_trained_classifier(model_dir).eval().to(device_type())
        tokenizer = load_tokenizer(model_dir)
        match_tokenizer(model, tokenizer, model_dir)  # a folder not written by freezetune may lack a padding token
        super().__init__(model, tokenizer, batch_size, max_length or trained_max_length(model_dir),
                         resolve_precision(precision, model.device.type))


def evaluate(model_dir: str, data: str, split: str | None = None, text_column: str = DEFAULT_TEXT_COLUMN,
             label_column: str = DEFAULT_LABEL_COLUMN, batch_size: int = 64, precision: str = "auto") -> dict:
    """The training report (accuracy, F1s, per-class, confusion matrix) of a trained model on labelled data.

    A single data file is evaluated whole; a folder or hub dataset on `split` (default: test, else validation).
    """
    rows = load_evaluation_set(data, split, text_column, label_column)  # data errors before the model loads
    predictor = Predictor(model_dir, batch_size, precision=precision)
    # The data's label names -> the model's ids.
    known = {name: i for i, name in enumerate(predictor.label_names)}
    unknown = sorted(set(rows.labels) - set(known))
    if unknown:
        raise UserError(f"the data has labels the model was not trained on: {', '.join(unknown)}; "
                        f"the model knows {', '.join(predictor.label_names)}")
    labels = [known[name] for name in rows.labels]
    preds = predictor.probabilities(rows.texts).argmax(axis=-1)
    return {"split": rows.split, "rows": len(labels), "data_notes": rows.notes,
            **classification_report(labels, preds, predictor.label_names)}
