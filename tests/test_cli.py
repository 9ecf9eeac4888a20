"""The command line: each command end to end, and bad input as one line + exit code 2, nothing left behind."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from freezetune.cli import main

from .cli_helpers import run


@pytest.fixture(scope="module")
def model_dir(tiny_bert, tiny_csv_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "model"
    assert main(["train", "--model", str(tiny_bert), "--data", str(tiny_csv_dir), "--output-dir", str(out),
                 "--epochs", "1", "--lr", "5e-3", "--max-length", "16"]) == 0
    return out


def test_tokenize_single_and_pair(capsys, tiny_bert):
    code, out, _ = run(capsys, "tokenize", "今天游戏", "队友真好玩", "--model", tiny_bert, "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 2
    assert rows[0]["tokens"][0] == "[CLS]" and rows[0]["tokens"][-1] == "[PAD]"  # padded to the longest
    assert rows[0]["attention_mask"].count(1) == 6
    code, out, _ = run(capsys, "tokenize", "今天", "游戏", "--pair", "--model", tiny_bert, "--json")
    pair = json.loads(out)
    assert pair["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


def test_the_packaged_imbalanced_config_is_one_flag_for_train(capsys, tiny_bert, tiny_csv_dir, tmp_path):
    from freezetune.configs import load_yaml

    out = tmp_path / "model"
    code, _, _ = run(capsys, "train", "--config", "imbalanced", "--model", tiny_bert, "--data", tiny_csv_dir,
                     "--output-dir", out, "--epochs", "1", "--lr", "5e-3", "--max-length", "16", "--strategy", "head",
                     "--rdrop", "1")  # a flag given as well overrides the config
    run_config = json.loads((out / "run_config.json").read_text(encoding="utf-8"))
    assert code == 0 and load_yaml("imbalanced", valid=list(run_config))["rdrop"] == 3
    assert {k: run_config[k] for k in ("class_weights", "rdrop", "metric", "decision", "calibration")} == {
        "class_weights": "balanced", "rdrop": 1.0, "metric": "macro_f1", "decision": "macro_f1", "calibration": "temperature"}


def test_train_prints_the_report(capsys, tiny_bert, tiny_csv_dir, tmp_path):
    out = tmp_path / "model"
    code, stdout, stderr = run(capsys, "train", "--model", tiny_bert, "--data", tiny_csv_dir, "--output-dir", out,
                               "--epochs", "1", "--lr", "5e-3", "--max-length", "16", "--strategy", "head")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert code == 0 and f"test report (best epoch {metrics['best_epoch']}):" in stdout
    assert f"accuracy {metrics['evaluation']['accuracy']:.4f}" in stdout
    for name in metrics["label_names"]:
        assert f"\n{name}" in stdout  # one row per class
    assert "[freezetune] data: train" in stderr and "strategy head" in stderr  # progress goes to stderr


def test_predict_texts_and_file(capsys, model_dir, tmp_path):
    code, out, _ = run(capsys, "predict", "今天游戏真好", "队友太差", "--model", model_dir, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["text"] for r in rows] == ["今天游戏真好", "队友太差"]
    assert all(r["label"] in ("中性", "正面", "负面") and 0 < r["probability"] <= 1 for r in rows)

    texts = pd.DataFrame({"sentence": ["今天游戏真好", "队友太差", "还行吧"]})
    texts.to_csv(tmp_path / "in.csv", index=False)
    code, _, _ = run(capsys, "predict", "--model", model_dir, "--file", tmp_path / "in.csv", "--output", tmp_path / "out.csv")
    written = pd.read_csv(tmp_path / "out.csv")
    assert code == 0 and written["text"].tolist() == texts["sentence"].tolist()
    # Batched, length-sorted prediction gives the same labels as one text at a time.
    single = [json.loads(run(capsys, "predict", t, "--model", model_dir, "--json")[1])["label"] for t in texts["sentence"]]
    assert written["label"].tolist() == single


def test_eval_reproduces_the_training_report(capsys, model_dir, tiny_csv_dir):
    code, out, _ = run(capsys, "eval", "--model", model_dir, "--data", tiny_csv_dir, "--json")
    report = json.loads(out)
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    assert code == 0 and report["split"] == "test"
    assert report["accuracy"] == pytest.approx(metrics["evaluation"]["accuracy"])
    assert report["confusion_matrix"] == metrics["evaluation"]["confusion_matrix"]


def test_data_list_and_show(capsys):
    code, out, _ = run(capsys, "data", "list")
    assert code == 0 and "builtin:inews" in out
    code, out, _ = run(capsys, "data", "show", "inews")
    assert code == 0 and "5218 rows" in out and "positive: 557" in out


def bad_inputs(tiny_bert, tiny_csv_dir, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "exists").mkdir()
    gbk_garbage = tmp_path / "bad.csv"
    gbk_garbage.write_bytes(b"sentence,label\n\xff\xfe\x81\x30\xff,1\n")
    train = ["train", "--model", tiny_bert, "--epochs", "1"]
    return {
        "missing file": (train + ["--data", tmp_path / "nope.csv"], "not found"),
        "missing column": (train + ["--data", tiny_csv_dir, "--text-column", "review"], "no column 'review'; columns are: sentence, label"),
        "not utf-8": (train + ["--data", gbk_garbage], "not valid UTF-8"),
        "too many layers": (train + ["--data", tiny_csv_dir, "--freeze", "3"], "more than the model's 2 encoder layers"),
        "bad metric": (train + ["--data", tiny_csv_dir, "--metric", "f1"], "argument --metric: invalid choice: 'f1'"),
        "offline model": (["train", "--model", "no-such-user/no-such-model", "--data", tiny_csv_dir], "hub is unreachable"),
        "unknown builtin model": (["train", "--model", "builtin:bert", "--data", tiny_csv_dir], "unknown builtin model"),
        "bad rdrop": (train + ["--data", tiny_csv_dir, "--rdrop", "-0.5"], "--rdrop must be a finite number >= 0"),
        "bad ema": (train + ["--data", tiny_csv_dir, "--ema", "1"], "--ema must be a number from 0 (off) to below 1"),
        "missing teacher": (train + ["--data", tiny_csv_dir, "--distill-from", tmp_path / "nope"], "is not a folder"),
        "bad distill weight": (train + ["--data", tiny_csv_dir, "--distill-weight", "0"],
                               "--distill-weight must be a number above 0 and at most 1"),
    }, tmp_path


@pytest.mark.parametrize("case", ["missing file", "missing column", "not utf-8", "too many layers", "bad metric",
                                  "offline model", "unknown builtin model", "bad rdrop", "bad ema", "missing teacher",
                                  "bad distill weight"])
def test_bad_input_is_one_line_and_exit_2(capsys, tiny_bert, tiny_csv_dir, tmp_path, case):
    cases, tmp = bad_inputs(tiny_bert, tiny_csv_dir, tmp_path / "work")
    argv, message = cases[case]
    code, _, err = run(capsys, *argv, "--output-dir", tmp / "out")
    assert code == 2
    # Progress lines may come first; the error is one line, the last one.
    errors = [line for line in err.splitlines() if line.startswith("freezetune: error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and message in errors[0]
    assert "Traceback" not in err
    assert not (tmp / "out").exists()


def test_existing_output_needs_overwrite(capsys, tiny_bert, tiny_csv_dir, tmp_path):
    (tmp_path / "out").mkdir()
    code, _, err = run(capsys, "train", "--model", tiny_bert, "--data", tiny_csv_dir, "--output-dir", tmp_path / "out")
    assert code == 2 and "already exists" in err and "--overwrite" in err


@pytest.mark.parametrize("command, case", [("train", "existing output"), ("train", "missing data"),
                                           ("compare", "existing output"), ("compare", "missing data")])
def test_a_refused_run_answers_before_the_trainer_is_imported(tiny_bert, tiny_csv_dir, tmp_path, command, case):
    """The output folder and the data are checked before transformers' Trainer (seconds of imports) is loaded."""
    import subprocess
    import sys

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("not a study")
    data, out = (tiny_csv_dir, tmp_path / "out") if case == "existing output" else (tmp_path / "nope.csv", tmp_path / "new")
    argv = [command, "--model", str(tiny_bert), "--data", str(data), "--output-dir", str(out)]
    code = f"import sys\nfrom freezetune.cli import main\ncode = main({argv!r})\nprint(code, 'transformers.trainer' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"], proc.stderr[-2000:]
    assert ("already exists" if case == "existing output" else "not found") in proc.stderr


