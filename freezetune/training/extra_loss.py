"""What the Trainers with an extra training-loss term (R-Drop, distillation) share."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def log_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """log softmax over the classes, in float32 at least: bf16/fp16 lose the small probabilities rare classes live on."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


def batch_mean(per_row: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """A per-row term normalised like the Trainer's loss: over the rows the Trainer counts (the whole accumulation
    window, all devices) when it counts them, else over this batch's rows."""
    return per_row.mean() if num_items_in_batch is None else per_row.sum() / num_items_in_batch
