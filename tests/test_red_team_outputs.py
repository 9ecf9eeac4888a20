"""Output folders, checkpoints, model loading and prediction output under careless or hostile use.

Each test reproduces a report that was a deleted folder, a traceback or a lost result: one error line and exit
code 2 (or, where the fix is to do the work, the work done), with nothing touched. Tiny model trained once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from transformers import Trainer

import freezetune
from freezetune.errors import UserError
from freezetune.outputs import check_output_dir
from freezetune.training import train
from freezetune.training.resume import resume_dir

from .cli_helpers import forbid, one_error_line, run, tree
from .conftest import tiny_config

SOURCE_ROOT = Path(freezetune.__file__).resolve().parents[1]  # the freezetune under test, for subprocesses
# The flags of `tiny_config(..., epochs=2)` on the command line: a --resume must repeat the run's options.
EPOCHS = 2










def train_flags(tiny_bert, tiny_csv_dir, out) -> list:
    return ["train", "--model", tiny_bert, "--data", tiny_csv_dir, "--output-dir", out, "--strategy", "freeze1",
            "--epochs", EPOCHS, "--batch-size", 4, "--lr", 5e-3, "--max-length", 16]


@pytest.fixture(scope="module")
def model_dir(tiny_bert, tiny_csv_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("outputs") / "model"
    train(tiny_config(tiny_bert, tiny_csv_dir, out, epochs=1))
    return out


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    from freezetune.inference.export import export_onnx

    return export_onnx(str(model_dir), str(tmp_path_factory.mktemp("outputs") / "onnx"))


@pytest.fixture(scope="module")
def unfinished(tiny_bert, tiny_csv_dir, tmp_path_factory):
    """The checkpoint folder of a run stopped by Ctrl-C in its second epoch (epoch 1 complete)."""
    out = tmp_path_factory.mktemp("unfinished") / "out"
    original = Trainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step == 35:  # 30 steps an epoch
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    Trainer.training_step = training_step
    try:
        with pytest.raises(KeyboardInterrupt):
            train(tiny_config(tiny_bert, tiny_csv_dir, out, epochs=EPOCHS))
    finally:
        Trainer.training_step = original
    assert not out.exists()
    return resume_dir(out)


def user_notes(folder: Path) -> Path:
    """A folder of the user's own files, which freezetune never wrote."""
    (folder / "sub").mkdir(parents=True)
    (folder / "todo.txt").write_text("my notes")
    (folder / "sub" / "metrics.json").write_text("{}")  # a freezetune file name, deeper down, is no run
    return folder


# --------------------------------------------------------------------------- --overwrite replaces only our folders


