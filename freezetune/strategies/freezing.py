"""Strategies that choose whole blocks: full fine-tuning, freezing the bottom layers, the top layers, the head.

`freezeN` keeps the embeddings trainable, as the reference notebook does; `emb` freezes them too. With the
embeddings and layers 0..N-1 frozen, the prefix cache computes their output once (see training/prefix_cache).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import UserError
from ..models.layers import embedding_modules, encoder_layers, head_parameters
from .base import Strategy, TrainPlan, register

register("full")(Strategy)


def freeze(modules) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad = False


def _check_layers(model: nn.Module, n: int, what: str) -> nn.ModuleList:
    layers = encoder_layers(model)
    if n > len(layers):
        raise UserError(f"{what}{n} asks for more than the model's {len(layers)} encoder layers: use 0..{len(layers)}")
    return layers


@register("freeze")
@dataclass
class FreezeBottom(Strategy):
    """Freeze encoder layers 0..N-1 (the embeddings stay trainable unless `emb` is added)."""

    layers: int
    stage = "restriction"
    positional = "layers"
    glue_positional = True
    summary = "encoder layers 0..N-1 frozen; the embeddings still train (add +emb to freeze them)"

    def __post_init__(self):
        if self.layers < 0:
            raise ValueError(f"freeze needs a number of layers >= 0, got {self.layers}")

    def restrict(self, model, plan):
        freeze(_check_layers(model, self.layers, "freeze")[: self.layers])

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

    def restrict(self, model, plan):
        freeze(embedding_modules(model))


@register("head")
@dataclass
class HeadOnly(Strategy):
    """Only the classification head trains: a linear probe on frozen features."""

    summary = "only the classification head trains"
    lr_grid = (1e-3, 3e-3, 1e-2)

    def configure(self, model, plan):
        for p in model.parameters():
            p.requires_grad = False
        for p in head_parameters(model):
            p.requires_grad = True


@register("top")
@dataclass
class TopLayers(Strategy):
    """Only the top N encoder layers and the head train."""

    layers: int
    positional = "layers"
    glue_positional = True
    summary = "only the top N encoder layers and the head train"

    def __post_init__(self):
        if self.layers < 0:
            raise ValueError(f"top needs a number of layers >= 0, got {self.layers}")

    def configure(self, model, plan):
        layers = _check_layers(model, self.layers, "top")
        HeadOnly().configure(model, plan)
        for layer in list(layers)[len(layers) - self.layers:]:
            for p in layer.parameters():
                p.requires_grad = True

    def spec(self) -> str:
        return f"top{self.layers}"
