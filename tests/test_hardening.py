"""Hostile and careless input: each case would be a traceback, a silent data change or lost work.

Each test is one such case, checked to fail without its fix. Tiny model trained once per module.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import tokenize
from pathlib import Path

import pandas as pd
import pytest

import freezetune
from freezetune.cli import main
from freezetune.compare import CompareOptions, compare, plots
from freezetune.compare.report import to_html, to_markdown
from freezetune.data import load_splits
from freezetune.errors import UserError
from freezetune.outputs import (
    check_output_dir,
    check_writable,
    output_lock,
    scratch_dir,
    spreadsheet_safe,
    staged_output_dir,
    write_text_atomic,
)

from .cli_helpers import forbid, one_error_line, run, tree

PACKAGE = Path(freezetune.__file__).parent








@pytest.fixture(scope="module")
def model_dir(tiny_bert, tiny_csv_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("harden") / "model"
    assert main(["train", "--model", str(tiny_bert), "--data", str(tiny_csv_dir), "--output-dir", str(out),
                 "--epochs", "1", "--lr", "5e-3", "--max-length", "16"]) == 0
    return out




# --------------------------------------------------------------------------- 1. eval on one file


def test_eval_scores_a_single_file_whole(capsys, model_dir, tiny_csv_dir):
    test_file = tiny_csv_dir / "test.csv"
    code, out, _ = run(capsys, "eval", "--model", model_dir, "--data", test_file, "--json")
    whole = json.loads(out)
    assert code == 0 and whole["split"] == "whole file" and whole["rows"] == len(pd.read_csv(test_file))
    # The same rows as the folder's test split, hence the same report; --split does not hide them.
    code, out, _ = run(capsys, "eval", "--model", model_dir, "--data", tiny_csv_dir, "--split", "test", "--json")
    folder = json.loads(out)
    assert whole["confusion_matrix"] == folder["confusion_matrix"] and whole["accuracy"] == folder["accuracy"]
    code, out, _ = run(capsys, "eval", "--model", model_dir, "--data", test_file, "--split", "test", "--json")
    assert code == 0 and json.loads(out)["rows"] == whole["rows"]
    assert freezetune.evaluate(str(model_dir), str(test_file))["rows"] == whole["rows"]  # the README's example


# --------------------------------------------------------------------------- 2. unwritable outputs


def test_output_under_a_regular_file_fails_before_any_work(capsys, monkeypatch, model_dir, tiny_csv_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    forbid(monkeypatch, "freezetune.models.load_tokenizer", "freezetune.inference.predict.Predictor", "freezetune.data.load_splits")
    for argv in (["export", "--model", model_dir, "--output-dir", blocker / "onnx"],
                 ["predict", "好", "--model", model_dir, "--output", blocker / "sub" / "p.csv"],
                 ["compare", "--data", tiny_csv_dir, "--strategies", "tfidf", "--seeds", "0", "--output-dir", blocker / "study"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "is a file, not a folder" in one_error_line(err), argv
    with pytest.raises(UserError, match="is a file, not a folder"):  # what `train` checks before training
        check_output_dir(blocker / "run", overwrite=False)
    assert blocker.read_text() == "not a folder" and list(tmp_path.iterdir()) == [blocker]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into read-only folders, so chmod cannot make one here")
def test_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UserError, match="cannot write in"):
            check_writable(folder / "new" / "out")
    finally:
        folder.chmod(0o755)


# --------------------------------------------------------------------------- 3. compare checks before touching


def fake_study(folder: Path) -> dict:
    (folder / "runs" / "tfidf-seed0").mkdir(parents=True)
    (folder / "runs" / "tfidf-seed0" / "metrics.json").write_text("{}")
    (folder / "compare.json").write_text("{}")
    return tree(folder)


def test_compare_overwrite_with_a_bad_model_keeps_the_previous_study(tiny_bert, tiny_csv_dir, tmp_path):
    out = tmp_path / "study"
    before = fake_study(out)
    misspelt = f"{tiny_bert}-typo"  # a local path: a misspelt hub id would wait on the network here
    with pytest.raises(UserError, match="model folder .*-typo not found"):
        compare(CompareOptions(output_dir=str(out), model=misspelt, data=str(tiny_csv_dir),
                               strategies=["full"], seeds=[0], overwrite=True))
    with pytest.raises(UserError, match="no column 'review'"):
        compare(CompareOptions(output_dir=str(out), data=str(tiny_csv_dir), text_column="review",
                               strategies=["tfidf"], seeds=[0], overwrite=True))
    assert tree(out) == before


@pytest.mark.parametrize("option, message", [({"epochs": 0}, "--epochs must be an integer of at least 1"),
                                             ({"batch_size": -1}, "--batch-size must be an integer of at least 1"),
                                             ({"lstm_lr": 0}, "--lstm-lr must be a positive number")])
def test_compare_bad_option_leaves_nothing(tiny_csv_dir, tmp_path, option, message):
    with pytest.raises(UserError, match=message):
        compare(CompareOptions(output_dir=str(tmp_path / "out"), data=str(tiny_csv_dir), strategies=["lstm", "tfidf"],
                               seeds=[0], **option))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- 4. silent data changes


def labelled(path: Path, labels: list, texts: list | None = None) -> Path:
    frame = pd.DataFrame({"sentence": texts or [f"句子{i}" for i in range(len(labels))], "label": labels})
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path)
    return path


def test_labels_spelled_like_missing_values_are_classes(tmp_path):
    names = ["None", "NA", "null", "a", "N/A", "nan"]
    splits = load_splits(str(labelled(tmp_path / "d.csv", names * 10)))
    assert splits.label_names == sorted(names)
    assert len(splits.train) + len(splits.validation) == 60 and not any("dropped" in n for n in splits.notes)


def test_label_spaces_are_stripped_and_reported(tmp_path):
    splits = load_splits(str(labelled(tmp_path / "d.csv", ["a", "a ", " b", "b"] * 10)))
    assert splits.label_names == ["a", "b"]
    assert "train: removed spaces around 20 labels (e.g. 'a ' is the label 'a')" in splits.notes


def test_mixed_number_and_text_labels_load(tmp_path):
    # Was: TypeError '<' not supported between 'str' and 'int' (sorting and stratifying).
    splits = load_splits(str(labelled(tmp_path / "d.csv", ["10", "a", "2", "b", "9"] * 10)))
    assert splits.label_names == ["2", "9", "10", "a", "b"]  # numbers as numbers, first


def test_typed_formats_keep_types_and_only_real_nulls_are_missing(tmp_path):
    texts = ["NA", "null", "None", "好的"] * 10
    splits = load_splits(str(labelled(tmp_path / "d.jsonl", [1, 10, 2, None] * 10, texts)), validation_fraction=0.2)
    assert splits.label_names == ["1", "2", "10"]
    assert sorted(set(splits.train["text"]) | set(splits.validation["text"])) == ["NA", "None", "null"]
    assert "train: dropped 10 rows with an empty or missing text or label" in splits.notes
    # Parquet stores integer labels with a missing one as floats: 1.0 is the class "1".
    assert load_splits(str(labelled(tmp_path / "d.parquet", [1.0, 10.0, 2.0, None] * 10))).label_names == ["1", "2", "10"]


def test_predict_file_keeps_texts_spelled_like_missing_values(capsys, model_dir, tmp_path):
    texts = ["NA", "null", "None", "nan", "好"]
    pd.DataFrame({"sentence": texts}).to_csv(tmp_path / "in.csv", index=False)
    code, out, _ = run(capsys, "predict", "--model", model_dir, "--file", tmp_path / "in.csv", "--json")
    assert code == 0 and [json.loads(line)["text"] for line in out.splitlines()] == texts


# --------------------------------------------------------------------------- 5. an output that is the input


def test_export_into_its_own_model_folder_is_refused(capsys, model_dir):
    before = tree(model_dir.parent)
    for output in (model_dir, model_dir.parent):
        code, _, err = run(capsys, "export", "--model", model_dir, "--output-dir", output, "--overwrite")
        line = one_error_line(err)
        assert code == 2 and "the input --model" in line and ("is the input" in line or "contains the input" in line)
    assert tree(model_dir.parent) == before


def test_predict_output_over_its_input_file_is_refused(capsys, model_dir, tmp_path):
    pd.DataFrame({"sentence": ["好"]}).to_csv(tmp_path / "in.csv", index=False)
    before = (tmp_path / "in.csv").read_text()
    code, _, err = run(capsys, "predict", "--model", model_dir, "--file", tmp_path / "in.csv",
                       "--output", tmp_path / "in.csv", "--overwrite")
    assert code == 2 and "is the input --file" in one_error_line(err)
    assert (tmp_path / "in.csv").read_text() == before


def test_compare_output_holding_its_data_is_refused(tiny_csv_dir, tmp_path):
    shutil.copytree(tiny_csv_dir, tmp_path / "study" / "data")
    with pytest.raises(UserError, match="contains the input --data"):
        compare(CompareOptions(output_dir=str(tmp_path / "study"), data=str(tmp_path / "study" / "data"),
                               strategies=["tfidf"], seeds=[0], overwrite=True))


# --------------------------------------------------------------------------- 6. one line, not a traceback


def test_damaged_weights_file_is_one_line(capsys, model_dir, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(model_dir, damaged)
    data = (damaged / "model.safetensors").read_bytes()
    (damaged / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "predict", "好", "--model", damaged)
    assert code == 2 and "weights file is damaged" in one_error_line(err)


def test_tokenize_negative_max_length_is_one_line(capsys, tiny_bert):
    code, _, err = run(capsys, "tokenize", "好", "--model", tiny_bert, "--max-length", "-5")
    assert code == 2 and "--max-length must be at least 1" in one_error_line(err)


def test_predict_output_that_is_a_folder_is_one_line(capsys, model_dir, tmp_path):
    (tmp_path / "out.csv").mkdir()
    code, _, err = run(capsys, "predict", "好", "--model", model_dir, "--output", tmp_path / "out.csv", "--overwrite")
    assert code == 2 and "is a folder" in one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_failed_atomic_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "taken", "text")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


@pytest.mark.parametrize("names", [["$_$", "b"], ["a$b$c", "US$ 5"], ["$}$", "$"]])
def test_dollar_signs_in_class_names_plot_as_text(tmp_path, names):
    import matplotlib.pyplot as plt

    if names[0] in ("$_$", "$}$"):  # the test can fail: unescaped, matplotlib reads these as broken math
        fig, ax = plt.subplots()
        ax.set_xticks([0, 1], names)
        with pytest.raises(ValueError):
            fig.savefig(tmp_path / "raw.png")
        plt.close(fig)
    path = plots.confusion_matrix([[3, 1], [0, 4]], names, f"best {names[0]}", tmp_path / "cm.png")
    assert path.stat().st_size > 0


# --------------------------------------------------------------------------- 7. a model without a trained head


def test_predict_refuses_an_encoder_without_a_trained_head(capsys, tiny_bert, tmp_path):
    code, out, err = run(capsys, "predict", "好", "--model", tiny_bert)
    assert code == 2 and out == "" and "is not a trained classifier" in one_error_line(err)
    with pytest.raises(UserError, match="is not a trained classifier"):
        freezetune.evaluate(str(tiny_bert), str(labelled(tmp_path / "d.csv", ["a", "b"] * 5)))


# --------------------------------------------------------------------------- 9. signals and leftovers

HOLDER = """
import sys, time
from freezetune import cli
from freezetune.outputs import output_lock, scratch_dir, staged_output_dir

