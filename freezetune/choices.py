"""The closed vocabularies of freezetune's options, as typed choices (`Literal`): one definition each, which the
options (config.py) and the modules that act on a choice (models, losses, posthoc, inference) import. Nothing else
here, so that any module may import it without a cycle.
"""

from __future__ import annotations

from typing import Literal, get_args

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
SelectionMetric = Literal["accuracy", "macro_f1"]
ClassWeights = Literal["none", "balanced"]
Init = Literal["pretrained", "random"]
"""`pretrained`: the model's trained weights; `random`: its architecture (config) with freshly initialised weights."""
Decision = Literal["argmax", "macro_f1"]
Calibration = Literal["temperature", "none"]
LrScheduler = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                      "inverse_sqrt"]
ReportTo = Literal["none", "tensorboard", "mlflow", "wandb"]
