"""A one-paragraph description of the machine a benchmark ran on, for its results file."""

from __future__ import annotations

import datetime
import os
import platform


def describe_machine() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            info = fh.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
        flags = set(next(line.split(":", 1)[1].split() for line in info if line.startswith("flags")))
        # Whether bf16 matmuls run natively (AMX or AVX512-BF16), which decides what --precision auto picks.
        native = sorted(flags & {"amx_bf16", "avx512_bf16"})
        cpu += f" ({', '.join(native)}: native bf16)" if native else " (no native bf16: AVX2/AVX512 only)"
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); {datetime.date.today().isoformat()}")
