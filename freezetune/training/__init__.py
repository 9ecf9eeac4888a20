"""Training one run: `train(TrainConfig)` (run.py, read as its phases), the learning-rate search, and the
exact shortcuts that make frozen parts free (prefix_cache.py, compact_embedding.py)."""

from .run import LOG_FILE, METRICS_FILE, RUN_CONFIG_FILE, train

__all__ = ["train", "METRICS_FILE", "RUN_CONFIG_FILE", "LOG_FILE"]
