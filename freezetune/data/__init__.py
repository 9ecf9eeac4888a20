"""The data layer: any spec -> cleaned `Splits` with integer labels.

Every source (builtin, hub, local file or folder) goes through the same checks here, so errors read the
same whatever the data came from.
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import train_test_split

from ..errors import UserError
from .builtin import load_builtin
from .sources import read_raw_splits
from .splits import LABEL, TEXT, Splits

__all__ = ["Splits", "load_splits", "TEXT", "LABEL"]


def load_splits(
    spec: str,
    text_column: str = "sentence",
    label_column: str = "label",
    seed: int = 0,
    validation_fraction: float = 0.1,
) -> Splits:
    """Load, check and encode a dataset. Raises `UserError` for anything the user must fix."""
    notes: list[str] = []
    display_names: dict = {}
    if spec.startswith("builtin:"):
        builtin = load_builtin(spec.removeprefix("builtin:"))
        frames, display_names = builtin.frames, builtin.label_names
        notes += builtin.cleaning
    else:
        frames = read_raw_splits(spec)

    frames = {split: _select_columns(frame, split, text_column, label_column, notes) for split, frame in frames.items()}
    if "validation" not in frames:
        frames["train"], frames["validation"] = _split_off_validation(frames["train"], validation_fraction, seed)
        notes.append(
            f"no validation split: held out a stratified {validation_fraction:.0%} of train "
            f"({len(frames['validation'])} rows, seed {seed})"
        )

    raw_labels = sorted(frames["train"][LABEL].unique(), key=_label_sort_key)
    if len(raw_labels) < 2:
        raise UserError(f"train has {len(raw_labels)} class(es): a classifier needs at least two distinct labels")
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


def _label_sort_key(value):
    # Numeric labels sort as numbers (2 before 10), others as strings: the notebook's sorted(set(labels)).
    return (0, float(value), "") if _is_number(value) else (1, 0.0, str(value))


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _select_columns(frame: pd.DataFrame, split: str, text_column: str, label_column: str, notes: list[str]) -> pd.DataFrame:
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        flag = "--text-column" if text_column in missing else "--label-column"
        raise UserError(
            f"{split} has no column {', '.join(repr(c) for c in missing)}; columns are: "
            f"{', '.join(map(str, frame.columns))} (choose with {flag})"
        )
    out = pd.DataFrame({TEXT: frame[text_column], LABEL: frame[label_column]})
    text = out[TEXT].astype("string").str.strip()
    usable = text.notna() & (text != "") & out[LABEL].notna()
    dropped = int((~usable).sum())
    if dropped:
        notes.append(f"{split}: dropped {dropped} rows with an empty or missing text or label")
    if not usable.any():
        raise UserError(f"{split} has no rows with both a text and a label: check the columns '{text_column}' and '{label_column}'")
    out = out[usable].assign(**{TEXT: text[usable].astype(str)})
    # Labels read from CSV are strings; keep integer-looking ones as ints so '10' sorts after '9'.
    out[LABEL] = out[LABEL].map(_normalise_label)
    return out.reset_index(drop=True)


def _normalise_label(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _split_off_validation(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts = train[LABEL].value_counts()
    # Stratify only when every class can appear on both sides.
    stratify = train[LABEL] if counts.min() >= 2 else None
    try:
        kept, held = train_test_split(train, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise UserError(f"cannot hold out a validation split from {len(train)} rows ({exc}): provide a validation file") from exc
    return kept.reset_index(drop=True), held.reset_index(drop=True)
