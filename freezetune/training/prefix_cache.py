"""Run a frozen prefix once: when the embeddings and layers 0..N-1 are frozen, their output never changes.

So we compute the hidden states entering layer N once per example (in eval mode) and train on those:
later steps run only layers N.. and the head, and backprop stops at layer N. The price, unlike the
reference notebook: no dropout inside the frozen layers (they always run in eval mode).

How many layers are frozen is the strategy's business (`strategies.frozen_prefix`); this module only runs them,
on the families whose anatomy says the prefix cache applies (models.anatomy), and says why not on the others
(`cached_layers`). While training, the model's embeddings are swapped for a pass-through that returns the cached
states (fed as `inputs_embeds`) and its block list is cut to the blocks that train. `top_only` undoes both, so the
model is saved whole.

Decoder-only models need four things more, each of which would otherwise change the logits:
- the final norm (`norm`, GPT-2's `ln_f`) runs after the last block: the bottom stops before it, the top runs it;
- GPT-2's forward adds its position embedding to `inputs_embeds` and applies its embedding dropout to the sum: the
  cached states hold both already, so on the top the one adds nothing and the other passes them on;
- rotary models take each token's position from the default `position_ids` (0, 1, ... in every row): the cached
  batches are padded on the right, as a right-padding tokenizer's are, so every real token keeps its position
  (rotary attention depends only on the distance between positions, so left padding gives the same), and the
  cached blocks of a model that looks up each block's attention type by its place in `config.layer_types`
  (Qwen2's and Gemma 3's sliding-window layers, Gemma 3's per-type rotary base) keep their places as placeholders;
- last-token pooling finds each row's last real token in `input_ids` (without them the head takes the last
  position, padding in a right-padded batch): cached batches carry `input_ids`, which reach the head while the
  base model reads only the cached states.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..models.anatomy import Anatomy, anatomy, replace_module
from ..precision import autocast
from ..strategies import Strategy, frozen_prefix
from ..strategies.base import trainable_parameters

TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")
"""What a tokenizer gives an example; the other keys of a training example are for the loss. Which of them the
model reads is its anatomy's `inputs`."""


class _PassThroughEmbeddings(nn.Module):
    """Stands in for the embeddings: the 'embedding' of a cached example is its layer-N hidden states."""

    def forward(self, input_ids=None, inputs_embeds=None, *args, **kwargs):
        return inputs_embeds


class _NothingAdded(nn.Module):
    """Stands in for an embedding the base model adds to `inputs_embeds` itself (GPT-2's positions)."""

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros((), device=position_ids.device)  # a 0-d float leaves the sum's dtype as it is


