"""Baselines that need no pretrained model; each returns the same record as a fine-tune (`freezetune.results.RunResult`, as a dict)."""

from freezetune.baselines.lstm import run_lstm
from freezetune.baselines.tfidf import run_tfidf

__all__ = ["run_lstm", "run_tfidf"]
