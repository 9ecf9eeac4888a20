"""Tiny encoders of every supported family, built from configs (no downloads), for the strategy tests."""

from __future__ import annotations

from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    DistilBertConfig,
    ElectraConfig,
    RobertaConfig,
    XLMRobertaConfig,
)

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
FAMILIES = sorted(CONFIGS)


def model_of(kind: str, **overrides):
    """A randomly initialised 3-layer classifier of family `kind` (3 labels); `overrides` change its config."""
    config = CONFIGS[kind].__class__.from_dict({**CONFIGS[kind].to_dict(), **overrides})
    return AutoModelForSequenceClassification.from_config(config)
