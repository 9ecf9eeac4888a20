"""R-Drop (Liang et al. 2021): agreement between two dropout masks as a regulariser (`--rdrop ALPHA`).

Each training batch of n rows goes through the model as one batch of 2n, the rows twice, so the two copies of a
row see different dropout masks. The loss is the run's loss (`--loss`, class weights) averaged over all 2n rows,
plus ALPHA/2 x the symmetric KL divergence between the two copies' predicted distributions, averaged over the
n rows. That is the paper's L = CE1 + CE2 + ALPHA x (KL(p1||p2) + KL(p2||p1)) / 2, halved, so ALPHA means what it
means there. Evaluation runs each row once. It costs twice the compute of a training step. The train loss the
run logs includes the KL term; the validation loss does not.

One batch of 2n rather than two forward passes: the same masks' independence, one kernel launch per layer. It
works on every fast path: the prefix cache's cached bottom has no dropout anyway (it is computed in eval mode),
and the rows that reach the trained top are duplicated like any others.
"""

from __future__ import annotations

import torch
from transformers import Trainer

from ..losses.terms import batch_mean, symmetric_kl


class RDropTrainer(Trainer):
    """A Trainer whose training loss is R-Drop's; evaluation and everything else are the Trainer's own."""

    def __init__(self, *args, rdrop_alpha: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.rdrop_alpha = rdrop_alpha

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        twice = {key: torch.cat([value, value]) if torch.is_tensor(value) else value for key, value in inputs.items()}
        items = None if num_items_in_batch is None else 2 * num_items_in_batch
        loss, outputs = super().compute_loss(model, twice, return_outputs=True, num_items_in_batch=items)
        first, second = outputs["logits"].chunk(2)  # (n, classes) each: row i and its copy
        loss = loss + self.rdrop_alpha / 2 * batch_mean(symmetric_kl(first, second), num_items_in_batch)
        return (loss, outputs) if return_outputs else loss