def hold(args):  # stands in for a long run: lock, scratch folder and staging, as training holds them
    with output_lock(args.output_dir), scratch_dir("freezetune-trainer-"), staged_output_dir(args.output_dir, False) as stage:
        (stage / "half-written").write_text("x")
        print("ready", flush=True)
        time.sleep(120)

cli.cmd_export = hold
sys.exit(cli.main(["export", "--model", "unused", "--output-dir", sys.argv[1]]))
"""


def start_holder(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    """A `freezetune` process in the middle of writing tmp_path/work/out, with its own TMPDIR."""
    work, scratch = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(work / "out")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc, work, scratch


def test_sigterm_is_like_ctrl_c_exit_143_nothing_left(tmp_path):
    proc, work, scratch = start_holder(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "freezetune: terminated (SIGTERM); no partial output was kept"
    assert list(work.iterdir()) == [] and list(scratch.iterdir()) == []  # no output, staging, lock or scratch


def test_after_sigkill_the_next_run_removes_leftovers_and_gets_the_lock(monkeypatch, tmp_path):
    proc, work, scratch = start_holder(tmp_path)
    # The holder is named by pid, host and command line (here `python -c HOLDER OUT`).
    with pytest.raises(UserError, match=rf"being written by another run \(pid {proc.pid} on .+: -c .+work/out\)"):
        with output_lock(work / "out"):
            pass
    proc.kill()
    proc.wait(timeout=60)
    assert [p.name for p in work.glob(".out.partial-*")] and [p.name for p in scratch.glob("freezetune-trainer-*")]
    with output_lock(work / "out"):  # the kernel released the dead process's lock
        with staged_output_dir(work / "out", overwrite=False) as stage:
            (stage / "result").write_text("whole")
    assert sorted(p.name for p in work.iterdir()) == ["out"] and (work / "out" / "result").read_text() == "whole"
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with scratch_dir("freezetune-trainer-") as mine:
        assert list(scratch.iterdir()) == [mine]
    assert list(scratch.iterdir()) == []


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_run_killed_mid_swap_gets_its_previous_result_back(tmp_path):
    from freezetune.outputs import HOST

    old = tmp_path / f".out.old-{dead_pid()}@{HOST}-abc123"
    (old / "out").mkdir(parents=True)
    (old / "out" / "result").write_text("previous")
    with pytest.raises(UserError, match="already exists"):  # the previous result is back, and not overwritten
        with staged_output_dir(tmp_path / "out", overwrite=False):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (tmp_path / "out" / "result").read_text() == "previous"


def test_live_processes_keep_their_folders(tmp_path):
    from freezetune.outputs import HOST

    mine = tmp_path / f".out.partial-{os.getpid()}@{HOST}-abc123"
    other_host = tmp_path / f".out.partial-{dead_pid()}@not-{HOST}-abc123"
    for folder in (mine, other_host):
        folder.mkdir()
    with staged_output_dir(tmp_path / "out", overwrite=False):
        pass
    assert mine.is_dir() and other_host.is_dir()


# --------------------------------------------------------------------------- 10. two runs, one output


def test_a_locked_output_is_refused_naming_the_holder(capsys, model_dir, tiny_csv_dir, tmp_path):
    out = tmp_path / "out"
    with output_lock(out):
        lock = tmp_path / ".out.lock"
        assert f"pid {os.getpid()} on " in lock.read_text()
        code, _, err = run(capsys, "export", "--model", model_dir, "--output-dir", out)
        assert code == 2 and f"being written by another run (pid {os.getpid()}" in one_error_line(err)
        with pytest.raises(UserError, match="being written by another run"):
            compare(CompareOptions(output_dir=str(out), data=str(tiny_csv_dir), strategies=["tfidf"], seeds=[0]))
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the lock


# --------------------------------------------------------------------------- 11. resume only a study


def test_compare_resume_refuses_a_folder_that_is_not_a_study(model_dir, tiny_csv_dir, tmp_path):
    folder = tmp_path / "a-model"
    shutil.copytree(model_dir, folder)
    before = tree(folder)
    for flag in ("resume", "overwrite"):
        with pytest.raises(UserError, match="holds no study"):
            compare(CompareOptions(output_dir=str(folder), data=str(tiny_csv_dir), strategies=["tfidf"], seeds=[0],
                                   **{flag: True}))
    assert tree(folder) == before


# --------------------------------------------------------------------------- 12. injection into outputs


def test_predict_csv_escapes_spreadsheet_formulas(capsys, model_dir, tmp_path):
    texts = ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "\tTAB", "好=好"]
    pd.DataFrame({"sentence": texts}).to_csv(tmp_path / "in.csv", index=False)
    for suffix in (".csv", ".jsonl"):
        code, _, _ = run(capsys, "predict", "--model", model_dir, "--file", tmp_path / "in.csv", "--output", tmp_path / f"p{suffix}")
        assert code == 0
    written = pd.read_csv(tmp_path / "p.csv", dtype=str, keep_default_na=False)["text"].tolist()
    assert written == ["'" + t for t in texts[:5]] + ["好=好"]
    assert pd.read_json(tmp_path / "p.jsonl", lines=True)["text"].tolist() == texts  # JSON is data, not a sheet
    assert spreadsheet_safe(3) == 3


def test_reports_escape_html_in_class_names(tmp_path):
    name = '<img src=x onerror="alert(1)">'
    blocks = [("h1", "study"), ("p", f"classes a, {name}"), ("table", ["strategy", name], [["full", "1 | 2"]])]
    markdown, page = to_markdown(blocks), to_html(blocks, tmp_path)
    for text in (markdown, page):
        assert "<img" not in text and "&lt;img src=x onerror=" in text
    assert "1 \\| 2" in markdown


# --------------------------------------------------------------------------- 13. safe loading, kept so


def package_sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_remote_code_is_ever_trusted():
    for path in package_sources():
        with open(path, "rb") as fh:
            names = {tok.string for tok in tokenize.tokenize(fh.readline) if tok.type == tokenize.NAME}
        assert "trust_remote_code" not in names, path  # comments and docstrings may mention it; code may not


def test_unsafe_deserialisers_are_not_called():
    """torch.load only with weights_only=True; no pickle.load(s), no yaml.load/unsafe_load/full_load."""
    unsafe = {("pickle", "load"), ("pickle", "loads"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load")}
    for path in package_sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
                call = (node.func.value.id, node.func.attr)
                assert call not in unsafe, f"{path}:{node.lineno} calls {'.'.join(call)}"
                if call == ("torch", "load"):
                    assert any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords), path


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # what a malicious pickle does: call a function on load (here: create a file)
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_in_builtin_data_is_refused(tmp_path):
    from freezetune.data.builtin import _read_inews_split

    marker = tmp_path / "pwned"
    (tmp_path / "train.pkl").write_bytes(pickle.dumps((["标题"], [Payload(marker)], [0])))
    with pytest.raises(UserError, match="refusing to load global"):
        _read_inews_split(tmp_path / "train.pkl")
    assert not marker.exists()


def test_malicious_pytorch_bin_is_refused(tiny_bert, tmp_path):
    import torch

    from freezetune.models import load_classifier

    folder, marker = tmp_path / "evil", tmp_path / "pwned"
    shutil.copytree(tiny_bert, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"bert.embeddings.word_embeddings.weight": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="holds more than weights"):
        load_classifier(str(folder), ["a", "b"])
    assert not marker.exists()


def test_yaml_config_cannot_build_objects(tmp_path):
    from freezetune.configs import load_yaml

    config = tmp_path / "evil.yaml"
    config.write_text(f"epochs: !!python/object/apply:builtins.open ['{tmp_path / 'pwned'}', w]\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(str(config), valid=["epochs"])
    assert not (tmp_path / "pwned").exists()
