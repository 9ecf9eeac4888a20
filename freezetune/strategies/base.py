"""A tuning strategy: which parameters train, at which learning rates, and what changes while training.

Users name strategies as text (`full`, `freeze6+emb`, `lora:r=8`, `freeze6+lora`, `llrd:0.9`, `gradual:1`);
`parse_strategy` is the one place that text becomes a `Strategy`, for `train`, `compare`, the benchmarks and
the prefix cache alike. A strategy is one small class registered under its name (as peft registers a method):

    @register("bitfit")
    @dataclass
    class BitFit(Strategy):
        def configure(self, model, plan): ...

Its dataclass fields are its options (`lora:r=8,alpha=16`; one field may be `positional`: `llrd:0.9`, and a
number glued to the name fills it: `freeze6`). The hooks, each with a neutral default, are called in this order:

    check(anatomy, frozen_bottom)  before any slow work: do the options fit the model (e.g. freeze4 on 2 layers)?
    configure(model, plan)   stage "method": decide what trains (all, biases only, adapters, ...)
    restrict(model, plan)    stage "restriction": freeze more on top of the method (freezeN, emb, gradual)
    note(model)              what that means on this model, for the run's log (e.g. which stack freezeN reaches)
    later_trainable(model)   parameters frozen now that a callback will unfreeze during the run
    parameter_groups(...)    optimizer groups, e.g. a learning rate per layer
    callbacks(model, plan)   Trainer callbacks, e.g. to unfreeze a layer each epoch
    finalize(model)          before saving: e.g. merge adapters into the weights
    save_extras(model, dir)  extra files beside the saved model (e.g. the adapter alone)

Parts joined with `+` combine: every method's `configure` runs first, then every restriction's `restrict`, so
`freeze6+lora` puts adapters on layers 6.. only and freezes the rest. A name with no method (`freeze6`) means
full fine-tuning restricted. The prefix cache needs nothing from a strategy: it asks which bottom layers no
parameter will ever train in (see `frozen_prefix`). Strategies find a model's parts through `models.anatomy` (which
also says how layers count in an encoder-decoder: through both stacks, encoder first).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from torch import nn

from ..errors import UserError
from ..models.anatomy import Anatomy, anatomy

REGISTRY: dict[str, type[Strategy]] = {}


@dataclass(frozen=True)
class TrainPlan:
    """What a strategy may need to know about the run before it starts."""

    epochs: int
    steps_per_epoch: int
    frozen_bottom: int = 0
    """Blocks 0..N-1 (in depth order, see models.anatomy) a restriction will freeze (set by Combination, so a method
    can skip them)."""


@dataclass
class Strategy:
    """Full fine-tuning, and the base of every strategy: each hook's default does nothing special."""

    name: ClassVar[str] = "full"
    stage: ClassVar[Literal["method", "restriction"]] = "method"
    positional: ClassVar[str | None] = None
    """The option that `name:VALUE` sets (and, with `glue_positional`, a number glued to the name: `freeze6`)."""
    glue_positional: ClassVar[bool] = False
    summary: ClassVar[str] = "every parameter trained (full fine-tuning)"
    lr_grid: ClassVar[tuple[float, ...]] = (2e-5, 5e-5, 1e-4)
    """Learning rates `--lr auto` tries for this family (a linear probe or an adapter wants larger ones)."""

    def check(self, anatomy: Anatomy, frozen_bottom: int = 0) -> None:
        """Raise a one-line UserError if this strategy's options do not fit the model (`anatomy`), before any slow
        work; `frozen_bottom`: the blocks the whole combination freezes. Needs only the module tree (a model on the
        meta device will do). The default: fits any model."""

    def configure(self, model: nn.Module, plan: TrainPlan) -> None:
        for p in model.parameters():
            p.requires_grad = True

    def restrict(self, model: nn.Module, plan: TrainPlan) -> None:
        """Freeze more after every method configured (restrictions only)."""

    def later_trainable(self, model: nn.Module) -> list[nn.Parameter]:
        return []

    def parameter_groups(self, model: nn.Module, params: list[nn.Parameter], lr: float) -> list[dict] | None:
        """Optimizer groups over `params` (the parameters that train at some point), or None for one group at lr."""
        return None

    def callbacks(self, model: nn.Module, plan: TrainPlan) -> list:
        return []

    def finalize(self, model: nn.Module) -> nn.Module:
        """The model to save (the same one unless the strategy changed its structure)."""
        return model

    def save_extras(self, model: nn.Module, folder, keep_adapter: bool = False) -> None:
        """Write extra files into the output folder (called before `finalize`)."""

    def frozen_bottom(self) -> int:
        """Blocks 0..N-1 this strategy freezes in any case (restrictions)."""
        return 0

    def spec(self) -> str:
        """The canonical text of this strategy: its name and its options that differ from their defaults."""
        changed = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name) != _default(f)]
        if not changed:
            return self.name
        if len(changed) == 1 and changed[0][0] == self.positional:
            value = _format(changed[0][1])
            return f"{self.name}{value}" if self.glue_positional else f"{self.name}:{value}"
        return f"{self.name}:" + ",".join(f"{k}={_format(v)}" for k, v in changed)

    def describe(self, within: Strategy | None = None, layers: str = "encoder layers") -> str:
        """What trains, in words, for the model card; `within`: the combination this is a part of (a part may
        say less when another part says it); `layers`: what the model's blocks are called ("decoder layers" on a
        decoder). The default: the class's `summary`."""
        return self.summary

    def note(self, model: nn.Module) -> str:
        """What this strategy does with this very model, in a few words for the run's trainable-parameter line
        (which stack a layer count reaches, what BitFit finds to train), or "" when the counts say it all. Called
        after `configure`."""
        return ""


