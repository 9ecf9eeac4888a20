"""Training: `train(TrainConfig)` (lr_search.py: one run, or with `--lr auto` the search over several), one run
`train_one` (run.py, read as its phases), and the exact shortcuts that make frozen parts free (prefix_cache.py,
compact_embedding.py)."""

from .lr_search import train
from .run import LOG_FILE, METRICS_FILE, RUN_CONFIG_FILE

__all__ = ["train", "METRICS_FILE", "RUN_CONFIG_FILE", "LOG_FILE"]
