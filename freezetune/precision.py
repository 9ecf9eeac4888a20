"""Numeric precision of matmuls: float32, or bfloat16/float16 autocast where the hardware runs it natively.

Mixed precision keeps the weights and optimizer state in float32 and runs matmuls in 16 bits under
`torch.autocast`. On a CPU with AVX512-BF16 or AMX, a bfloat16 matmul is about 4x a float32 one (measured
on this project's 2-core AMD EPYC: 841 against 194 GFLOP/s), so `auto` picks it there; on a CPU without
them, bfloat16 is emulated and slower, so `auto` stays float32. Training hands the choice to the Trainer
(its `bf16`/`fp16` flags); our own forward passes (frozen-prefix cache, predictions) use `autocast`.
"""

from __future__ import annotations

import contextlib

import torch

from .choices import PRECISIONS
from .errors import UserError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def device_type() -> str:
    """Where freezetune computes: the GPU when there is one (training and prediction alike), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX tiles: the instruction sets oneDNN uses for fast bfloat16 matmuls."""
    checks = (getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return any(check() for check in checks if check is not None)


def resolve_precision(precision: str, device: str) -> str:
    """`auto` -> the fastest precision the device ("cuda" or "cpu") runs natively; explicit choices are checked."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r} is not valid: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU: use bf16 or fp32 on this machine")
    return precision


def autocast(precision: str, device: str):
    """The autocast context for a resolved precision on a device type ("cuda" or "cpu"); a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=_DTYPES[precision])
