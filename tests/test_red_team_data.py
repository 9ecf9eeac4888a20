"""Data files and options that could load wrong without a word: each is one error line and exit code 2.

Shifted CSV columns, JSON objects as texts, one column as both texts and labels, pipes, out-of-range seeds,
YAML-only required options, negative --examples, and messages about a validation split the user never gave.
"""

from __future__ import annotations

import json
import os
import signal

import pandas as pd
import pytest

from freezetune import TrainConfig, UserError, load_splits
from freezetune.cli import parse_dataclass
from freezetune.compare import CompareOptions

from .cli_helpers import one_error_line, run

ROWS = pd.DataFrame({"sentence": ["好玩", "太差了", "一般般", "很好", "真烂", "还行"] * 5,
                     "label": ["夸奖", "辱骂", "中性", "夸奖", "辱骂", "中性"] * 5})






def refused(capsys, *argv) -> str:
    """Run the command, check it fails as bad input (exit 2, one line, nothing on stdout); its error line."""
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "", (code, out, err)
    return one_error_line(err)


def csv_file(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- ragged and ambiguous CSV/TSV

GOOD = "".join(f"{t},{lab}\n" for t, lab in zip(ROWS["sentence"], ROWS["label"]))


@pytest.mark.parametrize("text, line", [
    # pandas took the first row's two extra fields as an index: every text became the next field.
    pytest.param("sentence,label\n辱骂,x,好的,夸奖\n" + GOOD, 2, id="extra fields first"),
    pytest.param("sentence,label\n" + GOOD + "好的,不,夸奖\n", 32, id="extra fields later"),
    pytest.param("sentence,label\n" + GOOD + "只有文本\n", 32, id="too few fields"),  # pandas padded it
    pytest.param("sentence,label\n" + "".join(f"{i},{r}" for i, r in enumerate(GOOD.splitlines(True))), 2,
                 id="an index without a header name"),
])
def test_a_row_with_another_field_count_than_the_header_is_refused(capsys, tmp_path, text, line):
    path = csv_file(tmp_path / "d.csv", text)
    error = refused(capsys, "data", "show", path)
    assert f"{path}: line {line} has" in error and "but the header has 2" in error and "double quotes" in error


def test_tsv_rows_are_checked_too(capsys, tmp_path):
    path = csv_file(tmp_path / "d.tsv", "sentence\tlabel\n好\t夸奖\n差\tx\t辱骂\n")
    assert "line 3 has 3 fields but the header has 2" in refused(capsys, "data", "show", path)


def test_train_refuses_a_ragged_file_and_writes_nothing(capsys, tiny_bert, tmp_path):
    path = csv_file(tmp_path / "d.csv", "sentence,label\n辱骂,x,好的,夸奖\n" + GOOD)
    out = tmp_path / "out"
    error = refused(capsys, "train", "--model", tiny_bert, "--data", path, "--output-dir", out, "--epochs", "1")
    assert "line 2 has 4 fields" in error and not out.exists()


def test_an_unterminated_quote_names_the_lines_it_spans(tmp_path):
    path = csv_file(tmp_path / "d.csv", 'sentence,label\n"好,夸奖\n差,辱骂\n')
    with pytest.raises(UserError, match="the row on lines 2-3 .* has 1 field but the header has 2"):
        load_splits(str(path))


def test_a_named_index_column_loads_by_name(capsys, tmp_path):
    path = tmp_path / "d.csv"
    ROWS.to_csv(path, index=True)  # header ",sentence,label": the index column has no name
    splits = load_splits(str(path))
    assert splits.label_names == ["中性", "夸奖", "辱骂"]
    assert set(splits.train["text"]) | set(splits.validation["text"]) == set(ROWS["sentence"])


def test_quoted_commas_quotes_and_line_breaks_load_as_written(tmp_path):
    texts = ['好, 很好', '他说"好"', "两\n行", "  空格  ", "NA"] * 6
    frame = pd.DataFrame({"sentence": texts, "label": ["a", "b", "a", "b", "a"] * 6})
    path = tmp_path / "d.csv"
    path.write_bytes(frame.to_csv(index=False, lineterminator="\r\n").encode("utf-8-sig"))  # Excel's way
    splits = load_splits(str(path), validation_fraction=0.2)
    loaded = sorted(splits.train["text"].tolist() + splits.validation["text"].tolist())
    assert loaded == sorted(t.strip() for t in texts)


def test_a_duplicated_column_name_is_refused(capsys, tmp_path):
    path = csv_file(tmp_path / "d.csv", "sentence,label,label\n" + "".join(f"{r.strip()},x\n" for r in GOOD.splitlines()))
    assert f"{path}: the header names the column 'label' twice (columns 2 and 3)" in refused(capsys, "data", "show", path)


# --------------------------------------------------------------------------- cells that are no text or label

@pytest.mark.parametrize("suffix, column, value, kind", [
    (".jsonl", "sentence", {"a": "好"}, "an object"),
    (".json", "label", ["夸奖"], "a list"),
    (".parquet", "label", ["夸奖"], "a list"),
])
def test_objects_and_lists_in_cells_are_refused(capsys, tmp_path, suffix, column, value, kind):
    records = ROWS.to_dict("records")
    records[3][column] = value
    path = tmp_path / f"d{suffix}"
    if suffix == ".parquet":
        pd.DataFrame({"sentence": ROWS["sentence"], "label": [[v] for v in ROWS["label"]]}).to_parquet(path)
        row = 1
    else:
        lines = [json.dumps(r, ensure_ascii=False) for r in records]
        path.write_text("\n".join(lines) if suffix == ".jsonl" else "[" + ",".join(lines) + "]", encoding="utf-8")
        row = 4
    error = refused(capsys, "data", "show", path)
    assert f"{path}: row {row}: the '{column}' value is {kind}" in error and "not a string or number" in error


def test_predict_file_refuses_an_object_as_text(capsys, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"sentence": "好"}\n{"sentence": {"a": 1}}\n', encoding="utf-8")
    error = refused(capsys, "predict", "--model", tmp_path / "no-model", "--file", path)  # before any model loads
    assert f"{path}: row 2: the 'sentence' value is an object" in error


# --------------------------------------------------------------------------- one column as texts and labels

def test_one_column_as_texts_and_labels_is_refused(capsys, tmp_path):
    path = tmp_path / "d.csv"
    ROWS.to_csv(path, index=False)
    same = ["--text-column", "label", "--label-column", "label"]
    message = "--text-column and --label-column are both 'label'"
    assert message in refused(capsys, "data", "show", path, *same)
    assert message in refused(capsys, "eval", "--model", tmp_path / "no-model", "--data", path, *same)
    assert message in refused(capsys, "train", "--model", tmp_path / "no-model", "--data", path, "--output-dir",
                              tmp_path / "out", *same)
    with pytest.raises(UserError, match=message):
        CompareOptions(output_dir=str(tmp_path / "study"), data=str(path), text_column="label", label_column="label")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- files that are not regular files

@pytest.fixture
def no_hang():
    """Fail, rather than hang the suite, if a test blocks reading a pipe."""
    def blocked(signum, frame):
        raise AssertionError("blocked reading a pipe")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_as_data_is_not_a_regular_file(capsys, tmp_path, no_hang):
    folder = tmp_path / "data"
    folder.mkdir()
    os.mkfifo(folder / "train.csv")
    assert f"{folder / 'train.csv'}: not a regular file" in refused(capsys, "data", "show", folder)
    os.mkfifo(tmp_path / "pipe.csv")
    error = refused(capsys, "data", "show", tmp_path / "pipe.csv")
    assert "not a regular file" in error and "not found" not in error
    with pytest.raises(UserError, match="not a regular file"):
        load_splits(str(tmp_path / "pipe.csv"))


# --------------------------------------------------------------------------- seeds

def nowhere(tmp_path) -> list:
    """Flags that make a run fail at its first step, should an option check miss."""
    return ["--model", tmp_path / "no-model", "--data", tmp_path / "no-data.csv"]


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_out_of_numpys_range_is_refused(capsys, tmp_path, seed):
    error = refused(capsys, "train", *nowhere(tmp_path), "--output-dir", tmp_path / "out", "--seed", seed)
    assert f"--seed must be an integer from 0 to 4294967295, got {seed}" in error
    error = refused(capsys, "compare", *nowhere(tmp_path), "--output-dir", tmp_path / "study", "--seeds", f"0,{seed}")
    assert f"--seeds must be an integer from 0 to 4294967295, got {seed}" in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "study").exists()


