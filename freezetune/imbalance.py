"""Kept so existing imports work: the losses and class weights now live in `freezetune.losses`."""

from __future__ import annotations

from .losses import class_weights, make_loss

__all__ = ["class_weights", "weighted_cross_entropy"]


def weighted_cross_entropy(weights):
    """The class-weighted cross-entropy `Trainer(compute_loss_func=...)`; prefer `make_loss("ce", weights)`."""
    return make_loss("ce", weights)