@pytest.mark.parametrize("command", [["predict", "好"], ["eval", "--data", "builtin:inews"], ["serve", "--port", "0"]])
def test_a_missing_model_folder_is_refused_before_torch_is_imported(tmp_path, command):
    """predict, eval and serve check a --model path before PyTorch and the model loaders are imported (seconds)."""
    import subprocess
    import sys

    argv = [*command, "--model", str(tmp_path / "no-such-model")]
    code = f"import sys\nfrom freezetune.cli import main\ncode = main({argv!r})\nprint(code, 'torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["2", "False"], proc.stderr[-2000:]
    assert "no-such-model not found" in proc.stderr


def test_predict_refuses_to_overwrite(capsys, model_dir, tmp_path):
    (tmp_path / "out.csv").write_text("keep me")
    code, _, err = run(capsys, "predict", "好", "--model", model_dir, "--output", tmp_path / "out.csv")
    assert code == 2 and "already exists" in err and (tmp_path / "out.csv").read_text() == "keep me"


@pytest.mark.parametrize("command", [["predict", "hi"], ["serve"], ["eval", "--data", "builtin:inews"]])
def test_a_bad_batch_size_is_refused_before_the_model_loads(capsys, monkeypatch, command):
    import freezetune.inference.backends as backends

    monkeypatch.setattr(backends, "load_predictor", lambda *a, **k: pytest.fail("loaded a model"))
    code, _, err = run(capsys, *command, "--model", "no-such-folder", "--batch-size", "0")
    assert code == 2 and err.strip().splitlines() == [
        f"freezetune: error: argument --batch-size: must be at least 1, got 0 (see freezetune {command[0]} --help)"]
