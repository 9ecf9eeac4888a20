"""Readers that turn a data spec into raw pandas frames, one per split, before any cleaning.

A spec is `builtin:NAME`, `modelscope:OWNER/NAME`, `hf:OWNER/NAME`, a data file, or a folder of
split files. Hub loaders are imported lazily: they are optional and slow to import.
"""

from __future__ import annotations

import csv
import io
import numbers
from pathlib import Path

import numpy as np
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
    if path.exists():
        return {"train": read_table(path)}  # refuses what is not a regular file
    raise UserError(
        f"data '{spec}' not found: pass an existing .csv/.tsv/.jsonl/.json/.parquet file or folder, "
        "builtin:NAME (see `freezetune data list`), hf:OWNER/NAME or modelscope:OWNER/NAME"
    )


def is_data_file(spec: str) -> bool:
    """Whether `spec` names one local data file (rather than a folder, a hub dataset or builtin data)."""
    return not spec.startswith(("builtin:", "modelscope:", "hf:")) and Path(spec).expanduser().is_file()


def read_table(path: Path) -> pd.DataFrame:
    """One data file as a frame; text files are decoded as UTF-8, UTF-8 with BOM, then GB18030.

    The frame's `attrs["source"]` is the file's path, for messages about its cells (see `check_cells`).
    """
    if not path.is_file():  # a pipe or a device would block the read, or never end
        problem = "not a regular file" if path.exists() else "not found"
        raise UserError(f"{path}: {problem}: pass a .csv/.tsv/.jsonl/.json/.parquet file")
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise UserError(f"{path}: unsupported file type '{suffix}': use one of {', '.join(FILE_SUFFIXES)}")
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".tsv"):
            frame = _read_delimited(path, _decode(path), "\t" if suffix == ".tsv" else ",")
        else:
            # .json may be a JSON array or JSON lines; .jsonl is always lines. Values keep their JSON types
            # (only JSON null is missing; dtype=False: strings are not converted to numbers).
            text = _decode(path)
            lines = suffix == ".jsonl" or not text.lstrip().startswith("[")
            frame = pd.read_json(io.StringIO(text), lines=lines, dtype=False)
    except UserError:
        raise
    except Exception as exc:  # pandas/pyarrow/csv raise many types for malformed files
        raise UserError(f"{path}: cannot be parsed as {suffix[1:]} ({type(exc).__name__}: {exc}); fix the file") from exc
    frame.attrs["source"] = str(path)
    return frame


def _read_delimited(path: Path, text: str, delimiter: str) -> pd.DataFrame:
    """A CSV/TSV as a frame of strings, every row with exactly the header's fields.

    Read with the csv module rather than pandas: pandas silently pads short rows, and takes the extra leading
    fields of long rows as an index, shifting every column (a text with an unquoted comma becomes its label).
    Every cell is a string, none read as missing: a text or label spelled NA, null or None is kept as written
    (an empty cell is "", dropped later as empty).
    """
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # a cell may be as long as the file
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), delimiter=delimiter)
    columns, rows, end = None, [], 0
    for row in reader:
        start, end = end + 1, reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # a blank line
        if columns is None:
            # Unnamed columns as pandas names them (e.g. the index column of DataFrame.to_csv).
            columns = [name or f"Unnamed: {i}" for i, name in enumerate(row)]
            _check_unique_columns(path, columns)
        elif len(row) != len(columns):
            raise UserError(_ragged_row_message(path, start, end, len(row), len(columns), delimiter))
        else:
            rows.append(row)
    if columns is None:
        raise UserError(f"{path}: the file is empty: its first line must name the columns")
    return pd.DataFrame(rows, columns=columns, dtype=str)


def _check_unique_columns(path: Path, columns: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(columns, 1):
        if name in seen:
            raise UserError(f"{path}: the header names the column '{name}' twice (columns {seen[name]} and {i}): "
                            "rename one")
        seen[name] = i


def _ragged_row_message(path: Path, start: int, end: int, fields: int, width: int, delimiter: str) -> str:
    where = f"line {start}" if start == end else f"the row on lines {start}-{end} (a quoted text spans them)"
    text = 'a text that contains a comma in double quotes ("a, b")' if delimiter == "," else \
        "a text that contains a tab in double quotes"
    return (f"{path}: {where} has {_fields(fields)} but the header has {width}: put {text}, a quote inside it as "
            f'"", so that every row has {_fields(width)}')


def _fields(n: int) -> str:
    return f"{n} field" if n == 1 else f"{n} fields"


def check_cells(frame: pd.DataFrame, column: str, where: str) -> None:
    """Refuse a cell of `column` that is neither a string nor a number (a JSON object or list, a parquet array,
    bytes): its Python repr, such as "{'a': 1}", would silently become a text or a label. `where`: the file."""
    values = frame[column]
    if values.dtype != object:  # string and number columns hold nothing else
        return
    bad = values.map(lambda v: not _is_plain_cell(v)).to_numpy(dtype=bool)
    if bad.any():
        row = int(bad.argmax())
        value = values.iloc[row]
        kind = {"dict": "an object", "list": "a list", "ndarray": "a list", "tuple": "a list"}.get(
            type(value).__name__, f"a {type(value).__name__}")
        shown = repr(value if not isinstance(value, np.ndarray) else value.tolist())
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise UserError(f"{where}: row {row + 1}: the '{column}' value is {kind} ({shown}), not a string or number: "
                        "give every text and label as one string or number")


def _is_plain_cell(value) -> bool:
    return value is None or value is pd.NA or isinstance(value, (str, numbers.Number, np.bool_))


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