class _CachedBlock(nn.Module):
    """Holds a cached block's place in the list (see `_top_blocks`): its output is the cached states."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


def cached_layers(model: nn.Module, strategy: Strategy, say=None) -> int:
    """How many bottom blocks the prefix cache computes once (`strategies.frozen_prefix`); 0 where it cannot apply,
    and then, if the strategy leaves the bottom frozen, `say` (if given) is told why."""
    body = anatomy(model)
    if body.prefix_cache:
        return frozen_prefix(model, strategy)
    if say is not None and body.blocks and _bottom_never_trains(model, strategy, body):
        say(f"prefix cache off: {_why_not(body)}; the frozen bottom runs at every step")
    return 0


def _bottom_never_trains(model: nn.Module, strategy: Strategy, body: Anatomy) -> bool:
    training = {id(p) for p in trainable_parameters(model, strategy)}
    bottom = [*body.embeddings, *body.blocks[0].modules]
    return not any(id(p) in training for module in bottom for p in module.parameters())


def _why_not(body: Anatomy) -> str:
    if body.family is None:
        return f"model type '{body.model_type}' is not among the families freezetune knows"
    if len(body.stack_paths) > 1:
        return f"model type '{body.model_type}' is an encoder-decoder (its decoder reads the encoder's output)"
    return f"not shown exact for model type '{body.model_type}'"


def _checked(model: nn.Module) -> Anatomy:
    body = anatomy(model)
    if not body.prefix_cache:
        raise ValueError(f"the prefix cache does not apply to model type '{body.model_type}' (see models.anatomy)")
    return body


@contextlib.contextmanager
def _swapped(model: nn.Module, swaps: dict[str, nn.Module], hook=None):
    """Temporarily put the modules of `swaps` at their paths under the base model (and `hook` before its forward)."""
    base = model.base_model
    saved = {where: replace_module(base, where, module) for where, module in swaps.items()}
    handle = base.register_forward_pre_hook(hook, with_kwargs=True) if hook else None
    try:
        yield model
    finally:
        if handle is not None:
            handle.remove()
        for where, module in saved.items():
            replace_module(base, where, module)


def _bottom(model: nn.Module, n: int):
    """Context: the base model runs embeddings + blocks 0..n-1 and gives the states entering block n (not their
    final norm: that runs on the top)."""
    body = _checked(model)
    (path,) = body.stack_paths
    swaps = {path: nn.ModuleList([block.module for block in body.blocks[:n]])}
    if body.final_norm_path:
        swaps[body.final_norm_path] = nn.Identity()
    return _swapped(model, swaps)


def top_only(model: nn.Module, n: int):
    """Context: the model runs blocks n.. on cached `inputs_embeds` (see `encode_prefix`).

    The first embedding module turns `inputs_embeds` into the states entering the blocks; those the base model adds
    (GPT-2's positions) add nothing; the others (ELECTRA's projection, GPT-2's dropout) act on the first's output,
    so with cached states they pass them on unchanged.
    """
    body = _checked(model)
    (path,) = body.stack_paths
    swaps = {path: nn.ModuleList(_top_blocks(model, [block.module for block in body.blocks], n))}
    for i, embedding in enumerate(body.embedding_paths):
        swaps[embedding] = (_PassThroughEmbeddings() if i == 0 else
                            _NothingAdded() if embedding in body.added_embedding_paths else nn.Identity())
    return _swapped(model, swaps, hook=_cached_states_only)


def _top_blocks(model: nn.Module, blocks: list[nn.Module], n: int) -> list[nn.Module]:
    """Blocks n..; where the base model reads `config.layer_types[i]` for the block at place i, the cached blocks
    keep their places (as placeholders), so each block that runs keeps its attention type and rotary base."""
    if getattr(model.config, "layer_types", None) is None:
        return blocks[n:]
    return [_CachedBlock() for _ in blocks[:n]] + blocks[n:]


def _cached_states_only(module: nn.Module, args: tuple, kwargs: dict):
    """Before the base model's forward: given cached states, it reads them alone (`input_ids` are for the head)."""
    if kwargs.get("inputs_embeds") is None:
        return None
    if args:
        args = (None, *args[1:])
    else:
        kwargs["input_ids"] = None
    return args, kwargs


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
    with _bottom(model, n):
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
    """Examples as cached layer-N states; `input_ids` stays so the Trainer's length grouping still works (and
    last-token pooling), and what the loss reads (`labels`, distillation's soft targets) passes through."""

    def __init__(self, features: list[dict], states: list[torch.Tensor]):
        self.features, self.states = features, states

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        feature = self.features[i]
        targets = {key: value for key, value in feature.items() if key not in TOKEN_KEYS}
        return {"input_ids": feature["input_ids"], "inputs_embeds": self.states[i], **targets}


def collate_cached(examples: list[dict], pad_token_id: int | None = None) -> dict[str, torch.Tensor]:
    """Pad cached states to the batch's longest example, on the right; the mask marks the real tokens. With
    `pad_token_id` (the model's) the examples' `input_ids` come too, padded with it: last-token pooling reads them."""
    width = max(len(e["inputs_embeds"]) for e in examples)
    hidden = examples[0]["inputs_embeds"].shape[-1]
    embeds = torch.zeros(len(examples), width, hidden)
    mask = torch.zeros(len(examples), width, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example["inputs_embeds"])
        embeds[row, :length] = example["inputs_embeds"]
        mask[row, :length] = 1
    batch = {"inputs_embeds": embeds, "attention_mask": mask}
    if pad_token_id is not None and "input_ids" in examples[0]:
        batch["input_ids"] = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
        for row, example in enumerate(examples):
            batch["input_ids"][row, : len(example["input_ids"])] = torch.as_tensor(example["input_ids"])
    # The rest (labels; soft targets): one value or row per example, stacked (ints to int64, floats to float32).
    targets = {key: torch.tensor([e[key] for e in examples]) for key in examples[0]
               if key not in TOKEN_KEYS and key != "inputs_embeds"}
    return {**batch, **targets}
