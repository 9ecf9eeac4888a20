"""Training: `train(TrainConfig)` (lr_search.py: one run, or with `--lr auto` the search over several), one run
`train_one` (run.py, read as its phases), and the exact shortcuts that make frozen parts free (prefix_cache.py,
compact_embedding.py). The output folder's file names are in freezetune/layout.py."""

from .lr_search import train

__all__ = ["train"]
