"""LoRA (Hu et al., 2021) through peft: low-rank adapters on the attention query and value projections.

peft injects the adapters into the transformers model in place (`inject_adapter_in_model`), so the model keeps
its class and its attribute paths, which the layer finder and the prefix cache rely on. The head (everything
outside the encoder) trains whole, as peft's `modules_to_save`, so that it is part of the adapter too.

Options: `lora:r=8,alpha=16,dropout=0.1,targets=auto`. `targets` names the Linear layers to adapt inside each
encoder layer by their last name, joined with `/` (`+` already joins strategies, `,` options):
`lora:targets=query/key/value`. `auto` picks the attention query and value projections of BERT, RoBERTa,
XLM-R and ELECTRA (`query`, `value`) and DistilBERT (`q_lin`, `v_lin`); `all` every Linear layer of the encoder
layers (attention and feed-forward, as peft's `all-linear`; the head trains whole anyway).

With a restriction such as `freeze6+lora`, adapters go on layers 6.. only, so the embeddings and layers 0..5
never change and the prefix cache computes their output once. Before saving, the adapters are merged into the
weights (`finalize`): the saved model is a plain transformers model with the original state_dict keys. With
`keep_adapter`, the adapter alone is also written to `adapter/`, loadable with `peft.PeftModel.from_pretrained`
over the base model.
"""

from __future__ import annotations

import copy
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import UserError
from ..models.layers import encoder_layers
from .base import Strategy, TrainPlan, register

ADAPTER = "default"  # peft's adapter name; the only adapter we inject
AUTO_TARGETS = (("query", "value"), ("q_lin", "v_lin"), ("q_proj", "v_proj"))
"""Attention query/value projections by family: BERT/RoBERTa/XLM-R/ELECTRA, DistilBERT, others."""


@register("lora")
@dataclass
class LoRA(Strategy):
    """Low-rank adapters on chosen Linear layers of the encoder (query and value by default), plus the head."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    targets: str = "auto"
    summary = "low-rank adapters on the attention query and value (targets=a/b, or all), plus the head, train"
    lr_grid = (3e-4, 1e-3, 3e-3)  # few parameters move: they want larger steps than full fine-tuning

    def __post_init__(self):
        if self.r < 1:
            raise ValueError(f"lora needs a rank r >= 1, got {self.r}")
        if self.alpha < 1:
            raise ValueError(f"lora needs alpha >= 1, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora needs 0 <= dropout < 1, got {self.dropout:g}")
        parts = self.targets.split("/")
        if not self.targets or any(not t for t in parts):
            raise ValueError(f"lora targets are layer names joined with '/', e.g. query/value; got {self.targets!r}")
        if len(parts) > 1 and {"all", "auto"} & set(parts):
            raise ValueError(f"lora targets=all and targets=auto stand alone, got {self.targets!r}: use targets=all, "
                             "or name layers such as query/value")
        # Checked here, at parse time, so a missing extra fails before any slow work.
        if importlib.util.find_spec("peft") is None:
            raise UserError("strategy lora needs the peft package: pip install 'freezetune[lora]'")

    def configure(self, model: nn.Module, plan: TrainPlan) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        for p in model.parameters():
            p.requires_grad = False
        config = LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, task_type="SEQ_CLS",
            target_modules=target_modules(model, self.targets, plan.frozen_bottom),
            modules_to_save=head_modules(model),
        )
        # peft leaves only the adapters and (a trainable copy of) the head modules trainable.
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)

    def save_extras(self, model: nn.Module, folder, keep_adapter: bool = False) -> None:
        """With `keep_adapter`, write the adapter (LoRA weights and head) alone into `folder/adapter/`."""
        if not keep_adapter:
            return
        from peft.utils import SAFETENSORS_WEIGHTS_NAME, get_peft_model_state_dict
        from safetensors.torch import save_file

        target = Path(folder) / "adapter"
        config = copy.copy(model.peft_config[ADAPTER])
        config.base_model_name_or_path = model.name_or_path
        config.save_pretrained(target)
        weights = get_peft_model_state_dict(model, adapter_name=ADAPTER)
        # The keys as `PeftModel.save_pretrained` writes them: relative to the PeftModel wrapping the model.
        save_file({f"base_model.model.{k}": v.detach().contiguous() for k, v in weights.items()},
                  target / SAFETENSORS_WEIGHTS_NAME, metadata={"format": "pt"})

    def finalize(self, model: nn.Module) -> nn.Module:
        return merge_and_unload(model)


def target_modules(model: nn.Module, targets: str, first_layer: int) -> list[str]:
    """Full names of the Linear layers to adapt, in encoder layers `first_layer`.. (the ones that train)."""
    layers = encoder_layers(model)
    if first_layer >= len(layers):
        raise UserError(f"strategy lora: all {len(layers)} encoder layers are frozen, none is left for adapters: "
                        "freeze fewer layers, or use the strategy head")
    wanted = _target_leaves(layers[0], targets, model.config.model_type)
    full_name = {id(module): name for name, module in model.named_modules()}
    return [f"{full_name[id(layer)]}.{name}"
            for layer in list(layers)[first_layer:]
            for name, module in layer.named_modules()
            if isinstance(module, nn.Linear) and name.rpartition(".")[2] in wanted]


def _target_leaves(layer: nn.Module, targets: str, model_type: str) -> set[str]:
    """The last names of the Linear layers to adapt, checked against an encoder layer."""
    available = sorted({name.rpartition(".")[2] for name, m in layer.named_modules() if isinstance(m, nn.Linear)})
    if targets == "all":
        return set(available)
    if targets == "auto":
        for pair in AUTO_TARGETS:
            if set(pair) <= set(available):
                return set(pair)
        raise UserError(f"strategy lora: no attention query/value layers found in model type '{model_type}': "
                        f"name them with lora:targets=NAME/NAME, from {'/'.join(available)}, or use targets=all")
    wanted = set(targets.split("/"))
    missing = sorted(wanted - set(available))
    if missing:
        raise UserError(f"strategy lora: the encoder layers of '{model_type}' have no Linear layer named "
                        f"{', '.join(missing)}: choose targets from {'/'.join(available)}, or targets=all (every one) "
                        "or targets=auto (query/value)")
    return wanted


def head_modules(model: nn.Module) -> list[str]:
    """The model's top-level modules outside the encoder that hold parameters: the head, trained whole."""
    return [name for name, child in model.named_children()
            if child is not model.base_model and next(child.parameters(), None) is not None]


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge the adapters into the weights and put the plain modules back, as peft's `merge_and_unload` does.

    The head's trained copy replaces the original head. The result has the original state_dict keys.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):  # a snapshot: wrappers come before their insides
        if hasattr(module, "unload_and_optionally_merge_module"):  # the head wrapper (modules_to_save)
            plain = module.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=None)
        elif isinstance(module, BaseTunerLayer):  # a LoRA layer
            module.merge()
            plain = module.get_base_layer()
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, plain)
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model
