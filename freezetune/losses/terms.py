"""The extra training-loss terms: R-Drop's symmetric KL between two dropout passes, distillation's KL to the
teachers' probabilities, and what they share. Their Trainers are training/rdrop.py and training/distill.py."""

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


def symmetric_kl(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(KL(p1||p2) + KL(p2||p1)) / 2 per row, for two (rows, classes) tensors of logits, in float32 at least."""
    log_p, log_q = log_probabilities(first), log_probabilities(second)
    return 0.5 * ((log_p.exp() * (log_p - log_q)).sum(-1) + (log_q.exp() * (log_q - log_p)).sum(-1))


def distillation_kl(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """KL(targets || softmax(logits)) per row, in float32 at least (a target of exactly 0 contributes 0)."""
    log_q = log_probabilities(logits)
    return F.kl_div(log_q, targets.to(log_q.dtype), reduction="none").sum(-1)
