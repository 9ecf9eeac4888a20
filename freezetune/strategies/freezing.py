"""Strategies that choose whole blocks: full fine-tuning, freezing the bottom layers, the top layers, the head.

`freezeN` keeps the embeddings trainable, as the reference notebook does; `emb` freezes them too. With the
embeddings and layers 0..N-1 frozen, the prefix cache computes their output once (see training/prefix_cache).
Layers count in depth order through the whole model (models.anatomy): an encoder-decoder's encoder first.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models.anatomy import anatomy
from .base import Strategy, register

register("full")(Strategy)


def freeze(modules) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad = False


@register("freeze")
@dataclass
class FreezeBottom(Strategy):
    """Freeze layers 0..N-1 (blocks in depth order; the embeddings stay trainable unless `emb` is added)."""

    layers: int
    stage = "restriction"
    positional = "layers"
    glue_positional = True
    summary = "encoder layers 0..N-1 frozen; the embeddings still train (add +emb to freeze them)"

    def describe(self, within=None, layers="encoder layers"):
        embeddings = "frozen too" if _has(within, FreezeEmbeddings) else "trainable"
        frozen = f"{layers} 0..{self.layers - 1} frozen (embeddings {embeddings})"
        alone = not any(part.stage == "method" for part in getattr(within, "parts", []))  # e.g. +lora says the rest
        return frozen + ("; the layers above and the head trained" if alone else "")

    def __post_init__(self):
        if self.layers < 0:
            raise ValueError(f"freeze needs a number of layers >= 0, got {self.layers}")

    def check(self, anatomy, frozen_bottom=0):
        anatomy.check_count(self.layers, "freeze")

    def restrict(self, model, plan):
        freeze(m for block in anatomy(model).blocks[: self.layers] for m in block.modules)

    def note(self, model):
        return stacks_note(model, anatomy(model).blocks[: self.layers], f"freeze{self.layers} freezes")

    def frozen_bottom(self) -> int:
        return self.layers

    def spec(self) -> str:
        return f"freeze{self.layers}"


@register("emb")
@dataclass
class FreezeEmbeddings(Strategy):
    """Freeze the embeddings (word, position, token type, their LayerNorm)."""

    stage = "restriction"
    summary = "the embeddings frozen"

    def describe(self, within=None, layers="encoder layers"):
        return "" if _has(within, FreezeBottom) else self.summary  # freezeN+emb: said by freezeN

    def check(self, anatomy, frozen_bottom=0):
        anatomy.require_embeddings("emb")

    def restrict(self, model, plan):
        freeze(anatomy(model).embeddings)


@register("head")
@dataclass
class HeadOnly(Strategy):
    """Only the classification head trains: a linear probe on frozen features."""

    summary = "only the classification head trained, the encoder frozen (a linear probe)"
    lr_grid = (1e-3, 3e-3, 1e-2)

    def configure(self, model, plan):
        for p in model.parameters():
            p.requires_grad = False
        for p in anatomy(model).head_parameters():
            p.requires_grad = True


@register("top")
@dataclass
class TopLayers(Strategy):
    """Only the top N layers (blocks in depth order), the final norm above them (decoders) and the head train."""

    layers: int
    positional = "layers"
    glue_positional = True
    summary = "only the top N encoder layers and the head train"

    def __post_init__(self):
        if self.layers < 0:
            raise ValueError(f"top needs a number of layers >= 0, got {self.layers}")

    def check(self, anatomy, frozen_bottom=0):
        anatomy.check_count(self.layers, "top")

    def configure(self, model, plan):
        body = anatomy(model)
        HeadOnly().configure(model, plan)
        top = [p for block in body.blocks[len(body.blocks) - self.layers:] for p in block.parameters()]
        if top and body.final_norm is not None:  # the norm after the top layer (GPT-2's ln_f) trains with it
            top += list(body.final_norm.parameters())
        for p in top:
            p.requires_grad = True

    def describe(self, within=None, layers="encoder layers"):
        return f"only the top {self.layers} {layers} and the head train"

    def note(self, model):
        blocks = anatomy(model).blocks
        return stacks_note(model, blocks[len(blocks) - self.layers:], f"top{self.layers} trains")

    def spec(self) -> str:
        return f"top{self.layers}"


def stacks_note(model, blocks, what: str) -> str:
    """`freeze3 freezes encoder layers 0-1 and decoder layer 0`: which stack a layer count reaches, said for
    encoder-decoders (layers count through the encoder, then the decoder); "" for one stack, where it is plain."""
    if len({block.stack for block in anatomy(model).blocks}) < 2 or not blocks:
        return ""
    spans = {}
    for block in blocks:
        spans.setdefault(block.stack, []).append(block.index)
    words = [f"{stack} layer{'s' if len(i) > 1 else ''} {i[0]}{f'-{i[-1]}' if len(i) > 1 else ''}"
             for stack, i in spans.items()]
    return f"{what} {' and '.join(words)} (layers count the encoder's first)"


def _has(combination, kind: type) -> bool:
    return combination is not None and any(isinstance(part, kind) for part in getattr(combination, "parts", []))
