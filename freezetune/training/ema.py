"""An exponential moving average of the trained weights (`--ema DECAY`): evaluated, kept and saved instead of them.

After optimizer step t (t = 1, 2, ...) the average is the bias-corrected exponential average of the weights
after steps 1..t, as Adam corrects its moments:

    average_t = sum_s DECAY^(t-s) x weights_s / sum_s DECAY^(t-s)
              = average_(t-1) + (1 - DECAY) / (1 - DECAY^t) x (weights_t - average_(t-1))

so the first step's weights start it (not the untrained start) and about the last 1 / (1 - DECAY) steps carry
most weight: at DECAY 0.995, a 3-epoch run on inews (327 steps an epoch) has 80% of its average at epoch 3's end
on epoch 3's steps. Late in training the weights wander around a minimum as the learning rate falls; their
average tends to lie nearer its flat centre, which generalises better than any one point of the path (Polyak
averaging; Izmailov et al. 2018 for SWA). A fixed warm-up cap such as min(DECAY, (1 + t) / (10 + t)) (TensorFlow's
ExponentialMovingAverage with num_updates) would instead hold the window to about the last t / 9 steps for the
whole of a run this short.

The average is what each epoch's evaluation measures, so the best epoch is chosen, kept and saved as the
average; training itself steps the raw weights as usual. Only the optimized parameters are averaged (a frozen
one would average to itself). It costs one copy of them in memory (two while an epoch is evaluated: the raw
weights wait in the second) and one fused lerp per step. With fp16, a step the GradScaler skips (an overflow) is
averaged too: its unchanged weights count once more.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback


class WeightAverage(TrainerCallback):
    """Keeps the average; swaps it into the model for each epoch's evaluation (and the best-epoch snapshot taken
    there), and the raw weights back before training goes on or the epoch's checkpoint is saved.

    Must come after the BestEpochCallback in the Trainer's callbacks: that one snapshots the weights the epoch
    was evaluated with, the average, in its own `on_evaluate`, which has to run before the swap back here.
    """

    def __init__(self, decay: float, params: list[torch.nn.Parameter]):
        self.decay, self.params = decay, params  # `params` is the run's list: compaction may replace one in it
        self.average: list[torch.Tensor] = []
        self.updates = 0  # the optimizer steps averaged so far
        self.raw: list[torch.Tensor] = []

    def on_train_begin(self, args, state, control, **kwargs):
        if not self.average:  # a resumed run loaded its average already
            self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def on_step_end(self, args, state, control, **kwargs):
        self.updates += 1
        weight = (1 - self.decay) / (1 - self.decay ** self.updates)  # 1 at the first update: it starts the average
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], weight)

    @torch.no_grad()
    def on_epoch_end(self, args, state, control, **kwargs):
        # The Trainer evaluates right after this (eval_strategy "epoch"), then calls on_evaluate.
        self.raw = [p.detach().clone() for p in self.params]
        torch._foreach_copy_([p.data for p in self.params], self.average)

    @torch.no_grad()
    def on_evaluate(self, args, state, control, **kwargs):
        if self.raw:
            torch._foreach_copy_([p.data for p in self.params], self.raw)
            self.raw = []

    def state_dict(self) -> dict:
        """What a checkpoint keeps of it (see resume.py)."""
        return {"average": [t.cpu() for t in self.average], "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = state["updates"]
        self.average = [saved.to(param.device) for saved, param in zip(state["average"], self.params, strict=True)]
