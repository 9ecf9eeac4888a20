"""Run a frozen prefix once: when the embeddings and layers 0..N-1 are frozen, their output never changes.

So we compute the hidden states entering layer N once per example (in eval mode) and train on those:
later steps run only layers N.. and the head, and backprop stops at layer N. The price, unlike the
reference notebook: no dropout inside the frozen layers (they always run in eval mode).

How many layers are frozen is the strategy's business (`strategies.frozen_prefix`); this module only runs them,
on the families whose anatomy says the prefix cache applies (models.anatomy: one stack of blocks, no final norm,
embeddings that take `inputs_embeds`). While training, the model's embeddings are swapped for a pass-through that
returns the cached states (fed as `inputs_embeds`) and its block list is cut to the blocks that train. `top_only`
undoes both, so the model is saved whole.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..models.anatomy import anatomy, replace_module
from ..precision import autocast

TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")
"""What a tokenizer gives an example; the other keys of a training example are for the loss. Which of them the
model reads is its anatomy's `inputs`."""


class _PassThroughEmbeddings(nn.Module):
    """Stands in for the embeddings: the 'embedding' of a cached example is its layer-N hidden states."""

    def forward(self, input_ids=None, inputs_embeds=None, *args, **kwargs):
        return inputs_embeds


def _blocks(model: nn.Module) -> tuple[str, list[nn.Module]]:
    """The path of the model's one block list (relative to its base model) and its blocks."""
    body = anatomy(model)
    if not body.prefix_cache:
        raise ValueError(f"the prefix cache does not apply to model type '{body.model_type}' (see models.anatomy)")
    (path,) = body.stack_paths
    return path, [block.module for block in body.blocks]


@contextlib.contextmanager
def _swapped(model: nn.Module, layers: list[nn.Module], embeddings: bool):
    """Temporarily run only `layers`; with `embeddings`, also take `inputs_embeds` as the layer input.

    The first embedding module turns `inputs_embeds` into the states entering the blocks; the others (ELECTRA's
    projection) act on its output, so with cached states they pass them through unchanged.
    """
    base, body = model.base_model, anatomy(model)
    path, _ = _blocks(model)
    saved = {path: replace_module(base, path, nn.ModuleList(layers))}
    if embeddings:
        for i, embedding in enumerate(body.embedding_paths):
            saved[embedding] = replace_module(base, embedding, _PassThroughEmbeddings() if i == 0 else nn.Identity())
    try:
        yield model
    finally:
        for where, module in saved.items():
            replace_module(base, where, module)


def top_only(model: nn.Module, n: int):
    """Context: the model runs blocks n.. on cached `inputs_embeds` (see `encode_prefix`)."""
    return _swapped(model, _blocks(model)[1][n:], embeddings=True)


@torch.inference_mode()
def encode_prefix(model: nn.Module, features: list[dict], n: int, batch_size: int, precision: str = "fp32") -> list[torch.Tensor]:
    """Hidden states entering layer n for each tokenized example: a (tokens, hidden) tensor each.

    Runs embeddings + layers 0..n-1 only, in eval mode, in length-sorted batches (less padding), at the
    training run's (resolved) precision; the states are kept in float32.
    """
    was_training = model.training
    model.eval()
    states: list[torch.Tensor | None] = [None] * len(features)
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    inputs = anatomy(model).inputs
    device = next(model.parameters()).device
    with _swapped(model, _blocks(model)[1][:n], embeddings=False):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(features[i]["input_ids"]) for i in idx)
            batch = {key: torch.zeros(len(idx), width, dtype=torch.long) for key in inputs if key in features[idx[0]]}
            for row, i in enumerate(idx):
                for key in batch:
                    values = features[i][key]
                    batch[key][row, : len(values)] = torch.tensor(values)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(precision, device.type):
                hidden = model.base_model(**batch).last_hidden_state
            for row, i in enumerate(idx):
                states[i] = hidden[row, : len(features[i]["input_ids"])].float().cpu().clone()
    model.train(was_training)
    return states


class CachedPrefixDataset(torch.utils.data.Dataset):
    """Examples as cached layer-N states; `input_ids` stays so the Trainer's length grouping still works, and what
    the loss reads (`labels`, distillation's soft targets) passes through."""

    def __init__(self, features: list[dict], states: list[torch.Tensor]):
        self.features, self.states = features, states

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        feature = self.features[i]
        targets = {key: value for key, value in feature.items() if key not in TOKEN_KEYS}
        return {"input_ids": feature["input_ids"], "inputs_embeds": self.states[i], **targets}


def collate_cached(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Pad cached states to the batch's longest example; the mask marks the real tokens."""
    width = max(len(e["inputs_embeds"]) for e in examples)
    hidden = examples[0]["inputs_embeds"].shape[-1]
    embeds = torch.zeros(len(examples), width, hidden)
    mask = torch.zeros(len(examples), width, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example["inputs_embeds"])
        embeds[row, :length] = example["inputs_embeds"]
        mask[row, :length] = 1
    # The rest (labels; soft targets): one value or row per example, stacked (ints to int64, floats to float32).
    targets = {key: torch.tensor([e[key] for e in examples]) for key in examples[0]
               if key not in TOKEN_KEYS and key != "inputs_embeds"}
    return {"inputs_embeds": embeds, "attention_mask": mask, **targets}
