"""Word-embedding updates that cost what the training data touches, not what the vocabulary holds.

The builtin model's vocabulary has 250k rows (96M of its 118M parameters), but a Chinese dataset uses a
few thousand of them. With AdamW and no weight decay (the Trainer's default), a row that never receives
a gradient never moves: its moments stay zero. Yet a dense optimizer step still reads and writes all
250k rows, and backward builds a dense 250k-row gradient, every step.

`CompactEmbedding` makes only the rows seen in the training data a parameter; every other row is a
frozen buffer. With weight decay 0 the result is the same as dense training, at a fraction of the cost (Qwen's
151,936 rows, Gemma's 262,144: a step reads and writes only the rows of its batch).

Where the matrix is shared it stays one: every embedding module that holds it (T5's and BART's `shared`,
`encoder.embed_tokens` and `decoder.embed_tokens`) reads the one compact embedding while training, and the rows
trained go back into the one matrix. A matrix tied to something other than an embedding (an output layer reads
every row) turns the fast path off, as does an embedding module that computes anything but its rows (times the
scale of Gemma's and BART's scaled word embeddings): the log says why.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from ..models.anatomy import anatomy, replace_module


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
        # Gemma's scaled word embeddings multiply their rows by a buffer, BART's by a float.
        scale = getattr(full, "embed_scale", None)
        self.register_buffer("tensor_scale", scale.detach().clone() if torch.is_tensor(scale) else None,
                             persistent=False)
        self.float_scale = None if torch.is_tensor(scale) else scale

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        slot = self.remap[input_ids]
        trained = F.embedding(slot.clamp(min=0), self.weight_rows)
        rows = torch.where((slot >= 0).unsqueeze(-1), trained, F.embedding(input_ids, self.frozen))
        if self.tensor_scale is not None:
            return rows * self.tensor_scale.to(rows.dtype)
        return rows if self.float_scale is None else rows * self.float_scale


def seen_token_ids(features: list[dict]) -> torch.Tensor:
    """Sorted ids of every token that occurs in the (unpadded) tokenized training examples."""
    return torch.unique(torch.tensor([t for f in features for t in f["input_ids"]], dtype=torch.long))


@contextlib.contextmanager
def compact_word_embeddings(model: nn.Module, features: list[dict], weight_decay: float, say=None):
    """Context: train only the word-embedding rows the data uses; written back into the model on exit.

    Does nothing when the word embeddings are frozen. Where it cannot be exact it does nothing either and `say`
    (if given) is told why: with weight decay (untouched rows would then decay in dense training), on a family
    whose anatomy does not list this fast path, a matrix tied to a layer other than an embedding, an embedding
    module that computes more than a scaled row lookup.
    """
    full = model.get_input_embeddings()
    if not isinstance(full, nn.Embedding) or not full.weight.requires_grad:
        yield None
        return
    holders = _holders(model, full)
    why = _why_not(model, full, holders, weight_decay)
    compact = None
    if why is None:
        compact = CompactEmbedding(full, _trainable_rows(model, features, full))
        why = None if _same_lookup(compact, full) else f"{type(full).__name__} computes more than a row lookup"
    if why is not None:
        if say is not None:
            say(f"compact embeddings off: {why}")
        yield None
        return
    originals = {path: replace_module(model, path, compact) for path in holders}
    try:
        yield compact
    finally:
        with torch.no_grad():
            full.weight[compact.rows] = compact.weight_rows.detach()
        for path, module in originals.items():
            replace_module(model, path, module)


def _holders(model: nn.Module, full: nn.Embedding) -> dict[str, nn.Module]:
    """Every module holding the word-embedding matrix, by its path in the model (one, or three in T5)."""
    found = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if parameter is full.weight:
            path, _, attribute = name.rpartition(".")
            found[path] = model.get_submodule(path) if attribute == "weight" else None
    return found


def _why_not(model: nn.Module, full: nn.Embedding, holders: dict[str, nn.Module], weight_decay: float) -> str | None:
    if weight_decay != 0:
        return f"--weight-decay {weight_decay:g} would decay rows the data never uses"
    body = anatomy(model)
    if not body.compact_embeddings:
        known = "is not among the families freezetune knows" if body.family is None else "is not shown exact"
        return f"model type '{body.model_type}' {known}"
    tied = [path for path, module in holders.items() if not isinstance(module, nn.Embedding)]
    if tied:
        return f"the word embeddings are tied to {tied[0]}, which reads every row"
    if full.max_norm is not None:
        return "the word embeddings renormalise the rows they read (max_norm)"
    return None


def _trainable_rows(model: nn.Module, features: list[dict], full: nn.Embedding) -> torch.Tensor:
    """The rows the data uses and the one an encoder-decoder adds itself (its decoder's start token: T5 trains it),
    but the padding row: nn.Embedding never gives that one a gradient."""
    rows = seen_token_ids(features)
    start = getattr(model.config, "decoder_start_token_id", None) if model.config.is_encoder_decoder else None
    if isinstance(start, int):
        rows = torch.unique(torch.cat([rows, torch.tensor([start])]))
    if full.padding_idx is not None:
        rows = rows[rows != full.padding_idx]
    return rows.to(full.weight.device)


@torch.no_grad()
def _same_lookup(compact: CompactEmbedding, full: nn.Embedding) -> bool:
    """Whether the compact embedding gives what `full` gives, on rows it trains and rows it keeps frozen."""
    kept = torch.nonzero(compact.remap < 0).flatten()
    probe = torch.cat([compact.rows[:8], kept[:4], kept[-4:]]).unsqueeze(0)
    return torch.equal(compact(probe), full(probe))
