"""builtin:inews: read without importing the package, refuse pickled globals, cleaned as documented."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest

from freezetune import UserError, load_splits
from freezetune.data.builtin import _read_inews_split, clean_splits


def test_inews_is_cleaned_and_keeps_its_splits():
    splits = load_splits("builtin:inews")
    assert splits.label_names == ["positive", "neutral", "negative"]
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (5218, 996, 999)
    train, held_out = set(splits.train["text"]), set(splits.validation["text"]) | set(splits.test["text"])
    assert not train & held_out
    assert splits.train["text"].is_unique
    assert splits.train["label"].value_counts().to_dict() == {1: 2608, 2: 2053, 0: 557}


def test_cleaning_counts():
    frames = {
        "train": pd.DataFrame({"sentence": ["a", "a", "b", "b", "c", "d"], "label": [0, 0, 1, 2, 1, 0]}),
        "validation": pd.DataFrame({"sentence": ["d", "e"], "label": [0, 1]}),
    }
    cleaned, notes = clean_splits(frames)
    assert cleaned["train"]["sentence"].tolist() == ["a", "c"]
    assert notes[0] == "train: 6 rows, dropped 2 rows of 1 titles with conflicting labels and 1 duplicates"
    assert notes[-1] == "train: removed 1 rows whose title also occurs in validation/test"


def test_pickles_naming_globals_are_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps((["t"], ["c"], [pd.Timestamp("2020-01-01")])))
    with pytest.raises(UserError, match="refusing to load global"):
        _read_inews_split(path)
