"""Strategies that vary the training by depth: a learning rate per layer, or layers unfrozen one at a time.

`llrd:0.9` (layer-wise learning-rate decay, as in ELECTRA and "How to Fine-Tune BERT for Text
Classification"): the top layers, closest to the task, move fastest; the embeddings, most general, slowest.

`gradual` (gradual unfreezing, ULMFiT): only the head trains at first, then one more layer from the top every
`epochs` epochs (`gradual:2`) or every `steps` optimizer steps (`gradual:steps=100`), the embeddings last. The
final norm of a decoder (GPT-2's `ln_f`, Llama's `norm`, T5's and BART's decoder norm) unfreezes with the top layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..models.anatomy import anatomy
from .base import Strategy, TrainPlan, register


@register("llrd")
@dataclass
class LayerwiseDecay(Strategy):
    """Every parameter trains; layer i of L (1-based, blocks in depth order) at lr * decay**(L - i), embeddings at
    lr * decay**L."""

    decay: float = 0.9
    positional = "decay"
    summary = "every parameter trains; each layer down from the top at decay times the learning rate above it"

    def __post_init__(self):
        if not 0 < self.decay <= 1:
            raise ValueError(f"llrd needs 0 < decay <= 1, got {self.decay:g}")

    def check(self, anatomy, frozen_bottom=0):
        anatomy.require_blocks(self.spec())
        anatomy.require_embeddings(self.spec())

    def parameter_groups(self, model: nn.Module, params: list[nn.Parameter], lr: float) -> list[dict]:
        """One group per learning rate over `params`; anything outside the embeddings and layers gets `lr`.

        Parameters are placed by the module that holds them, not by name, so a module swapped in for training
        (e.g. the compact word embedding) keeps its depth. Call this before the prefix cache cuts the layer list.
        """
        body = anatomy(model)
        depth = {id(p): body.depth for module in body.embeddings for p in module.parameters()}
        for i, block in enumerate(body.blocks, start=1):
            depth.update((id(p), body.depth - i) for p in block.parameters())
        groups: dict[int, list[nn.Parameter]] = {}
        for p in params:
            groups.setdefault(depth.get(id(p), 0), []).append(p)
        return [{"params": ps, "lr": lr * self.decay**d} for d, ps in sorted(groups.items())]


@register("gradual")
@dataclass
class GradualUnfreezing(Strategy):
    """The head first, then one more layer (block) from the top every `epochs` epochs or `steps` steps.

    Unfreezing order: layer L-1, L-2, ..., 0, then the embeddings; each step gives back what the method trains
    there (all of it, or its LoRA adapters, or its biases). The run's length (the plan) bounds the schedule: what
    would unfreeze after the last step stays frozen, so `later_trainable` and the prefix cache can rely on it.
    It must run after the other restrictions (it is registered after them) so it never unfreezes what they froze.
    """

    epochs: int = 1
    steps: int = 0
    stage = "restriction"
    positional = "epochs"
    summary = "the head first, then one more layer from the top every N epochs (or steps=N), the embeddings last"

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"gradual needs epochs >= 1 (epochs between two unfreezings), got {self.epochs}")
        if self.steps < 0:
            raise ValueError(f"gradual needs steps >= 1 (steps between two unfreezings), got {self.steps}")
        if self.steps and self.epochs != 1:
            raise ValueError("gradual takes epochs or steps, not both: e.g. gradual:2 or gradual:steps=100")
        self._blocks: list[list[nn.Parameter]] = []  # what each unfreezing gives back, top layer first
        self._reached = 0  # how many blocks unfreeze within the run

    def check(self, anatomy, frozen_bottom=0):
        anatomy.require_blocks(self.spec())
        anatomy.require_embeddings(self.spec())

    def restrict(self, model: nn.Module, plan: TrainPlan) -> None:
        body = anatomy(model)
        modules = [list(block.modules) for block in reversed(body.blocks)] + [list(body.embeddings)]
        if body.final_norm is not None and body.blocks:
            modules[0].append(body.final_norm)  # the norm after the top layer (GPT-2's ln_f) unfreezes with it
        self._blocks = [[p for m in block for p in m.parameters() if p.requires_grad] for block in modules]
        for block in self._blocks:
            for p in block:
                p.requires_grad = False
        total_steps = plan.epochs * plan.steps_per_epoch
        self._reached = self.unfrozen_at(epoch=plan.epochs - 1, step=total_steps - 1)

    def unfrozen_at(self, epoch: int, step: int) -> int:
        """How many blocks are unfrozen while epoch `epoch` and optimizer step `step` (both from 0) run."""
        progress, every = (step, self.steps) if self.steps else (epoch, self.epochs)
        return max(0, min(progress // every, len(self._blocks)))

    def unfreeze(self, epoch: int, step: int) -> None:
        """Make trainable every block due by then (idempotent), never past the plan's last step."""
        for block in self._blocks[: min(self.unfrozen_at(epoch, step), self._reached)]:
            for p in block:
                p.requires_grad = True

    def later_trainable(self, model: nn.Module) -> list[nn.Parameter]:
        return [p for block in self._blocks[: self._reached] for p in block]

    def callbacks(self, model: nn.Module, plan: TrainPlan) -> list:
        return [_unfreeze_callback(self)]


def _unfreeze_callback(schedule: GradualUnfreezing):
    """A Trainer callback that unfreezes what `schedule` says at the start of every epoch and step."""
    from transformers import TrainerCallback

    class Unfreeze(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            # state.epoch is the float number of epochs done: a whole number at an epoch's start.
            schedule.unfreeze(epoch=math.floor((state.epoch or 0) + 1e-6), step=state.global_step)

        on_step_begin = on_epoch_begin

    return Unfreeze()
