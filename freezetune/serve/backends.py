"""A model folder -> a predictor: PyTorch (`Predictor`) or ONNX Runtime (`OnnxPredictor`), one way for all commands.

Both share `BatchedClassifier.probabilities`, so `predict`, `serve` and training's final evaluation score texts
with the same code.
"""

from __future__ import annotations

from typing import Literal, get_args

from ..errors import UserError

Backend = Literal["torch", "onnx"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def load_predictor(model: str, backend: Backend = "torch", int8: bool = False, batch_size: int = 64,
                   precision: str = "auto", threads: int | None = None):
    """The predictor for `model` (a trained folder, or an exported one with backend="onnx").

    `threads`: the model's compute threads (PyTorch's intra-op threads, which the ONNX backend follows);
    None keeps PyTorch's default, one per core.
    """
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r} is not valid: use one of {', '.join(BACKENDS)}")
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads must be at least 1, got {threads}")
        import torch

        torch.set_num_threads(threads)
    if backend == "onnx":
        from ..onnx_predict import OnnxPredictor

        return OnnxPredictor(model, batch_size, int8=int8)
    if int8:
        raise UserError("--int8 runs the quantized ONNX model: add --backend onnx (and --model an exported folder)")
    from ..predict import Predictor

    return Predictor(model, batch_size, precision=precision)


def describe_precision(predictor, backend: Backend, int8: bool) -> str:
    """What the predictor computes in: PyTorch's resolved precision (fp32, bf16, fp16), or ONNX fp32 / int8."""
    return predictor.precision if backend == "torch" else ("int8" if int8 else "fp32")
