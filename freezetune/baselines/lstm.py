"""A character-level bidirectional LSTM trained from scratch (the course's step before transformers).

Characters need no tokenizer or segmentation, so this baseline works on any Chinese text. Batches are
padded to their own longest text (dynamic padding) and packed, which keeps it fast on CPU.
"""

from __future__ import annotations

import copy
import time
from collections import Counter

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from freezetune.measure import peak_memory_mb
from freezetune.metrics import SELECTION_METRICS, classification_report
from freezetune.results import epoch_row, scored_result

PAD, UNK = 0, 1


class CharVocab:
    """Every character seen in train (min count 1); unseen characters map to <unk>."""

    def __init__(self, texts):
        counts = Counter(ch for text in texts for ch in text)
        self.index = {ch: i for i, ch in enumerate(sorted(counts), start=2)}

    def __len__(self) -> int:
        return len(self.index) + 2

    def encode(self, text: str, max_length: int) -> list[int]:
        # An empty text becomes one <unk> so every sequence has a valid step to pool over.
        return [self.index.get(ch, UNK) for ch in text[:max_length]] or [UNK]


class CharBiLSTM(nn.Module):
    def __init__(self, vocab_size: int, num_labels: int, embedding_dim=128, hidden=128, dropout=0.3):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(embedding_dim, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, num_labels)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.dropout(self.embedding(ids)), lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.lstm(packed)
        # -inf padding makes the max-pool see valid steps only.
        states, _ = pad_packed_sequence(states, batch_first=True, padding_value=float("-inf"))
        return self.classifier(self.dropout(states.max(dim=1).values))


def _batch(encoded: list[list[int]], rows) -> tuple[torch.Tensor, torch.Tensor]:
    seqs = [encoded[i] for i in rows]
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, lengths


@torch.no_grad()
def _predict(model, encoded, labels, batch_size) -> tuple[np.ndarray, float, np.ndarray]:
    """Predictions in row order, the mean cross-entropy and the class probabilities; batches are length-sorted
    to pad little."""
    model.eval()
    order = np.argsort([len(s) for s in encoded], kind="stable")
    preds, loss = np.empty(len(encoded), dtype=int), 0.0
    probabilities = np.empty((len(encoded), model.classifier.out_features))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        logits = model(*_batch(encoded, rows))
        loss += nn.functional.cross_entropy(logits, torch.as_tensor(labels[rows]), reduction="sum").item()
        preds[rows] = logits.argmax(-1).numpy()
        probabilities[rows] = logits.softmax(-1).numpy()
    return preds, loss / len(encoded), probabilities


def run_lstm(
    splits,
    seed: int = 0,
    epochs: int = 5,
    batch_size: int = 32,
    eval_batch_size: int = 128,
    lr: float = 2e-3,
    max_length: int = 128,
    metric: str = "accuracy",
) -> dict:
    """Train for `epochs`, keep the epoch with the best validation `metric`, report on the evaluation split.

    `lr` is the LSTM's own (a from-scratch model wants ~1e-3, not a fine-tuning rate). Deterministic for a seed.
    """
    if metric not in SELECTION_METRICS:
        raise ValueError(f"metric must be one of {SELECTION_METRICS}")
    torch.manual_seed(seed)
    shuffler = torch.Generator().manual_seed(seed)
    vocab = CharVocab(splits.train["text"])
    encode = lambda frame: [vocab.encode(t, max_length) for t in frame["text"]]  # noqa: E731
    train_x, val_x = encode(splits.train), encode(splits.validation)
    train_y, val_y = splits.train["label"].to_numpy(), splits.validation["label"].to_numpy()
    model = CharBiLSTM(len(vocab), len(splits.label_names))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    rows, best, best_state = [], None, None
    with peak_memory_mb() as peak:
        start = time.perf_counter()
        for epoch in range(1, epochs + 1):
            model.train()
            losses = []
            for batch_rows in torch.randperm(len(train_x), generator=shuffler).split(batch_size):
                logits = model(*_batch(train_x, batch_rows.tolist()))
                loss = nn.functional.cross_entropy(logits, torch.as_tensor(train_y[batch_rows.numpy()]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            val_preds, val_loss, _ = _predict(model, val_x, val_y, eval_batch_size)
            report = classification_report(val_y.tolist(), val_preds, splits.label_names)
            rows.append(epoch_row(epoch, float(np.mean(losses)), val_loss, report))
            if best is None or report[metric] > best[1][metric]:
                best, best_state = (epoch, report), copy.deepcopy(model.state_dict())
        seconds = time.perf_counter() - start
        model.load_state_dict(best_state)
        eval_frame = splits.evaluation_split[1]
        eval_preds, _, eval_probs = _predict(model, encode(eval_frame), eval_frame["label"].to_numpy(), eval_batch_size)
    n_params = sum(p.numel() for p in model.parameters())
    return scored_result(
        splits,
        strategy="lstm",
        selection_metric=metric,
        epochs=rows,
        best_epoch=best[0],
        validation=best[1],
        evaluation_predictions=eval_preds,
        evaluation_probabilities=eval_probs,
        trainable_params=n_params,
        total_params=n_params,
        train_seconds=seconds,
        train_samples_per_second=len(train_x) * epochs / seconds,
        peak_memory_mb=peak[0],
    ).to_dict()
