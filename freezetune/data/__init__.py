"""The data layer: any spec -> cleaned `Splits` with integer labels.

Every source (builtin, hub, local file or folder) goes through the same checks here, so errors read the
same whatever the data came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..config import DEFAULT_LABEL_COLUMN, DEFAULT_TEXT_COLUMN, check_distinct_columns
from ..errors import UserError
from .builtin import load_builtin
from .sources import check_cells, is_data_file, read_raw_splits, read_table
from .splits import LABEL, TEXT, Splits

__all__ = ["Splits", "load_splits", "EvaluationSet", "load_evaluation_set", "TEXT", "LABEL"]
WHOLE_FILE = "whole file"


def load_splits(
    spec: str,
    text_column: str = DEFAULT_TEXT_COLUMN,
    label_column: str = DEFAULT_LABEL_COLUMN,
    seed: int = 0,
    validation_fraction: float = 0.1,
) -> Splits:
    """Load, check and encode a dataset. Raises `UserError` for anything the user must fix."""
    check_distinct_columns(text_column, label_column)
    notes: list[str] = []
    display_names: dict = {}
    if spec.startswith("builtin:"):
        builtin = load_builtin(spec.removeprefix("builtin:"))
        frames = builtin.frames
        display_names = {_label_name(raw): name for raw, name in builtin.label_names.items()}
        notes += builtin.cleaning
    else:
        frames = read_raw_splits(spec)

    frames = {split: _select_columns(frame, split, text_column, label_column, notes) for split, frame in frames.items()}
    raw_labels = sorted(frames["train"][LABEL].unique(), key=_label_sort_key)
    if len(raw_labels) < 2:
        raise UserError(f"train has {len(raw_labels)} class(es): a classifier needs at least two distinct labels")
    if "validation" not in frames:
        frames["train"], frames["validation"] = _hold_out_validation(frames["train"], validation_fraction, seed, notes)
    for split in ("validation", "test"):
        if split in frames:
            unseen = sorted(set(frames[split][LABEL]) - set(raw_labels), key=_label_sort_key)
            if unseen:
                raise UserError(
                    f"{split} has labels that train never saw: {', '.join(map(str, unseen))}; "
                    "add examples of them to train or remove them"
                )
    label_ids = {raw: i for i, raw in enumerate(raw_labels)}
    encoded = {split: frame.assign(**{LABEL: frame[LABEL].map(label_ids)}) for split, frame in frames.items()}
    return Splits(
        train=encoded["train"],
        validation=encoded["validation"],
        test=encoded.get("test"),
        label_names=[str(display_names.get(raw, raw)) for raw in raw_labels],
        notes=notes,
    )


def _label_sort_key(name: str):
    # Numeric labels sort as numbers (2 before 10), others as strings: the notebook's sorted(set(labels)).
    number = _as_number(name)
    return (0, number, name) if number is not None else (1, 0.0, name)


def _as_number(name: str) -> float | None:
    try:
        number = float(name)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _select_columns(frame: pd.DataFrame, split: str, text_column: str, label_column: str, notes: list[str]) -> pd.DataFrame:
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        flag = "--text-column" if text_column in missing else "--label-column"
        raise UserError(
            f"{split} has no column {', '.join(repr(c) for c in missing)}; columns are: "
            f"{', '.join(map(str, frame.columns))} (choose with {flag})"
        )
    where = frame.attrs.get("source", split)
    check_cells(frame, text_column, where)
    check_cells(frame, label_column, where)
    text = frame[text_column].astype("string").str.strip()
    labels = frame[label_column].map(_label_name)
    usable = text.notna() & (text != "") & labels.notna() & (labels != "")
    dropped = int((~usable).sum())
    if dropped:
        notes.append(f"{split}: dropped {dropped} rows with an empty or missing text or label")
    if not usable.any():
        raise UserError(f"{split} has no rows with both a text and a label: check the columns '{text_column}' and '{label_column}'")
    padded = int((frame[label_column][usable].map(lambda v: isinstance(v, str) and v != v.strip())).sum())
    if padded:
        notes.append(f"{split}: removed spaces around {padded} labels (e.g. 'a ' is the label 'a')")
    return pd.DataFrame({TEXT: text[usable].astype(str), LABEL: labels[usable]}).reset_index(drop=True)


def _label_name(value) -> str | None:
    """A label as the string that names its class: strings stripped, 3.0 -> '3', None/NaN -> None (missing).

    Labels are names, whatever type the file stored them as, so one column never mixes ints and strings.
    """
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _hold_out_validation(train: pd.DataFrame, fraction: float, seed: int,
                         notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The data has no validation split: hold out `fraction` of train (stratified where every class can appear on
    both sides). Its errors speak of the hold-out, not of a validation file the user never gave."""
    from sklearn.model_selection import train_test_split  # here: scikit-learn takes a second to import

    counts = train[LABEL].value_counts()
    stratify = train[LABEL] if counts.min() >= 2 else None
    try:
        kept, held = train_test_split(train, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise UserError(f"cannot hold out {fraction:.0%} of train's {len(train)} rows for validation ({exc}): "
                        "give a validation file, or change --validation-fraction") from exc
    lost = sorted(set(held[LABEL]) - set(kept[LABEL]), key=_label_sort_key)
    if lost:
        raise UserError(f"the data has no validation split, and holding out {fraction:.0%} of train for it (seed "
                        f"{seed}) took every training row of {', '.join(map(str, lost))} (too few rows to split): "
                        "add examples of them to train, or give a validation file")
    rare = sorted(counts.index[counts < 2], key=_label_sort_key)
    how = "a stratified" if stratify is not None else \
        f"a random (not stratified: {', '.join(map(str, rare))} {'has' if len(rare) == 1 else 'have'} one row)"
    notes.append(f"no validation split: held out {how} {fraction:.0%} of train ({len(held)} rows, seed {seed})")
    return kept.reset_index(drop=True), held.reset_index(drop=True)


@dataclass
class EvaluationSet:
    """Labelled rows to score a trained model on; `labels` are class names, as in the model's id2label."""

    split: str
    """`train`, `validation`, `test`, or `whole file` (a single data file is evaluated whole)."""
    texts: list[str]
    labels: list[str]
    notes: list[str] = field(default_factory=list)


def load_evaluation_set(spec: str, split: str | None = None, text_column: str = DEFAULT_TEXT_COLUMN,
                        label_column: str = DEFAULT_LABEL_COLUMN) -> EvaluationSet:
    """One data file, whole (whatever `split` says: it has no splits); otherwise the `split` of `spec`
    (default: test if there is one, else validation, held out from train as in training)."""
    check_distinct_columns(text_column, label_column)
    if is_data_file(spec):
        notes: list[str] = []
        frame = _select_columns(read_table(Path(spec).expanduser()), "the file", text_column, label_column, notes)
        return EvaluationSet(WHOLE_FILE, frame[TEXT].tolist(), frame[LABEL].tolist(), notes)
    splits = load_splits(spec, text_column, label_column)
    frames = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    split = split or splits.evaluation_split[0]
    if frames.get(split) is None:
        raise UserError(f"the data has no {split} split: choose one of {', '.join(k for k, v in frames.items() if v is not None)}")
    frame = frames[split]
    return EvaluationSet(split, frame[TEXT].tolist(), [splits.label_names[i] for i in frame[LABEL]], splits.notes)
