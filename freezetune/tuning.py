"""Tuning strategies: which parameters train. Small named pieces, as in Lightning's fine-tuning callbacks.

A strategy is `none` (full fine-tuning), `N` (freeze encoder layers 0..N-1; the embeddings stay trainable
unless asked, as in the reference notebook) or `head` (only the classification head trains).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import UserError

# Where each architecture keeps its stack of transformer blocks, relative to `model.base_model`.
LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")
SUPPORTED = "BERT, RoBERTa/XLM-R, DistilBERT, ELECTRA and other BERT-like encoders"


@dataclass(frozen=True)
class Strategy:
    frozen_layers: int | None
    """Encoder layers 0..N-1 frozen; None means every parameter of the encoder (the `head` strategy)."""
    freeze_embeddings: bool

    @property
    def name(self) -> str:
        if self.frozen_layers is None:
            return "head"
        if self.frozen_layers == 0 and not self.freeze_embeddings:
            return "full"
        return f"freeze{self.frozen_layers}" + ("+emb" if self.freeze_embeddings else "")


def parse_strategy(freeze: str, freeze_embeddings: bool = False) -> Strategy:
    """`--freeze none|N|head` plus `--freeze-embeddings` as a Strategy."""
    value = str(freeze).strip().lower()
    if value == "head":
        return Strategy(None, True)
    if value in ("none", "0", "full"):
        return Strategy(0, freeze_embeddings)
    if value.isdigit():
        return Strategy(int(value), freeze_embeddings)
    raise UserError(f"--freeze {freeze!r} is not valid: use none, a number of layers (e.g. 6) or head")


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a sequence classifier, bottom first."""
    base = model.base_model
    for path in LAYER_PATHS:
        module = base
        for attr in path.split("."):
            module = getattr(module, attr, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise UserError(
        f"cannot find the encoder layers of model type '{model.config.model_type}': layer freezing supports "
        f"{SUPPORTED}; use --freeze none"
    )


def embedding_modules(model: nn.Module) -> list[nn.Module]:
    """The modules below the first encoder layer (ELECTRA adds a projection after its embeddings)."""
    base = model.base_model
    if getattr(base, "embeddings", None) is None:
        raise UserError(f"cannot find the embeddings of model type '{model.config.model_type}': use --freeze none")
    return [base.embeddings] + ([base.embeddings_project] if hasattr(base, "embeddings_project") else [])


def apply_strategy(model: nn.Module, strategy: Strategy) -> dict[str, int]:
    """Set `requires_grad` for the strategy; returns the trainable and total parameter counts."""
    for p in model.parameters():
        p.requires_grad = True
    if strategy.frozen_layers is None:
        frozen = [model.base_model]
    else:
        layers = encoder_layers(model)
        if strategy.frozen_layers > len(layers):
            raise UserError(
                f"--freeze {strategy.frozen_layers} is more than the model's {len(layers)} encoder layers: "
                f"use 0..{len(layers)} or head"
            )
        frozen = list(layers[: strategy.frozen_layers])
        if strategy.freeze_embeddings:
            frozen += embedding_modules(model)
    for module in frozen:
        for p in module.parameters():
            p.requires_grad = False
    return parameter_counts(model)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    return {
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
    }
