"""Tuning strategies: which parameters train. `parse_strategy(text)` is the one way in.

Importing this package registers every strategy; a new one is a module here with one `@register` class,
imported below.
"""

# Registry order is the canonical order of a combination's parts (`freeze6+emb+gradual`): keep gradual last,
# so its restriction runs after the others (see schedules.GradualUnfreezing).
# The import order is the registry order, so isort keeps out:
# isort: off
from . import freezing  # noqa: F401  (registers full, freezeN, emb, head, topN)
from . import bitfit  # noqa: F401  (registers bitfit)
from . import lora  # noqa: F401  (registers lora)
from . import schedules  # noqa: F401  (registers llrd, gradual)
# isort: on

from .base import (
    REGISTRY,
    Combination,
    Strategy,
    TrainPlan,
    check_fits,
    frozen_prefix,
    parameter_counts,
    parse_strategy,
    prepare,
    register,
    trainable_parameters,
    valid_names,
)
from .freezing import HeadOnly

__all__ = ["REGISTRY", "Combination", "HeadOnly", "Strategy", "TrainPlan", "check_fits", "frozen_prefix", "parameter_counts",
           "parse_strategy", "prepare", "register", "trainable_parameters", "valid_names", "legacy_spec"]


def legacy_spec(freeze: str, freeze_embeddings: bool = False) -> str:
    """`--freeze none|N|head` plus `--freeze-embeddings`, the older spelling, as a strategy spec."""
    value = str(freeze).strip().lower()
    base = {"none": "full", "0": "full"}.get(value, f"freeze{value}" if value.isdigit() else value)
    return f"{base}+emb" if freeze_embeddings and base != "head" else base
