"""Freezing strategies across encoder families, built from tiny configs (no downloads)."""

from __future__ import annotations

import pytest

from freezetune import UserError
from freezetune.models.anatomy import anatomy
from freezetune.strategies import TrainPlan, legacy_spec, parameter_counts, parse_strategy, prepare

from .tiny_models import FAMILIES, model_of, toy_classifier

PLAN = TrainPlan(epochs=1, steps_per_epoch=1)


def apply(model, spec: str) -> dict[str, int]:
    """Configure `model` for the strategy `spec`; the trainable and total parameter counts."""
    strategy = parse_strategy(spec)
    prepare(strategy, model, PLAN)
    return parameter_counts(model, strategy)


def trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", FAMILIES)
def test_freeze_n_freezes_exactly_the_lower_layers(kind):
    model = model_of(kind)
    layers = [block.module for block in anatomy(model).blocks]
    assert len(layers) == 3
    counts = apply(model, "freeze2")
    assert all(not p.requires_grad for layer in layers[:2] for p in layer.parameters())
    assert all(p.requires_grad for p in layers[2].parameters())
    assert all(p.requires_grad for p in model.base_model.embeddings.parameters())  # as in the notebook
    assert counts["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < counts["trainable_params"] < counts["total_params"]


@pytest.mark.parametrize("kind", FAMILIES)
def test_head_trains_only_what_is_outside_the_encoder(kind):
    model = model_of(kind)
    apply(model, "head")
    base = {f"{model.base_model_prefix}.{n}" for n, _ in model.base_model.named_parameters()}
    assert trainable(model) and not trainable(model) & base


def test_freeze_embeddings_and_none():
    model = model_of("bert")
    apply(model, "freeze1+emb")
    assert not any(n.startswith("bert.embeddings") for n in trainable(model))
    apply(model, "full")  # strategies reset what an earlier one froze
    assert trainable(model) == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("value, name", [("none", "full"), ("0", "full"), ("6", "freeze6"), ("head", "head")])
def test_strategy_names(value, name):
    assert parse_strategy(legacy_spec(value)).spec() == name
    assert parse_strategy(legacy_spec("6", freeze_embeddings=True)).spec() == "freeze6+emb"


def test_bad_strategies_are_refused():
    with pytest.raises(UserError, match="unknown strategy 'half'"):
        parse_strategy("half")
    with pytest.raises(UserError, match="more than the model's 3 encoder layers"):
        apply(model_of("bert"), "freeze4")
    # GPT-2 is a known family now (models/anatomy.py); a family with no blocks to find stands in for the unknown.
    with pytest.raises(UserError, match="cannot find the encoder layers of model type 'toy'"):
        apply(toy_classifier(), "freeze1")
