"""`freezetune compare`: the freezing study (strategies x seeds, baselines, statistics, report).

CLI hook: `add_compare_arguments(subparser)`, then `compare_from_args(args)`.
"""

from __future__ import annotations

from pathlib import Path

from freezetune.compare.options import CompareOptions, add_compare_arguments, options_from_args
from freezetune.compare.study import compare

__all__ = ["CompareOptions", "add_compare_arguments", "compare", "compare_from_args"]


def compare_from_args(args) -> Path:
    """Run `compare` from parsed arguments (defaults < --config YAML < flags); returns the output folder."""
    return compare(options_from_args(args))
