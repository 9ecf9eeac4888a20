"""Inference with a folder written by `freezetune export`: ONNX Runtime on CPU, batched like `Predictor`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .export import INT8_FILE, MODEL_FILE, require_onnx
from .inference import BatchedClassifier
from .models import load_tokenizer
from .predict import trained_max_length


class OnnxPredictor(BatchedClassifier):
    """model.onnx (or model.int8.onnx) of an exported folder, with the same interface as `Predictor`."""

    tensor_type = "np"

    def __init__(self, model_dir: str, batch_size: int = 64, max_length: int | None = None, int8: bool = False):
        folder = Path(model_dir)
        model_file = folder / (INT8_FILE if int8 else MODEL_FILE)
        if not folder.is_dir():
            raise UserError(f"--model {folder} not found: pass a folder written by `freezetune export`")
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
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        id2label = json.loads((folder / "config.json").read_text(encoding="utf-8"))["id2label"]
        self.label_names = [id2label[str(i)] for i in range(len(id2label))]

    def _logits(self, batch) -> np.ndarray:
        return self.session.run(["logits"], {name: batch[name] for name in self.input_names})[0]