def register(name: str):
    """Class decorator: make a Strategy subclass available under `name` in strategy specs."""

    def add(cls: type[Strategy]) -> type[Strategy]:
        if name in REGISTRY:
            raise ValueError(f"strategy {name!r} is registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


@dataclass
class Combination(Strategy):
    """Several parts joined with `+`; hooks run methods first, then restrictions (see the module docstring)."""

    parts: list[Strategy] = field(default_factory=list)

    def __post_init__(self):
        methods = [p for p in self.parts if p.stage == "method"]
        if len(methods) > 1:
            raise UserError(f"strategy {self.spec()!r} combines {len(methods)} methods "
                            f"({', '.join(m.spec() for m in methods)}): use one, plus restrictions such as freezeN or emb")

    def _ordered(self) -> list[Strategy]:
        methods = [p for p in self.parts if p.stage == "method"] or [Strategy()]
        return methods + [p for p in self.parts if p.stage == "restriction"]

    def check(self, anatomy, frozen_bottom=0):
        for part in self.parts:
            part.check(anatomy, max(frozen_bottom, self.frozen_bottom()))

    def configure(self, model, plan):
        plan = dataclasses.replace(plan, frozen_bottom=max((p.frozen_bottom() for p in self.parts), default=0))
        method, *restrictions = self._ordered()  # only the method configures: a restriction's default would undo it
        method.configure(model, plan)
        for part in restrictions:
            part.restrict(model, plan)

    def later_trainable(self, model):
        return [p for part in self.parts for p in part.later_trainable(model)]

    def parameter_groups(self, model, params, lr):
        groups = [g for g in (part.parameter_groups(model, params, lr) for part in self.parts) if g is not None]
        if len(groups) > 1:
            raise UserError(f"strategy {self.spec()!r} has two learning-rate policies: keep one")
        return groups[0] if groups else None

    def callbacks(self, model, plan):
        return [c for part in self.parts for c in part.callbacks(model, plan)]

    def finalize(self, model):
        for part in reversed(self._ordered()):
            model = part.finalize(model)
        return model

    def save_extras(self, model, folder, keep_adapter=False):
        for part in self.parts:
            part.save_extras(model, folder, keep_adapter)

    def frozen_bottom(self):
        return max((p.frozen_bottom() for p in self.parts), default=0)

    @property
    def lr_grid(self) -> tuple[float, ...]:
        return self._ordered()[0].lr_grid  # the method's family decides

    def spec(self) -> str:
        return "+".join(part.spec() for part in self.parts) or "full"

    def describe(self, within: Strategy | None = None, layers: str = "encoder layers") -> str:
        said = [text for part in self.parts if (text := part.describe(within=self, layers=layers))]
        return "; ".join(said) or Strategy().describe()

    def note(self, model):
        return "; ".join(text for part in self.parts if (text := part.note(model)))


# --- what every strategy's result has in common ------------------------------------------------------------

def prepare(strategy: Strategy, model: nn.Module, plan: TrainPlan) -> list[nn.Parameter]:
    """Check and configure `model` for `strategy`; returns the parameters to optimize (those that train at some
    point)."""
    check_fits(strategy, anatomy(model))
    strategy.configure(model, plan)
    return trainable_parameters(model, strategy)


def check_fits(strategy: Strategy, body: Anatomy) -> None:
    """A one-line UserError, before any slow work, if the strategy does not fit the model whose anatomy is `body`
    (freeze4 on 2 layers, LoRA targets it lacks, freezeN+lora leaving no layer). `train` and `compare` call it."""
    strategy.check(body, strategy.frozen_bottom())


def trainable_parameters(model: nn.Module, strategy: Strategy) -> list[nn.Parameter]:
    later = {id(p) for p in strategy.later_trainable(model)}
    return [p for p in model.parameters() if p.requires_grad or id(p) in later]


def frozen_prefix(model: nn.Module, strategy: Strategy) -> int:
    """How many bottom blocks, with the embeddings, no parameter will ever train in (0: none, or a family without
    the prefix cache, see models.anatomy).

    Their output never changes during the run, so the prefix cache computes it once.
    """
    body = anatomy(model)
    if not body.prefix_cache:
        return 0
    training = {id(p) for p in trainable_parameters(model, strategy)}
    if any(id(p) in training for module in body.embeddings for p in module.parameters()):
        return 0
    n = 0
    for block in body.blocks:
        if any(id(p) in training for p in block.parameters()):
            break
        n += 1
    return n


def parameter_counts(model: nn.Module, strategy: Strategy | None = None) -> dict[str, int]:
    """Trainable (at some point of the run) and total parameter counts."""
    training = trainable_parameters(model, strategy) if strategy else [p for p in model.parameters() if p.requires_grad]
    return {"trainable_params": sum(p.numel() for p in training),
            "total_params": sum(p.numel() for p in model.parameters())}


# --- parsing: the one place strategy text becomes a Strategy ---------------------------------------------------

_GLUED = re.compile(r"([a-z_-]+?)(\d+)$")
_NO_OPS = {"full", "freeze0"}  # as parts of a combination they change nothing


def parse_strategy(text: str) -> Strategy:
    """`freeze6+emb`, `lora:r=8,alpha=16`, `llrd:0.9`, ... as a Strategy; a one-line UserError for anything else."""
    spec = str(text).strip().lower()
    if not spec:
        raise UserError(f"empty strategy: use one of {valid_names()}")
    parts = {}
    for text_part in spec.split("+"):
        part = _parse_part(text_part.strip(), spec)
        parts.setdefault(part.spec(), part)  # `emb+emb` is `emb`
    # One spelling per strategy: registry order (`emb+freeze6` is `freeze6+emb`), no-op parts dropped.
    order = list(REGISTRY)
    parts = sorted((p for s, p in parts.items() if s not in _NO_OPS), key=lambda p: order.index(p.name))
    if not parts:
        return REGISTRY["full"]()
    if len(parts) == 1 and parts[0].stage == "method":
        return parts[0]
    return Combination(parts=parts)


def _parse_part(text: str, whole: str) -> Strategy:
    name, _, options = text.partition(":")
    glued = _GLUED.fullmatch(name)
    if name not in REGISTRY and glued and glued[1] in REGISTRY and REGISTRY[glued[1]].glue_positional:
        name, options = glued[1], glued[2] + (f",{options}" if options else "")
    cls = REGISTRY.get(name)
    if cls is None:
        raise UserError(f"unknown strategy {text!r} in {whole!r}: valid names are {valid_names()}")
    return _construct(cls, options, whole)


def _construct(cls: type[Strategy], options: str, whole: str) -> Strategy:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, object] = {}
    for item in filter(None, (o.strip() for o in options.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            key, value = cls.positional, item
        if key not in fields:
            accepted = ", ".join(fields) or "no options"
            raise UserError(f"strategy {whole!r}: {cls.name} does not take {item!r} (it takes {accepted})")
        values[key] = _coerce(fields[key], value.strip(), whole)
    missing = [f.name for f in fields.values() if f.name not in values and _default(f) is dataclasses.MISSING]
    if missing:
        example = f"{cls.name}6" if cls.glue_positional else f"{cls.name}:{missing[0]}=..."
        raise UserError(f"strategy {whole!r}: {cls.name} needs {', '.join(missing)} (e.g. {example}); "
                        f"valid names are {valid_names()}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise UserError(f"strategy {whole!r}: {exc}") from None


def _coerce(f: dataclasses.Field, value: str, whole: str):
    kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str, "bool": bool}.get(str(f.type), str)
    try:
        if kind is bool:
            return {"true": True, "1": True, "false": False, "0": False}[value]
        result = kind(value)
    except (ValueError, KeyError):
        kinds = {int: "an integer", float: "a number", bool: "true or false"}
        raise UserError(f"strategy {whole!r}: {f.name} must be {kinds.get(kind, kind.__name__)}, got {value!r}") from None
    if isinstance(result, float) and not math.isfinite(result):
        raise UserError(f"strategy {whole!r}: {f.name} must be a finite number, got {value!r}")
    return result


def valid_names() -> str:
    forms = {"freeze": "freezeN", "top": "topN"}
    return ", ".join(forms.get(n, n) for n in REGISTRY) + " (combine with +, e.g. freeze6+emb, freeze6+lora)"


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _format(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
