"""Inference with a folder written by `freezetune export`: ONNX Runtime on CPU, batched like `Predictor`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..layout import INT8_FILE, MODEL_FILE
from ..models import load_tokenizer
from .classifier import BatchedClassifier
from .export import require_onnx
from .predict import trained_max_length


class OnnxPredictor(BatchedClassifier):
    """model.onnx (or model.int8.onnx) of an exported folder, with the same interface as `Predictor`."""

    tensor_type = "np"

    def __init__(self, model_dir: str, batch_size: int = 64, max_length: int | None = None, int8: bool = False):
        folder = Path(model_dir)
        model_file = folder / (INT8_FILE if int8 else MODEL_FILE)
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "not found"
            raise UserError(f"--model {folder} {what}: pass a folder written by `freezetune export`")
        if not model_file.is_file():
            flags = " --int8" if int8 else ""
            raise UserError(f"{folder} has no {model_file.name}: run `freezetune export --model {folder} --format onnx{flags} "
                            "--output-dir DIR` first and predict with --model DIR")
        ort = require_onnx("onnxruntime")
        super().__init__(load_tokenizer(str(folder)), batch_size, max_length or trained_max_length(str(folder)))
        options = ort.SessionOptions()
        # The same thread count as the PyTorch backend (physical cores unless OMP_NUM_THREADS says otherwise),
        # so the two compare fairly; one inter-op thread because the graph is a single chain.
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        self.session = _session(ort, model_file, options)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.label_names = _label_names(folder / "config.json", model_file, self.session.get_outputs()[0].shape[-1])

    def _logits(self, batch) -> np.ndarray:
        return self.session.run(["logits"], {name: batch[name] for name in self.input_names})[0]


def _reexport(model_file: Path) -> str:
    flags = " --int8" if model_file.name == INT8_FILE else ""
    return (f"export it again (`freezetune export --model TRAINED_DIR{flags} --output-dir {model_file.parent} "
            "--overwrite`) and predict or serve with --backend onnx")


def _session(ort, model_file: Path, options):
    """ONNX Runtime's session of `model_file`; a damaged file (cut short, overwritten) is a one-line error."""
    try:
        return ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own classes (InvalidProtobuf, Fail, ...) derive from Exception only
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise UserError(f"cannot load {model_file}: it is damaged or not an ONNX model ({first}): "
                        f"{_reexport(model_file)}") from None


def _label_names(config_file: Path, model_file: Path, outputs) -> list[str]:
    """The labels of config.json's id2label, which must name each of `model_file`'s `outputs` (its logits' width)."""
    try:
        id2label = json.loads(config_file.read_text(encoding="utf-8"))["id2label"]
        names = [id2label[str(i)] for i in range(len(id2label))]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read the labels from {config_file} ({type(exc).__name__}: {exc}): "
                        f"{_reexport(model_file)}") from None
    if isinstance(outputs, int) and outputs != len(names):
        raise UserError(f"{config_file} names {len(names)} labels but {model_file} has {outputs} "
                        f"outputs: restore config.json as export wrote it, or {_reexport(model_file)}")
    return names
