"""Freezing strategies across encoder families, built from tiny configs (no downloads)."""

from __future__ import annotations

import pytest
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    GPT2Config,
    RobertaConfig,
    XLMRobertaConfig,
)

from freezetune import UserError
from freezetune.tuning import apply_strategy, encoder_layers, parse_strategy

SIZES = dict(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=40, num_labels=3)
CONFIGS = {
    "bert": BertConfig(**SIZES),
    "roberta": RobertaConfig(**SIZES),
    "xlm-roberta": XLMRobertaConfig(**SIZES),
    "electra": ElectraConfig(embedding_size=8, **SIZES),
    "distilbert": DistilBertConfig(vocab_size=50, dim=16, n_layers=3, n_heads=2, hidden_dim=32,
                                   max_position_embeddings=40, num_labels=3),
}


def model_of(kind):
    return AutoModelForSequenceClassification.from_config(CONFIGS[kind])


def trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_freeze_n_freezes_exactly_the_lower_layers(kind):
    model = model_of(kind)
    layers = encoder_layers(model)
    assert len(layers) == 3
    counts = apply_strategy(model, parse_strategy("2"))
    assert all(not p.requires_grad for layer in layers[:2] for p in layer.parameters())
    assert all(p.requires_grad for p in layers[2].parameters())
    assert all(p.requires_grad for p in model.base_model.embeddings.parameters())  # as in the notebook
    assert counts["trainable_params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < counts["trainable_params"] < counts["total_params"]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_head_trains_only_what_is_outside_the_encoder(kind):
    model = model_of(kind)
    apply_strategy(model, parse_strategy("head"))
    base = {f"{model.base_model_prefix}.{n}" for n, _ in model.base_model.named_parameters()}
    assert trainable(model) and not trainable(model) & base


def test_freeze_embeddings_and_none():
    model = model_of("bert")
    apply_strategy(model, parse_strategy("1", freeze_embeddings=True))
    assert not any(n.startswith("bert.embeddings") for n in trainable(model))
    apply_strategy(model, parse_strategy("none"))  # strategies reset what an earlier one froze
    assert trainable(model) == {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize("value, name", [("none", "full"), ("0", "full"), ("6", "freeze6"), ("head", "head")])
def test_strategy_names(value, name):
    assert parse_strategy(value).name == name
    assert parse_strategy("6", freeze_embeddings=True).name == "freeze6+emb"


def test_bad_strategies_are_refused():
    with pytest.raises(UserError, match="--freeze 'half' is not valid"):
        parse_strategy("half")
    with pytest.raises(UserError, match="more than the model's 3 encoder layers"):
        apply_strategy(model_of("bert"), parse_strategy("4"))
    gpt2 = AutoModelForSequenceClassification.from_config(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, num_labels=2))
    with pytest.raises(UserError, match="cannot find the encoder layers of model type 'gpt2'"):
        apply_strategy(gpt2, parse_strategy("1"))
