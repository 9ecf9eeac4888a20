"""BitFit (Ben Zaken et al., 2022): only the bias terms train, here with the norms' parameters and the head.

Biases and LayerNorms are a tiny share of an encoder (about 0.1% of BERT-base) yet move its features enough for
many classification tasks. Parameters are picked by module, not by name, so every family's own spelling
(`LayerNorm`, `sa_layer_norm`, ...) is covered; which classes are norms (nn.LayerNorm, T5LayerNorm, LlamaRMSNorm,
...) the model's anatomy says.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..models.anatomy import anatomy
from .base import Strategy, TrainPlan, register


def bias_and_norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every `bias` parameter of any module, and every parameter of a norm (LayerNorm, RMSNorm, ...)."""
    norms = anatomy(model).norm_classes
    found = []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name == "bias" or isinstance(module, norms):
                found.append(p)
    return found


@register("bitfit")
@dataclass
class BitFit(Strategy):
    """Only biases, norm parameters and the classification head train."""

    summary = "only biases, norm (LayerNorm/RMSNorm) parameters and the head train"
    lr_grid = (3e-4, 1e-3, 3e-3)  # few parameters move: they want larger steps than full fine-tuning

    def configure(self, model: nn.Module, plan: TrainPlan) -> None:
        for p in model.parameters():
            p.requires_grad = False
        for p in bias_and_norm_parameters(model) + anatomy(model).head_parameters():
            p.requires_grad = True

    def note(self, model: nn.Module) -> str:
        """Said where the layers hold no bias at all (Llama, Mistral, Gemma, T5): BitFit then trains the norms and
        the head only, which is what the counts show but not why."""
        body = anatomy(model)
        head = {id(p) for p in body.head_parameters()}
        if any(name.endswith("bias") and id(p) not in head for name, p in model.named_parameters()):
            return ""
        norms = sorted({type(m).__name__ for m in body.norms(model)})
        return f"bitfit: {body.model_type} has no biases in its layers, only its norms ({', '.join(norms)}) and the head train"
