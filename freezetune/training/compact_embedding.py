"""Word-embedding updates that cost what the training data touches, not what the vocabulary holds.

The builtin model's vocabulary has 250k rows (96M of its 118M parameters), but a Chinese dataset uses a
few thousand of them. With AdamW and no weight decay (the Trainer's default), a row that never receives
a gradient never moves: its moments stay zero. Yet a dense optimizer step still reads and writes all
250k rows, and backward builds a dense 250k-row gradient, every step.

`CompactEmbedding` makes only the rows seen in the training data a parameter; every other row is a
frozen buffer. With weight decay 0 the result is the same as dense training, at a fraction of the cost.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from ..models.anatomy import anatomy


class CompactEmbedding(nn.Module):
    """An `nn.Embedding` whose trainable part is only the rows listed in `rows`."""

    def __init__(self, full: nn.Embedding, rows: torch.Tensor):
        super().__init__()
        self.register_buffer("frozen", full.weight.detach(), persistent=False)
        self.register_buffer("rows", rows, persistent=False)
        self.weight_rows = nn.Parameter(full.weight.detach()[rows].clone())
        remap = torch.full((full.num_embeddings,), -1, dtype=torch.long, device=rows.device)
        remap[rows] = torch.arange(len(rows), device=rows.device)
        self.register_buffer("remap", remap, persistent=False)  # vocabulary id -> trainable row, or -1

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        slot = self.remap[input_ids]
        trained = F.embedding(slot.clamp(min=0), self.weight_rows)
        return torch.where((slot >= 0).unsqueeze(-1), trained, F.embedding(input_ids, self.frozen))


def seen_token_ids(features: list[dict]) -> torch.Tensor:
    """Sorted ids of every token that occurs in the (unpadded) tokenized training examples."""
    return torch.unique(torch.tensor([t for f in features for t in f["input_ids"]], dtype=torch.long))


@contextlib.contextmanager
def compact_word_embeddings(model: nn.Module, features: list[dict], weight_decay: float, say=None):
    """Context: train only the word-embedding rows the data uses; written back into the model on exit.

    Does nothing when the word embeddings are frozen, with weight decay (untouched rows would then decay in
    dense training, so the two would differ; `say`, if given, is told so), or on a family whose anatomy does not
    list this fast path (tied or shared embeddings, e.g. an encoder-decoder's, need their own care).
    """
    full = model.get_input_embeddings()
    if not anatomy(model).compact_embeddings or not isinstance(full, nn.Embedding) or not full.weight.requires_grad:
        yield None
        return
    if weight_decay != 0:
        if say is not None:
            say(f"compact embeddings off: --weight-decay {weight_decay:g} would decay rows the data never uses")
        yield None
        return
    compact = CompactEmbedding(full, seen_token_ids(features).to(full.weight.device))
    model.set_input_embeddings(compact)
    try:
        yield compact
    finally:
        with torch.no_grad():
            full.weight[compact.rows] = compact.weight_rows.detach()
        model.set_input_embeddings(full)
