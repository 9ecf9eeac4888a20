"""Readers that turn a data spec into raw pandas frames, one per split, before any cleaning.

A spec is `builtin:NAME`, `modelscope:OWNER/NAME`, `hf:OWNER/NAME`, a data file, or a folder of
split files. Hub loaders are imported lazily: they are optional and slow to import.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from ..errors import UserError

FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
# Chinese CSVs are often saved by Excel as UTF-8 with a BOM or as GB18030 (a superset of GBK/GB2312).
TEXT_ENCODINGS = ("utf-8", "utf-8-sig", "gb18030")
# Other names a split goes by, mapped to ours.
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test",
}


def read_raw_splits(spec: str) -> dict[str, pd.DataFrame]:
    """Frames keyed by `train` / `validation` / `test` (only those the source has)."""
    if spec.startswith("modelscope:"):
        return _read_modelscope(spec.removeprefix("modelscope:"))
    if spec.startswith("hf:"):
        return _read_hf_hub(spec.removeprefix("hf:"))
    path = Path(spec).expanduser()
    if path.is_dir():
        return _read_folder(path)
    if path.is_file():
        return {"train": read_table(path)}
    raise UserError(
        f"data '{spec}' not found: pass an existing .csv/.tsv/.jsonl/.json/.parquet file or folder, "
        "builtin:NAME (see `freezetune data list`), hf:OWNER/NAME or modelscope:OWNER/NAME"
    )


def is_data_file(spec: str) -> bool:
    """Whether `spec` names one local data file (rather than a folder, a hub dataset or builtin data)."""
    return not spec.startswith(("builtin:", "modelscope:", "hf:")) and Path(spec).expanduser().is_file()


def read_table(path: Path) -> pd.DataFrame:
    """One data file as a frame; text files are decoded as UTF-8, UTF-8 with BOM, then GB18030."""
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise UserError(f"{path}: unsupported file type '{suffix}': use one of {', '.join(FILE_SUFFIXES)}")
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        text = _decode(path)
        if suffix in (".csv", ".tsv"):
            # Every cell a string, none read as missing: a text or label spelled NA, null or None is kept as
            # written (an empty cell is "", dropped later as empty).
            return pd.read_csv(io.StringIO(text), sep="\t" if suffix == ".tsv" else ",", dtype=str,
                               keep_default_na=False)
        # .json may be a JSON array or JSON lines; .jsonl is always lines. Values keep their JSON types
        # (only JSON null is missing; dtype=False: strings are not converted to numbers).
        lines = suffix == ".jsonl" or not text.lstrip().startswith("[")
        return pd.read_json(io.StringIO(text), lines=lines, dtype=False)
    except UserError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for malformed files
        raise UserError(f"{path}: cannot be parsed as {suffix[1:]} ({type(exc).__name__}: {exc}); fix the file") from exc


def _decode(path: Path) -> str:
    data = path.read_bytes()
    for encoding in TEXT_ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise UserError(f"{path}: not valid UTF-8, UTF-8-with-BOM or GB18030 text: re-save it as UTF-8")


def _read_folder(folder: Path) -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = {}
    for file in sorted(folder.iterdir()):
        split = SPLIT_ALIASES.get(file.stem.lower())
        if split and file.suffix.lower() in FILE_SUFFIXES:
            if split in frames:
                raise UserError(f"{folder}: more than one file for the {split} split: keep one")
            frames[split] = read_table(file)
    if "train" not in frames:
        raise UserError(
            f"{folder}: no train file: name the files train / validation (or dev) / test "
            f"with one of {', '.join(FILE_SUFFIXES)}"
        )
    return frames


def _hub_frames(dataset) -> dict[str, pd.DataFrame]:
    """Split frames from a hub dataset indexable by split name (HF DatasetDict or ModelScope MsDataset).

    Split names are probed rather than listed because MsDataset does not expose its split names
    the way a DatasetDict does.
    """
    frames = {}
    for name, split in SPLIT_ALIASES.items():
        if split in frames:
            continue
        try:
            rows = dataset[name]
        except (KeyError, ValueError, IndexError, TypeError):
            continue
        frames[split] = pd.DataFrame([dict(row) for row in rows])
    if "train" not in frames:
        raise UserError("the dataset has no train split: pass a dataset with a 'train' split")
    return frames


def _load_hub(spec: str, load) -> dict[str, pd.DataFrame]:
    """Frames from a hub loader; any failure (no network, unknown id) becomes one actionable line."""
    try:
        return _hub_frames(load())
    except UserError:
        raise
    except Exception as exc:  # hub clients raise many types: connection, HTTP, file-not-found, ...
        raise UserError(
            f"cannot load {spec} ({type(exc).__name__}): check the id and your network, "
            "or save the data as a local file or folder and pass that"
        ) from exc


def _read_hf_hub(name: str) -> dict[str, pd.DataFrame]:
    import datasets

    return _load_hub(f"hf:{name}", lambda: datasets.load_dataset(name))


def _read_modelscope(name: str) -> dict[str, pd.DataFrame]:
    try:
        from modelscope.msdatasets import MsDataset
    except ImportError as exc:
        raise UserError("modelscope: datasets need ModelScope: pip install 'freezetune[modelscope]'") from exc
    # As in the reference notebook: the whole dataset, then its splits.
    return _load_hub(f"modelscope:{name}", lambda: MsDataset.load(name))
