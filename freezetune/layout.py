"""What freezetune writes where, and which process writes it. No PyTorch here: `compare`, the CLI and the
Jupyter display read run folders without loading it.

A training run's folder (`train --output-dir`) is a Hugging Face model folder (config.json, the weights, the
tokenizer's files) plus freezetune's files below. `metrics.json` and `run_config.json` together mark a finished
run: `compare` skips a run that has them, and `--overwrite` replaces only a folder that has them.
"""

from __future__ import annotations

import os

# A training run's folder.
METRICS_FILE = "metrics.json"
RUN_CONFIG_FILE = "run_config.json"
LOG_FILE = "train.log"
RELIABILITY_FILE = "reliability.png"
CARD_FILE = "README.md"
RUN_FILES = (METRICS_FILE, RUN_CONFIG_FILE)

# An export's folder (`export --output-dir`): the ONNX models, the files serve needs, and the marker.
MODEL_FILE, INT8_FILE = "model.onnx", "model.int8.onnx"
EXPORT_MARKER = "export.json"
# A folder holding either pair is an export (older exports have no marker).
EXPORT_FILES = ((MODEL_FILE, EXPORT_MARKER), (MODEL_FILE, RUN_CONFIG_FILE))

# A study's folder (`compare --output-dir`): its options, beside runs/ and the reports.
OPTIONS_FILE = "compare.json"
MODELS_FILE = "models.json"  # with several models (--models): each one's folder under runs/ and what it is

# The keys freezetune adds to a trained model's config.json: the temperature and logit offsets folded into its
# head (posthoc/fold.py), so that a reader can undo them.
TEMPERATURE_KEY = "freezetune_temperature"
OFFSETS_KEY = "freezetune_logit_offsets"


def world_size() -> int:
    """How many processes train this run: the launchers (torchrun, accelerate launch) set WORLD_SIZE; 1 without."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Global rank 0 (RANK, set by the launchers): the one process that writes outputs and speaks."""
    return int(os.environ.get("RANK", "0")) == 0
