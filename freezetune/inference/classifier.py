"""Batched inference on an in-memory classifier: the one place texts become label probabilities.

Texts are scored in length-sorted batches (less padding, same results) and returned in input order.
Training's final predictions, `freezetune predict` and the ONNX backend all go through here.
"""

from __future__ import annotations

import abc

import numpy as np
import torch
from scipy.special import softmax

from ..errors import UserError
from ..posthoc.fold import final_linear
from ..precision import autocast


class TextClassifier(abc.ABC):
    """What every predictor offers (`Predictor`, `OnnxPredictor`, `EnsemblePredictor`): probabilities and labels."""

    label_names: list[str]  # set by the subclass, from the model's id2label

    @abc.abstractmethod
    def probabilities(self, texts: list[str]) -> np.ndarray:
        """(texts, classes) probabilities, in input order."""

    def predict(self, texts: list[str]) -> list[dict]:
        probs = self.probabilities(texts)
        return [
            {"text": text, "label": self.label_names[int(p.argmax())], "probability": float(p.max())}
            for text, p in zip(texts, probs)
        ]


class BatchedClassifier(TextClassifier):
    """Scores texts in length-sorted batches (less padding, same results); subclasses run the model.

    Shared by the PyTorch `Predictor` and the ONNX Runtime `OnnxPredictor`, so both batch and sort alike.
    """

    tensor_type = "pt"  # what the tokenizer returns for `_logits`

    def __init__(self, tokenizer, batch_size: int, max_length: int):
        if batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {batch_size}")
        self.tokenizer, self.batch_size, self.max_length = tokenizer, batch_size, max_length

    @abc.abstractmethod
    def _logits(self, batch) -> np.ndarray:
        """The model's float32 logits for one tokenized batch."""

    def logits(self, texts: list[str]) -> np.ndarray:
        """(texts, classes) float32 logits, in input order."""
        return self._in_input_order(texts, self._logits, len(self.label_names))

    def _in_input_order(self, texts: list[str], score, width: int) -> np.ndarray:
        """`score(tokenized batch)` -> (batch, width) over length-sorted batches, returned as (texts, width) in input order."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), width), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = score(self._tokenize([texts[i] for i in idx]))
        return out

    def _tokenize(self, texts: list[str]):
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors=self.tensor_type)
        if batch["input_ids"].shape[-1] == 0:
            # Empty texts only, from a tokenizer that adds no token of its own (GPT-2's, Qwen's): a model cannot
            # run on no position, so each is one padding token, as it is in a batch with longer texts.
            batch = self.tokenizer(texts, padding="max_length", truncation=True, max_length=1,
                                   return_tensors=self.tensor_type)
        return batch

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return softmax(self.logits(texts), axis=-1)


def last_token_positions(input_ids: torch.Tensor, config) -> torch.Tensor:
    """Where a decoder-only classifier reads each row: its rightmost token that is not `config.pad_token_id`
    (left or right padding alike), as transformers' *ForSequenceClassification pool."""
    ids = input_ids.cpu()
    if config.pad_token_id is None:
        return torch.full((len(ids),), ids.shape[-1] - 1)
    return (torch.arange(ids.shape[-1]) * (ids != config.pad_token_id)).argmax(-1)


class TorchClassifier(BatchedClassifier):
    """A sequence-classification model already in memory (e.g. at the end of training).

    `precision` is a resolved one (see precision.py): training's final predictions use training's.
    """

    def __init__(self, model, tokenizer, batch_size: int, max_length: int, precision: str = "fp32"):
        super().__init__(tokenizer, batch_size, max_length)
        self.model, self.precision = model, precision
        self.label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]

    @torch.inference_mode()
    def _logits(self, batch) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        with autocast(self.precision, self.model.device.type):
            logits = self.model(**batch.to(self.model.device)).logits.float().cpu().numpy()
        self.model.train(was_training)
        return logits

    def final_linear_inputs(self, texts: list[str]) -> np.ndarray:
        """(texts, features): what the model's final linear layer receives, in input order.

        The head's last hidden layer: the pooled features in BERT and the builtin model, the output of the head's
        dense layer in RoBERTa/XLM-R/ELECTRA, DistilBERT, T5 and BART, the last real token's hidden state in
        decoder-only families (their `score` runs on every position, and the model keeps that token's row).

        With `final_linear_logits`, the logits of a changed final layer (e.g. a folded temperature) cost no second pass
        through the encoder.
        """
        linear = final_linear(self.model)
        captured = []
        hook = linear.register_forward_hook(lambda module, args, output: captured.append(args[0]))

        def features(batch):
            captured.clear()
            self._logits(batch)
            found = captured[0]
            if found.dim() == 3:  # (batch, sequence, features): each row's last token that is not padding
                rows = last_token_positions(batch["input_ids"], self.model.config).to(found.device)
                found = found[torch.arange(len(found), device=found.device), rows]
            return found.float().cpu().numpy()

        try:
            return self._in_input_order(texts, features, linear.in_features)
        finally:
            hook.remove()

    @torch.inference_mode()
    def final_linear_logits(self, features: np.ndarray) -> np.ndarray:
        """The final linear layer on `final_linear_inputs`, as the model's forward applies it (same precision, same batch size)."""
        linear, device = final_linear(self.model), self.model.device
        logits = np.zeros((len(features), linear.out_features), dtype=np.float32)
        with autocast(self.precision, device.type):
            for start in range(0, len(features), self.batch_size):
                chunk = torch.from_numpy(features[start : start + self.batch_size]).to(device)
                logits[start : start + self.batch_size] = linear(chunk).float().cpu().numpy()
        return logits