def test_the_largest_seed_is_accepted(tmp_path):
    assert TrainConfig(output_dir=str(tmp_path / "out"), seed=2**32 - 1).seed == 2**32 - 1
    assert CompareOptions(output_dir=str(tmp_path / "s"), seeds=["0", "4294967295"]).seeds == [0, 4294967295]


@pytest.mark.parametrize("seeds", ["0,0,1", "0,1,00"])
def test_a_seed_given_twice_is_refused(capsys, tmp_path, seeds):
    error = refused(capsys, "compare", *nowhere(tmp_path), "--output-dir", tmp_path / "study", "--seeds", seeds)
    assert "--seeds names 0 more than once" in error and not (tmp_path / "study").exists()


# --------------------------------------------------------------------------- output_dir in a YAML config

def test_train_takes_output_dir_from_its_yaml_config(capsys, tiny_bert, tiny_csv_dir, tmp_path):
    out = tmp_path / "from-yaml"
    config = tmp_path / "train.yaml"
    config.write_text(f"output_dir: {out}\nepochs: 1\nmax_length: 16\nstrategy: head\n", encoding="utf-8")
    code, _, err = run(capsys, "train", "--config", config, "--model", tiny_bert, "--data", tiny_csv_dir)
    assert code == 0, err
    assert json.loads((out / "run_config.json").read_text(encoding="utf-8"))["output_dir"] == str(out)


