"""A model folder -> a predictor: PyTorch (`Predictor`) or ONNX Runtime (`OnnxPredictor`), one way for all commands.

Both share `BatchedClassifier.probabilities`, so `predict`, `serve` and training's final evaluation score texts
with the same code.
"""

from __future__ import annotations

import argparse
from typing import Literal, get_args

from ..choices import PRECISIONS
from ..errors import UserError

Backend = Literal["torch", "onnx"]
BACKENDS: tuple[str, ...] = get_args(Backend)
PRECISION_HELP = "matmul precision: auto (bf16 where the CPU/GPU runs it natively, else fp32), fp32, bf16, fp16 (GPU)"


def _positive_int(value: str) -> int:
    """argparse type: an integer >= 1, refused while parsing, before any model loads."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def add_predictor_arguments(parser: argparse.ArgumentParser, backend: bool = True) -> None:
    """The flags of `load_predictor`, for every command that loads a model (predict, serve, eval): written once.

    `backend=False` for a command that only runs PyTorch (eval): no --backend and --int8.
    """
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="texts per forward pass (default: %(default)s)")
    if backend:
        parser.add_argument("--backend", choices=BACKENDS, default="torch",
                            help="onnx: run a folder written by `freezetune export` with ONNX Runtime")
        parser.add_argument("--int8", action="store_true", help="with --backend onnx: the int8-quantized model")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help=("with --backend torch: " if backend else "") + PRECISION_HELP)


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
        from .onnx_predict import OnnxPredictor

        return OnnxPredictor(model, batch_size, int8=int8)
    if int8:
        raise UserError("--int8 runs the quantized ONNX model: add --backend onnx (and --model an exported folder)")
    from .predict import Predictor

    return Predictor(model, batch_size, precision=precision)


def describe_precision(predictor, backend: Backend, int8: bool) -> str:
    """What the predictor computes in: PyTorch's resolved precision (fp32, bf16, fp16), or ONNX fp32 / int8."""
    return predictor.precision if backend == "torch" else ("int8" if int8 else "fp32")
