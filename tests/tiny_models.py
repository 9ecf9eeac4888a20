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


def toy_classifier():
    """A transformers classifier of a family freezetune does not know, whose blocks no fallback finds: a base
    model `toy` (an embedding and one Linear) and a head `classifier` (2 labels)."""
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

    class ToyConfig(PretrainedConfig):
        model_type = "toy"

    class ToyForSequenceClassification(PreTrainedModel):
        config_class = ToyConfig
        base_model_prefix = "toy"

        def __init__(self, config):
            super().__init__(config)
            self.toy = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 8))
            self.classifier = torch.nn.Linear(8, 2)
            self.post_init()

        def get_input_embeddings(self):
            return self.toy[0]

        def forward(self, input_ids=None, labels=None, **kwargs):
            from transformers.modeling_outputs import SequenceClassifierOutput

            logits = self.classifier(self.toy(input_ids).mean(dim=1))
            loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    return ToyForSequenceClassification(ToyConfig())