def test_compare_takes_output_dir_from_its_yaml_config_and_a_flag_overrides_it(tmp_path):
    config = _yaml(tmp_path / "study.yaml", output_dir=tmp_path / "yaml-study", seeds="[0]")
    options = parse_dataclass(CompareOptions, ["--config", str(config)], "freezetune compare", "")
    assert options.output_dir == str(tmp_path / "yaml-study")
    options = parse_dataclass(CompareOptions, ["--config", str(config), "-o", str(tmp_path / "flag")], "compare", "")
    assert options.output_dir == str(tmp_path / "flag")
    train_config = _yaml(tmp_path / "train.yaml", output_dir=tmp_path / "t")
    assert parse_dataclass(TrainConfig, ["--config", str(train_config)], "train", "").output_dir == str(tmp_path / "t")


def _yaml(path, **values):
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items()), encoding="utf-8")
    return path


def test_output_dir_is_still_required_from_flags_or_the_file(capsys, tmp_path):
    config = _yaml(tmp_path / "c.yaml", epochs=1)
    assert "--output-dir" in refused(capsys, "train", "--config", config, *nowhere(tmp_path))
    assert "--output-dir" in refused(capsys, "compare", "--config", config, *nowhere(tmp_path))
    empty = _yaml(tmp_path / "e.yaml", output_dir='""')
    assert "--output-dir" in refused(capsys, "train", "--config", empty, *nowhere(tmp_path))


# --------------------------------------------------------------------------- small ones

def test_data_show_refuses_negative_examples(capsys, tmp_path):
    path = tmp_path / "d.csv"
    ROWS.to_csv(path, index=False)
    assert "--examples must be at least 0, got -3" in refused(capsys, "data", "show", path, "--examples", "-3")
    code, out, _ = run(capsys, "data", "show", path, "--examples", "0")
    assert code == 0 and out.rstrip().endswith("examples:")


def test_tokenize_refuses_json_and_dict_together(capsys, tmp_path):
    error = refused(capsys, "tokenize", "好", "--json", "--dict", "--model", tmp_path / "no-model")
    assert "--json and --dict" in error


# One row of "稀有": too few to stratify, so the hold-out is random and sometimes takes it.
RARE = pd.concat([ROWS, pd.DataFrame({"sentence": ["罕见"], "label": ["稀有"]})], ignore_index=True)


def test_hold_out_errors_and_notes_say_what_the_hold_out_did(tmp_path):
    path = tmp_path / "d.csv"
    RARE.to_csv(path, index=False)
    errors, notes = [], []
    for seed in range(30):
        try:
            notes += load_splits(str(path), seed=seed).notes
        except UserError as exc:
            errors.append(str(exc))
    assert errors and notes  # some seeds hold the rare row out, others keep it
    for error in errors:  # not "validation has labels that train never saw": the user gave no validation file
        assert "no validation split, and holding out 10% of train" in error and "稀有" in error
    held = [n for n in notes if n.startswith("no validation split")]
    assert held and all("a random (not stratified: 稀有 has one row) 10%" in n for n in held)


def test_hold_out_that_leaves_train_one_class_says_so(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"sentence": [f"句{i}" for i in range(10)], "label": ["a"] * 9 + ["b"]}).to_csv(path, index=False)
    errors = []
    for seed in range(30):
        try:
            load_splits(str(path), seed=seed)
        except UserError as exc:
            errors.append(str(exc))
    assert errors and all("holding out" in e and "b" in e and "1 class" not in e for e in errors)
