"""Peak memory of one run, so runs in one long process (compare) are not charged for earlier ones."""

from __future__ import annotations

import resource
from contextlib import contextmanager
from pathlib import Path

import torch

from .precision import device_type

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


@contextmanager
def peak_memory_mb():
    """Measure peak memory (MB) during the block; yields a one-item list set on exit.

    On a GPU this is the peak of allocated device memory. On Linux the peak (VmHWM) is reset at the start so a run in
    a long `compare` process is not charged for earlier runs. Elsewhere it falls back to the lifetime peak from getrusage.
    """
    result = [0.0]
    if device_type() == "cuda":
        torch.cuda.reset_peak_memory_stats()
        yield result
        result[0] = torch.cuda.max_memory_allocated() / 2**20
        return
    try:
        _CLEAR_REFS.write_text("5")
        resettable = True
    except OSError:
        resettable = False
    try:
        yield result
    finally:
        if resettable:
            line = next(row for row in _STATUS.read_text().splitlines() if row.startswith("VmHWM:"))
            result[0] = int(line.split()[1]) / 1024
        else:  # ru_maxrss is KiB on Linux; good enough as an upper bound elsewhere.
            result[0] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
