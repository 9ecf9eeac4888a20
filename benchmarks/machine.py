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
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); {datetime.date.today().isoformat()}")
