"""A BERT encoder with a mean-pooling classification head, as an ordinary transformers model.

Encoders trained for sentence embeddings (multilingual-e5 among them) ship no pooler weights and were
trained to be read out by averaging the token states, so the head averages the last hidden states over the
real (attention_mask == 1) tokens instead of using the [CLS] pooler of `BertForSequenceClassification`.

This module imports only torch and transformers (no relative imports): `register_for_auto_class` copies this
very file into every saved folder, so the folder also loads with `trust_remote_code=True` where freezetune
is not installed.
"""

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertModel
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.models.bert.modeling_bert import BertPreTrainedModel


class MeanPoolBertConfig(BertConfig):
    """`BertConfig` under its own model type, so the Auto classes pick the mean-pooling head."""

    model_type = "freezetune-mean-pool-bert"


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token states of each row over the positions where attention_mask is 1."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    summed = (last_hidden_state * mask).sum(dim=1)
    # clamp: a row with no real token gives zeros instead of NaN
    return summed / mask.sum(dim=1).clamp(min=1.0)


class MeanPoolBertForSequenceClassification(BertPreTrainedModel):
    """BERT encoder (no pooler) -> mean over real tokens -> dropout -> linear classifier."""

    config_class = MeanPoolBertConfig
    config: MeanPoolBertConfig

    def __init__(self, config: MeanPoolBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        outputs = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs
        )
        pooled = mean_pool(outputs.last_hidden_state, attention_mask)
        logits = self.classifier(self.dropout(pooled))
        return SequenceClassifierOutput(loss=self._loss(logits, labels), logits=logits)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        if labels is None:
            return None
        if self.num_labels == 1:
            return nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
        return nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))


# exist_ok: when a saved folder is loaded with trust_remote_code, this file runs a second time as a
# dynamic module and registers its own copy of the classes under the same model type.
AutoConfig.register(MeanPoolBertConfig.model_type, MeanPoolBertConfig, exist_ok=True)
AutoModelForSequenceClassification.register(
    MeanPoolBertConfig, MeanPoolBertForSequenceClassification, exist_ok=True
)
# Saved folders carry `auto_map` and a copy of this file.
MeanPoolBertConfig.register_for_auto_class()
MeanPoolBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
