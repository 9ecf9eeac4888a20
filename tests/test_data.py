"""The data layer: every source format, encodings, label mapping, and every bad input as a UserError."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from freezetune import UserError, load_splits

ROWS = pd.DataFrame({"sentence": ["好玩", "太差了", "一般般", "很好", "真烂", "还行"] * 5,
                     "label": ["正面", "负面", "中性", "正面", "负面", "中性"] * 5})


def write(frame: pd.DataFrame, path, **kwargs):
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False, **kwargs)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".json":
        path.write_text(json.dumps(frame.to_dict("records"), ensure_ascii=False), encoding="utf-8")
    elif suffix == ".parquet":
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_every_file_format_loads_with_a_stratified_validation_split(tmp_path, suffix):
    splits = load_splits(str(write(ROWS, tmp_path / f"data{suffix}")), validation_fraction=0.2)
    assert splits.label_names == ["中性", "正面", "负面"]  # the notebook's sorted(set(train labels))
    assert len(splits.train) + len(splits.validation) == len(ROWS)
    assert sorted(splits.validation["label"].value_counts()) == [2, 2, 2]  # stratified
    assert any("no validation split" in note for note in splits.notes)
    assert splits.test is None


def test_folder_with_dev_and_test_files(tiny_csv_dir, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for src, dst in (("train", "train"), ("validation", "dev"), ("test", "test")):
        (folder / f"{dst}.csv").write_bytes((tiny_csv_dir / f"{src}.csv").read_bytes())
    splits = load_splits(str(folder))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (120, 40, 40)
    assert splits.evaluation_split[0] == "test"


def test_numeric_labels_sort_as_numbers(tmp_path):
    frame = pd.DataFrame({"sentence": [f"句子{i}" for i in range(40)], "label": [10, 2, 9, 1] * 10})
    splits = load_splits(str(write(frame, tmp_path / "d.csv")))
    assert splits.label_names == ["1", "2", "9", "10"]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "gb18030"])
def test_chinese_csv_encodings(tmp_path, encoding):
    path = tmp_path / "d.csv"
    path.write_bytes(ROWS.to_csv(index=False).encode(encoding))
    assert load_splits(str(path)).label_names == ["中性", "正面", "负面"]


def test_not_text_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"sentence,label\n\xff\xfe\x81\x30\xff,1\n")
    with pytest.raises(UserError, match="not valid UTF-8.*GB18030"):
        load_splits(str(path))


def test_empty_texts_are_dropped_and_counted(tmp_path):
    frame = pd.concat([ROWS, pd.DataFrame({"sentence": ["", None, "  "], "label": ["正面"] * 3})])
    splits = load_splits(str(write(frame, tmp_path / "d.csv")))
    assert "train: dropped 3 rows with an empty or missing text or label" in splits.notes
    assert len(splits.train) + len(splits.validation) == len(ROWS)


@pytest.mark.parametrize(
    "frame, message",
    [
        (ROWS.rename(columns={"sentence": "text"}), "no column 'sentence'; columns are: text, label"),
        (ROWS.assign(sentence=None), "no rows with both a text and a label"),
        (ROWS.assign(label="正面"), "1 class"),
    ],
)
def test_bad_tables(tmp_path, frame, message):
    with pytest.raises(UserError, match=message):
        load_splits(str(write(frame, tmp_path / "d.csv")))


def test_validation_label_unseen_in_train_is_named(tmp_path):
    write(ROWS, tmp_path / "train.csv")
    write(ROWS.assign(label=["正面", "惊喜", "中性", "正面", "负面", "中性"] * 5), tmp_path / "validation.csv")
    with pytest.raises(UserError, match="labels that train never saw: 惊喜"):
        load_splits(str(tmp_path))


def test_missing_data_and_unknown_sources(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="not found"):
        load_splits(str(tmp_path / "nope.csv"))
    with pytest.raises(UserError, match="unknown builtin dataset 'nope'"):
        load_splits("builtin:nope")
    with pytest.raises(UserError, match="no train file"):
        load_splits(str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot load hf:someone/nothing"):
        load_splits("hf:someone/nothing")


def test_modelscope_without_the_extra_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_modelscope(name, *args, **kwargs):
        if name.startswith("modelscope"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_modelscope)
    with pytest.raises(UserError, match=r"pip install 'freezetune\[modelscope\]'"):
        load_splits("modelscope:chqingMS/game_chat")


def test_modelscope_dataset_is_read_split_by_split(monkeypatch):
    """The real loader path with a stand-in MsDataset (the hub is unreachable here)."""
    import sys
    import types

    class FakeMsDataset:
        loaded = None

        @classmethod
        def load(cls, name):
            cls.loaded = name
            return {"train": ROWS.to_dict("records"), "validation": ROWS.head(12).to_dict("records")}

    module = types.ModuleType("modelscope.msdatasets")
    module.MsDataset = FakeMsDataset
    monkeypatch.setitem(sys.modules, "modelscope", types.ModuleType("modelscope"))
    monkeypatch.setitem(sys.modules, "modelscope.msdatasets", module)
    splits = load_splits("modelscope:chqingMS/game_chat")
    assert FakeMsDataset.loaded == "chqingMS/game_chat"
    assert (len(splits.train), len(splits.validation)) == (30, 12)
