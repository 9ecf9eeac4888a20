"""Where a BERT-like classifier keeps its parts: the one place that knows the attribute paths.

Strategies (which parameters train), the prefix cache (which layers run once) and LoRA (which modules get
adapters) all ask here, so a new encoder family is supported by adding its path once.
"""

from __future__ import annotations

from torch import nn

from ..errors import UserError

# Where each architecture keeps its stack of transformer blocks, relative to `model.base_model`.
LAYER_PATHS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")
SUPPORTED = "BERT, RoBERTa/XLM-R, DistilBERT, ELECTRA and other BERT-like encoders"


def layer_stack(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the list of transformer blocks and its attribute name (e.g. `bert.encoder`, `layer`).

    Returned as (owner, name) rather than the list so the prefix cache can swap the list for a shorter one.
    """
    base = model.base_model
    for path in LAYER_PATHS:
        *parents, attr = path.split(".")
        owner = base
        for name in parents:
            owner = getattr(owner, name, None)
        if isinstance(getattr(owner, attr, None), nn.ModuleList):
            return owner, attr
    raise UserError(
        f"cannot find the encoder layers of model type '{model.config.model_type}': layer-wise strategies support "
        f"{SUPPORTED}; use the strategy full"
    )


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a sequence classifier, bottom first."""
    owner, attr = layer_stack(model)
    return getattr(owner, attr)


def embedding_modules(model: nn.Module) -> list[nn.Module]:
    """The modules below the first encoder layer (ELECTRA adds a projection after its embeddings)."""
    base = model.base_model
    if getattr(base, "embeddings", None) is None:
        raise UserError(f"cannot find the embeddings of model type '{model.config.model_type}': use the strategy full")
    return [base.embeddings] + ([base.embeddings_project] if hasattr(base, "embeddings_project") else [])


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter outside the encoder (embeddings + layers): the classification head, and a pooler if any."""
    encoder = {id(p) for p in model.base_model.parameters()}
    return [p for p in model.parameters() if id(p) not in encoder]
