"""Baselines that need no pretrained model; each returns the same dict as `freezetune.train.train`."""

from freezetune.baselines.lstm import run_lstm
from freezetune.baselines.tfidf import run_tfidf

__all__ = ["run_lstm", "run_tfidf"]
