"""LoRA (Hu et al., 2021) through peft: low-rank adapters on the attention query and value projections.

peft's `get_peft_model` injects the adapters into the transformers model in place and returns a `PeftModel`
around it; training goes on with the model itself, which keeps its class and its attribute paths (the anatomy
and the prefix cache rely on them), while the strategy keeps the `PeftModel` for peft's own `save_pretrained`
(the adapter) and `merge_and_unload` (the saved model). The head (everything outside the base model) trains whole,
as peft's `modules_to_save`, so that it is part of the adapter too.

Options: `lora:r=8,alpha=16,dropout=0.1,targets=auto`. `targets` names the linear layers to adapt inside each
block by their last name, joined with `/` (`+` already joins strategies, `,` options): `lora:targets=query/key/value`.
`auto` picks the family's attention query and value projections (models.anatomy: `query`/`value` in BERT,
RoBERTa, XLM-R and ELECTRA, `q_lin`/`v_lin` in DistilBERT, `c_attn` in GPT-2, `q_proj`/`v_proj` in Llama-likes);
`all` every linear layer of the blocks (attention and feed-forward, as peft's `all-linear`; the head trains whole
anyway). GPT-2's Conv1D layers count as linear layers.

With a restriction such as `freeze6+lora`, adapters go on layers 6.. only, so the embeddings and layers 0..5
never change and the prefix cache computes their output once. Before saving, the adapters are merged into the
weights (`finalize`): the saved model is a plain transformers model with the original state_dict keys. With
`keep_adapter`, the adapter alone is also written to `adapter/`, loadable with `peft.PeftModel.from_pretrained`
over the base model.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import UserError
from ..models.anatomy import LINEAR_CLASSES, Anatomy, anatomy
from .base import Strategy, TrainPlan, register

ADAPTER = "default"  # peft's adapter name; the only adapter we inject


@register("lora")
@dataclass
class LoRA(Strategy):
    """Low-rank adapters on chosen linear layers of the blocks (query and value by default), plus the head."""

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
        self._peft = None  # the PeftModel around the configured model (configure)

    def check(self, anatomy: Anatomy, frozen_bottom: int = 0) -> None:
        _adapted_blocks(anatomy, frozen_bottom)
        _target_leaves(anatomy, self.targets, frozen_bottom)

    def configure(self, model: nn.Module, plan: TrainPlan) -> None:
        from peft import LoraConfig, get_peft_model

        for p in model.parameters():
            p.requires_grad = False
        body = anatomy(model)
        targets = target_modules(model, self.targets, plan.frozen_bottom)
        config = LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, task_type="SEQ_CLS",
            target_modules=targets, modules_to_save=[name for name, _ in body.head],
            # GPT-2's Conv1D stores its weight transposed; peft must be told (it would warn and guess).
            fan_in_fan_out=any(isinstance(model.get_submodule(t), LINEAR_CLASSES[1:]) for t in targets),
        )
        # In place: `model` now holds the adapters and a trainable copy of the head, and only those train. The
        # PeftModel around it is kept for saving and merging with peft's own code.
        with warnings.catch_warnings():
            # peft asks transformers' deprecated `is_gradient_checkpointing`: a warning about peft, not the user's run.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
            self._peft = get_peft_model(model, config, adapter_name=ADAPTER)

    def save_extras(self, model: nn.Module, folder, keep_adapter: bool = False) -> None:
        """With `keep_adapter`, write the adapter (LoRA weights and head) alone into `folder/adapter/`."""
        if keep_adapter:
            self._peft.save_pretrained(Path(folder) / "adapter", selected_adapters=[ADAPTER])

    def finalize(self, model: nn.Module) -> nn.Module:
        """The adapters merged into the weights and the trained head in place of the original: a plain model
        with the original state_dict keys (peft's merge_and_unload)."""
        peft_model = self._peft
        if peft_model is None or peft_model.base_model.model is not model:
            raise ValueError("LoRA.finalize needs the model this strategy configured")
        self._peft = None
        return peft_model.merge_and_unload()


def _adapted_blocks(body: Anatomy, first_layer: int):
    """The blocks that get adapters: those above the frozen bottom."""
    blocks = body.require_blocks("lora")
    if first_layer >= len(blocks):
        raise UserError(f"strategy lora: all {body.describe_depth()} are frozen, none is left for adapters: "
                        f"freeze fewer layers (at most {len(blocks) - 1}), or use the strategy head")
    return blocks[first_layer:]


def target_modules(model: nn.Module, targets: str, first_layer: int) -> list[str]:
    """Full names of the linear layers to adapt, in blocks `first_layer`.. (the ones that train)."""
    body = anatomy(model)
    blocks = _adapted_blocks(body, first_layer)
    wanted = _target_leaves(body, targets, first_layer)
    full_name = {id(module): name for name, module in model.named_modules()}
    return [f"{full_name[id(block.module)]}.{name}"
            for block in blocks
            for name, module in block.module.named_modules()
            if isinstance(module, LINEAR_CLASSES) and name.rpartition(".")[2] in wanted]


def _target_leaves(body: Anatomy, targets: str, first_layer: int) -> set[str]:
    """The last names of the linear layers to adapt, checked against the blocks that get adapters."""
    available = sorted({name.rpartition(".")[2] for block in _adapted_blocks(body, first_layer)
                        for name, m in block.module.named_modules() if isinstance(m, LINEAR_CLASSES)})
    if targets == "all":
        return set(available)
    if targets == "auto":
        if body.lora_targets and set(body.lora_targets) <= set(available):
            return set(body.lora_targets)
        raise UserError(f"strategy lora: no attention query/value layers found in model type '{body.model_type}': "
                        f"name them with lora:targets=NAME/NAME, from {'/'.join(available)}, or use targets=all")
    wanted = set(targets.split("/"))
    missing = sorted(wanted - set(available))
    if missing:
        raise UserError(f"strategy lora: the layers of '{body.model_type}' have no Linear layer named "
                        f"{', '.join(missing)}: choose targets from {'/'.join(available)}, or targets=all (every one) "
                        "or targets=auto (query/value)")
    return wanted
