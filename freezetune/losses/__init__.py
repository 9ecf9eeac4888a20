"""Training losses for imbalanced data: one registry, one spec parser, one `Trainer(compute_loss_func=...)`.

A loss spec is `NAME[:KEY=VALUE[,KEY=VALUE...]]`, e.g. `ce`, `focal:gamma=2`, `logit-adjusted:tau=1,smoothing=0.1`:

- `ce`: cross-entropy, the model's own loss.
- `focal[:gamma=2]`: (1 - p_t)^gamma x cross-entropy (Lin et al. 2017): confident, easy examples count less.
- `logit-adjusted[:tau=1]`: cross-entropy on logits + tau x log(class prior) (Menon et al. 2021). Only training
  adds the prior: a frequent class must then win by a larger margin, and at inference (where nothing is added)
  the rare classes get that margin back.

Every loss also takes `smoothing=S` (label smoothing, 0 <= S < 1) and combines with per-class weights
(`--class-weights balanced`, scikit-learn's rule), which scale each example's loss by its class's weight
(focal's alpha). Adding a loss is one small `Loss` subclass and one `register_loss` line.

torch and scikit-learn are imported where a loss is built, so parsing a spec (config checks, `--help`) stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, get_args

from ..choices import ClassWeights
from ..errors import UserError

if TYPE_CHECKING:
    import torch

CLASS_WEIGHTS: tuple[str, ...] = get_args(ClassWeights)


@dataclass(frozen=True)
class Option:
    """One numeric option of a loss: its default and the rule a value must meet."""

    default: float
    rule: str  # for the error message, e.g. ">= 0"
    valid: Callable[[float], bool]


def non_negative(default: float) -> Option:
    return Option(default, ">= 0", lambda v: v >= 0)


# Every loss takes label smoothing; 1 would make the target uniform and ignore the labels.
SMOOTHING = Option(0.0, "in [0, 1)", lambda v: 0 <= v < 1)


class Loss:
    """Per-example cross-entropy (class-weighted, label-smoothed); subclasses change the logits or the weighting.

    Instances are `Trainer(compute_loss_func=...)` callables: the per-example losses are summed and divided by
    the number of examples (`num_items_in_batch` when the Trainer counts them across gradient accumulation and
    devices), not by the sum of the weights, which keeps the Trainer's loss scaling right.
    """

    options: ClassVar[dict[str, Option]] = {}  # the loss's own options; `smoothing` is added for all

    def __init__(self, spec: LossSpec, class_weights: torch.Tensor | None, class_prior: torch.Tensor | None):
        self.spec, self.weights, self.prior = spec, class_weights, class_prior

    def training_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits the loss sees in training (inference always uses the model's own)."""
        return logits

    def per_example(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional as F

        weight = None if self.weights is None else self.weights.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=self.spec.option("smoothing"), reduction="none")

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        import torch

        # float32 at least: a bf16/fp16 log-softmax loses the small probabilities that rare classes live on.
        logits = outputs["logits"]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        losses = self.per_example(self.training_logits(logits), labels)
        return losses.sum() / (num_items_in_batch if num_items_in_batch is not None else len(labels))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec})"


LOSSES: dict[str, type[Loss]] = {}


def register_loss(name: str, loss: type[Loss]) -> None:
    """Make `loss` available as `--loss NAME[:options]`."""
    LOSSES[name] = loss


class CrossEntropy(Loss):
    """The plain (optionally weighted, smoothed) cross-entropy."""


register_loss("ce", CrossEntropy)