def test_overwrite_refuses_a_folder_freezetune_did_not_write(capsys, monkeypatch, model_dir, tiny_bert, tiny_csv_dir,
                                                            tmp_path):
    notes = user_notes(tmp_path / "notes")
    before = tree(tmp_path)
    forbid(monkeypatch, "freezetune.training.run.load_splits", "freezetune.training.lr_search.load_splits",
           "freezetune.models.load_tokenizer")
    for argv in ([*train_flags(tiny_bert, tiny_csv_dir, notes), "--overwrite"],
                 [*train_flags(tiny_bert, tiny_csv_dir, notes), "--overwrite", "--lr", "auto"],
                 ["export", "--model", model_dir, "--output-dir", notes, "--overwrite"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "freezetune did not write" in one_error_line(err), argv
    assert tree(tmp_path) == before  # the notes, and no lock, checkpoint or staging folder beside them


def test_a_checkpoint_beside_a_refused_output_is_kept(capsys, unfinished, tiny_bert, tiny_csv_dir, tmp_path):
    notes = user_notes(tmp_path / "out")
    shutil.copytree(unfinished, resume_dir(notes))
    before = tree(tmp_path)
    code, _, err = run(capsys, *train_flags(tiny_bert, tiny_csv_dir, notes), "--overwrite")
    assert code == 2 and "freezetune did not write" in one_error_line(err)
    assert tree(tmp_path) == before


def test_overwrite_accepts_runs_exports_old_and_new_and_empty_folders(model_dir, exported, tmp_path):
    old_export = tmp_path / "old-export"  # written before export.json: model.onnx beside the copied run_config.json
    old_export.mkdir()
    for name in ("model.onnx", "run_config.json", "config.json"):
        shutil.copy2(Path(exported) / name, old_export / name)
    (tmp_path / "empty").mkdir()
    assert (Path(exported) / "export.json").is_file()
    for folder in (model_dir, exported, old_export, tmp_path / "empty"):
        check_output_dir(folder, overwrite=True)
    with pytest.raises(UserError, match="freezetune did not write"):
        check_output_dir(user_notes(tmp_path / "notes"), overwrite=True)


# --------------------------------------------------------------------------- outputs that cannot be swapped in


def test_the_current_folder_or_one_above_it_is_refused_before_training(capsys, monkeypatch, model_dir, tiny_bert,
                                                                      tiny_csv_dir, tmp_path):
    work = tmp_path / "parent" / "run"
    shutil.copytree(model_dir, work)  # a finished run: --overwrite would replace it, were it not in use
    monkeypatch.chdir(work)
    before = tree(tmp_path)
    forbid(monkeypatch, "freezetune.training.run.load_splits", "freezetune.training.lr_search.load_splits")
    for out, where in ((".", "the current folder"), ("..", "above the current folder"),
                       (tmp_path, "above the current folder"), ("../run/sub/..", "the current folder")):
        code, _, err = run(capsys, *train_flags(tiny_bert, tiny_csv_dir, out), "--overwrite")
        assert code == 2 and where in one_error_line(err), out
    with pytest.raises(UserError, match="above the current folder"):
        check_output_dir("/", overwrite=True)
    assert tree(tmp_path) == before  # no ..old-*, ..resume or lock left


def test_a_mount_point_is_refused(monkeypatch, model_dir):
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == Path(model_dir).resolve() or real(path))
    with pytest.raises(UserError, match="is a mount point"):
        check_output_dir(model_dir, overwrite=True)


# --------------------------------------------------------------------------- predict --output into a new folder


def test_predict_output_creates_its_folder_like_train(capsys, model_dir, tmp_path):
    output = tmp_path / "new" / "deeper" / "p.csv"
    code, _, err = run(capsys, "predict", "好", "差", "--model", model_dir, "--output", output)
    assert code == 0 and "Traceback" not in err
    assert pd.read_csv(output)["text"].tolist() == ["好", "差"]
    # A failure before predicting creates nothing.
    code, _, err = run(capsys, "predict", "好", "--model", tmp_path / "no-model", "--output", tmp_path / "other" / "p.csv")
    assert code == 2 and one_error_line(err) and not (tmp_path / "other").exists()


# --------------------------------------------------------------------------- --resume on a damaged checkpoint


@pytest.mark.parametrize("damaged", ["freezetune.pt", "model.safetensors", "optimizer.pt", "trainer_state.json"])
def test_resume_from_a_damaged_checkpoint_says_so_before_any_work(capsys, monkeypatch, unfinished, tiny_bert,
                                                                  tiny_csv_dir, tmp_path, damaged):
    out = tmp_path / "out"
    shutil.copytree(unfinished, resume_dir(out))
    (file,) = resume_dir(out).glob(f"checkpoint-*/{damaged}")
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # a disk that filled up, a copy cut short
    before = tree(tmp_path)
    forbid(monkeypatch, "freezetune.training.run.load_splits")
    code, _, err = run(capsys, *train_flags(tiny_bert, tiny_csv_dir, out), "--resume")
    line = one_error_line(err)
    assert code == 2 and "is damaged" in line and damaged in line and "--overwrite" in line
    assert tree(tmp_path) == before


def test_resume_names_what_a_foreign_folder_is(capsys, tiny_bert, tiny_csv_dir, tmp_path):
    notes = user_notes(tmp_path / "notes")
    code, _, err = run(capsys, *train_flags(tiny_bert, tiny_csv_dir, notes), "--resume")
    line = one_error_line(err)
    assert code == 2 and "freezetune did not write" in line and "finished run" not in line


# --------------------------------------------------------------------------- hand-edited or damaged model files


def with_fewer_labels(folder: Path, target: Path) -> Path:
    """A copy of `folder` whose config.json names one label less than the head has outputs."""
    shutil.copytree(folder, target)
    config = json.loads((target / "config.json").read_text())
    config["id2label"] = {k: v for k, v in config["id2label"].items() if k != str(len(config["id2label"]) - 1)}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_a_config_that_disagrees_with_the_weights_names_the_file(capsys, model_dir, tiny_csv_dir, tmp_path):
    from freezetune.inference.backends import load_predictor

    edited = with_fewer_labels(model_dir, tmp_path / "edited")
    for argv in (["predict", "好", "--model", edited], ["eval", "--model", edited, "--data", tiny_csv_dir],
                 ["export", "--model", edited, "--output-dir", tmp_path / "onnx"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and str(edited / "config.json") in one_error_line(err), argv
    with pytest.raises(UserError, match="disagrees with the weights"):  # what serve loads
        load_predictor(str(edited))
    assert not (tmp_path / "onnx").exists()


def test_an_exported_config_that_disagrees_with_the_model_names_the_file(capsys, exported, tmp_path):
    edited = with_fewer_labels(Path(exported), tmp_path / "edited")
    code, _, err = run(capsys, "predict", "好", "--model", edited, "--backend", "onnx")
    assert code == 2 and str(edited / "config.json") in one_error_line(err)


def test_a_damaged_onnx_model_names_the_file_and_the_fix(capsys, exported, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(exported, damaged)
    model = damaged / "model.onnx"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
    code, _, err = run(capsys, "predict", "好", "--model", damaged, "--backend", "onnx")
    line = one_error_line(err)
    assert code == 2 and str(model) in line and "export it again" in line


# --------------------------------------------------------------------------- a local path as --model fails at once


def test_a_local_path_that_is_no_model_folder_fails_without_the_hub(capsys, monkeypatch, tmp_path, tiny_csv_dir):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    asked = []

    def hub(source, *args, **kwargs):  # the loaders, which would retry the hub for half a minute
        asked.append(source)
        raise OSError("the hub is unreachable")

    for loader in (AutoConfig, AutoModelForSequenceClassification, AutoTokenizer):
        monkeypatch.setattr(loader, "from_pretrained", hub)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a").mkdir()
    for model, problem in ((tiny_csv_dir / "train.csv", "is a file, not a model folder"), ("./gone", "not found"),
                           ("a/b/c", "not found"), ("../gone/x", "not found"), ("~/no-such-model-here", "not found")):
        code, _, err = run(capsys, "predict", "好", "--model", model)
        assert code == 2 and problem in one_error_line(err) and str(model) in err, model
        code, _, err = run(capsys, "eval", "--model", model, "--data", tiny_csv_dir)
        assert code == 2 and problem in one_error_line(err), model
    assert asked == []
    code, _, err = run(capsys, "predict", "好", "--model", "owner/name")  # a hub id still goes to the hub
    assert code == 2 and asked == ["owner/name"] and "hub is unreachable" in one_error_line(err)


# --------------------------------------------------------------------------- plain predict output: a line per text


def test_plain_predict_output_is_one_line_per_text(capsys, model_dir):
    texts = ["好\n差", "a\tb", "c\\nd", "平常\r", "又\r\n烂", "普通"]
    code, out, _ = run(capsys, "predict", *texts, "--model", model_dir)
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(texts) and all(line.count("\t") == 2 for line in lines)
    unescape = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}
    read_back = [re.sub(r"\\(.)", lambda m: unescape[m[1]], line.split("\t")[2]) for line in lines]
    assert read_back == texts
    assert lines[-1].endswith("\t普通")  # a plain text prints as before
    code, out, _ = run(capsys, "predict", *texts, "--model", model_dir, "--json")
    assert [json.loads(line)["text"] for line in out.splitlines()] == texts  # JSON as before


# --------------------------------------------------------------------------- predict | head


def test_predict_into_a_closed_pipe_stops_quietly(model_dir, tmp_path):
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"sentence": ["今天游戏很好玩家都很开心"] * 3000}).to_csv(texts, index=False)  # far over a pipe's 64 KiB
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SOURCE_ROOT), os.environ.get("PYTHONPATH", "")])}
    predict = subprocess.Popen([sys.executable, "-m", "freezetune", "predict", "--json", "--model", str(model_dir),
                                "--file", str(texts)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    head = subprocess.run(["head", "-n", "1"], stdin=predict.stdout, capture_output=True, timeout=300)
    predict.stdout.close()
    err = predict.stderr.read().decode()
    predict.wait(timeout=60)
    assert json.loads(head.stdout)["text"] == "今天游戏很好玩家都很开心"
    assert predict.returncode in (0, 141) and "Traceback" not in err and "BrokenPipe" not in err, err


def test_a_refused_run_leaves_no_folders_it_made_for_its_output(capsys, tiny_bert, tmp_path):
    """The output lock makes the folders above OUT; a run refused inside it (here: for its data) takes them away
    again, but never a folder that was there before or that holds anything."""
    (tmp_path / "kept").mkdir()
    missing = tmp_path / "no-such-data.csv"
    code, _, err = run(capsys, *train_flags(tiny_bert, missing, tmp_path / "kept" / "a" / "b" / "out"))
    assert code == 2 and "no-such-data.csv" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"] and not any((tmp_path / "kept").iterdir())