class FocalLoss(Loss):
    """(1 - p_t)^gamma x cross-entropy: gamma = 0 is cross-entropy, larger gamma down-weighs easy examples."""

    options = {"gamma": non_negative(2.0)}

    def per_example(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        import torch

        log_p_true = torch.log_softmax(logits, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        # -expm1(log p) is 1 - p without cancellation; the clamp keeps the gradient finite at p = 1 when gamma < 1.
        hardness = (-torch.expm1(log_p_true)).clamp_min(torch.finfo(logits.dtype).tiny)
        return hardness.pow(self.spec.option("gamma")) * super().per_example(logits, labels)


register_loss("focal", FocalLoss)


class LogitAdjustedLoss(Loss):
    """Cross-entropy on logits + tau x log(prior) (Menon et al. 2021, eq. 10); inference adds nothing."""

    options = {"tau": non_negative(1.0)}

    def __init__(self, spec, class_weights, class_prior):
        super().__init__(spec, class_weights, class_prior)
        import torch

        if class_prior is None or not bool(torch.all(class_prior > 0)):
            raise ValueError("logit-adjusted needs a class prior with every class's share > 0 (see class_prior())")

    def training_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits + self.spec.option("tau") * self.prior.to(logits.device, logits.dtype).log()


register_loss("logit-adjusted", LogitAdjustedLoss)


def _options_of(name: str) -> dict[str, Option]:
    return {**LOSSES[name].options, "smoothing": SMOOTHING}


@dataclass(frozen=True)
class LossSpec:
    """A parsed `--loss` value: the loss name and every option's value (defaults filled in)."""

    name: str
    options: tuple[tuple[str, float], ...]

    def option(self, key: str) -> float:
        return dict(self.options)[key]

    def __str__(self) -> str:
        """The canonical spec: options that differ from their defaults, in the loss's declared order."""
        defaults = _options_of(self.name)
        changed = [f"{k}={short_number(v)}" for k, v in self.options if v != defaults[k].default]
        return self.name + (":" + ",".join(changed) if changed else "")


def short_number(value: float) -> str:
    """The shortest text that parses back to `value` (2 rather than 2.0)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def valid_losses() -> str:
    """The accepted specs, for help texts and error messages."""
    forms = [name + "".join(f"[:{k}={short_number(o.default)}]" for k, o in loss.options.items()) for name, loss in LOSSES.items()]
    return f"{', '.join(forms)}, each with an optional smoothing=S in [0, 1) (e.g. focal:gamma=2,smoothing=0.1)"


def parse_loss(spec: str) -> LossSpec:
    """`NAME[:KEY=VALUE,...]` -> LossSpec; anything else is a one-line UserError listing what is valid."""

    def bad(problem: str) -> UserError:
        return UserError(f"--loss {spec!r} is not valid: {problem}; use one of {valid_losses()}")

    name, colon, rest = (part.strip() for part in spec.partition(":"))
    if name not in LOSSES:
        raise bad(f"unknown loss {name!r}")
    known = _options_of(name)
    values = {key: option.default for key, option in known.items()}
    given: set[str] = set()
    for item in rest.split(",") if colon else ():
        key, eq, text = (part.strip() for part in item.partition("="))
        if key not in known:
            raise bad(f"{name} has no option {key!r} (its options: {', '.join(known)})")
        if not eq or key in given:
            raise bad(f"write each option once, as {key}=VALUE")
        values[key] = _option_value(key, text, known[key], bad)
        given.add(key)
    return LossSpec(name, tuple(values.items()))


def _option_value(key: str, text: str, option: Option, bad: Callable[[str], UserError]) -> float:
    try:
        value = float(text)
    except ValueError:
        raise bad(f"{key}={text!r} is not a number") from None
    if not math.isfinite(value) or not option.valid(value):
        raise bad(f"{key} must be a finite number {option.rule}, got {text}")
    return value


def check_class_weights(choice: str) -> None:
    if choice not in CLASS_WEIGHTS:
        raise UserError(f"--class-weights {choice!r} is not valid: use one of {', '.join(CLASS_WEIGHTS)}")


def class_weights(choice: str, labels, n_classes: int) -> torch.Tensor | None:
    """Per-class loss weights for the training labels (ids 0..n_classes-1), or None for `none`.

    `balanced` is scikit-learn's rule, n / (classes x count): every class carries the same total weight in an
    epoch's loss, so an unweighted loss's cheapest solution (ignore the rare classes) stops being the cheapest.
    """
    check_class_weights(choice)
    if choice == "none":
        return None
    import numpy as np
    import torch
    from sklearn.utils.class_weight import compute_class_weight

    weights = compute_class_weight("balanced", classes=np.arange(n_classes), y=np.asarray(labels))
    return torch.tensor(weights, dtype=torch.float32)


def class_prior(labels, n_classes: int) -> torch.Tensor:
    """Each class's share of the training labels (ids 0..n_classes-1): logit adjustment's pi."""
    import numpy as np
    import torch

    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes)
    return torch.tensor(counts / counts.sum(), dtype=torch.float32)


def make_loss(spec: LossSpec | str, class_weights: torch.Tensor | None = None,
              class_prior: torch.Tensor | None = None) -> Loss:
    """The `Trainer(compute_loss_func=...)` for a spec; `class_prior` is needed by `logit-adjusted` only."""
    spec = parse_loss(spec) if isinstance(spec, str) else spec
    return LOSSES[spec.name](spec, class_weights, class_prior)
