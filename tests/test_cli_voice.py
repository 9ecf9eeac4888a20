"""What the CLI prints: freezetune's own lines, not the libraries' (their loading report, bars and the Trainer's
log dicts), unless --verbose asks for them; a run's train.log keeps the libraries' messages either way."""

from __future__ import annotations

import importlib.util
import json
import logging

import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from freezetune.cli import main

from .cli_helpers import run

# Each of these is library output that a user without --verbose must not see.
LIBRARY_NOISE = ("Loading weights", "LOAD REPORT", "MISMATCH", "Reinit", "Writing model shards", "{'loss'",
                 "'eval_loss'", "train_runtime")
TRAIN = ("--epochs", "1", "--lr", "5e-3", "--max-length", "16", "--strategy", "head")




def assert_quiet(text: str) -> None:
    assert [noise for noise in LIBRARY_NOISE if noise in text] == [], text


@pytest.fixture(scope="module")
def trained(tiny_bert, tiny_csv_dir, tmp_path_factory):
    """A 3-label model trained by the CLI (quietly: the tests below read what it printed in their own runs)."""
    out = tmp_path_factory.mktemp("voice") / "model"
    assert main(["train", "--model", str(tiny_bert), "--data", str(tiny_csv_dir), "--output-dir", str(out), *TRAIN]) == 0
    return out


def test_train_prints_freezetunes_lines_and_train_log_keeps_the_libraries(capfd, tiny_bert, tiny_csv_dir, tmp_path):
    code, out, err = run(capfd, "train", "--model", tiny_bert, "--data", tiny_csv_dir, "--output-dir", tmp_path / "m",
                         *TRAIN)
    assert code == 0
    assert_quiet(out + err)
    assert "[freezetune] new classification head for 3 labels (the checkpoint had none)" in err
    log = (tmp_path / "m" / "train.log").read_text(encoding="utf-8")
    library = log.split("library messages:")[1]
    assert "LOAD REPORT" in library and "classifier.weight" in library and "\x1b[" not in library
    assert "new classification head for 3 labels" in library  # beside the report it explains


def test_verbose_shows_the_libraries_own_output_on_any_command(capfd, tiny_bert, tiny_csv_dir, trained, tmp_path):
    code, out, err = run(capfd, "train", "--model", tiny_bert, "--data", tiny_csv_dir, "--output-dir", tmp_path / "m",
                         *TRAIN, "--verbose")
    assert code == 0
    assert "LOAD REPORT" in err and "Loading weights" in err and "Writing model shards" in err
    assert "'eval_loss'" in out + err  # the Trainer's own log printing
    assert "new classification head for 3 labels" in err  # freezetune's line too
    code, _, err = run(capfd, "--verbose", "predict", "今天游戏真好", "--model", trained)
    assert code == 0 and "Loading weights" in err
    code, _, err = run(capfd, "predict", "今天游戏真好", "--model", trained)  # the next command is quiet again
    assert code == 0
    assert_quiet(err)


def test_a_checkpoint_with_another_head_gets_a_new_one_in_freezetunes_words(capfd, trained, tiny_csv_dir, tmp_path):
    two = tmp_path / "two"
    two.mkdir()
    for split in ("train", "validation", "test"):
        frame = pd.read_csv(tiny_csv_dir / f"{split}.csv")
        frame[frame["label"] != "中性"].to_csv(two / f"{split}.csv", index=False)
    code, out, err = run(capfd, "train", "--model", trained, "--data", two, "--output-dir", tmp_path / "m", *TRAIN)
    assert code == 0
    assert_quiet(out + err)
    assert "[freezetune] new classification head for 2 labels (the checkpoint had 3)" in err
    # The new head forgets the temperature folded into the old one: the record is this run's fit alone.
    config = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text(encoding="utf-8"))
    assert config["freezetune_temperature"] == pytest.approx(metrics["details"]["calibration"]["temperature"])


def test_compare_with_an_lr_grid_shows_no_trainer_dicts(capfd, tiny_bert, tiny_csv_dir, tmp_path):
    code, out, err = run(capfd, "compare", "--model", tiny_bert, "--data", tiny_csv_dir, "--output-dir", tmp_path / "s",
                         "--epochs", "1", "--max-length", "16", "--strategies", "head", "--seeds", "0",
                         "--lr-grid", "1e-3,5e-3")
    assert code == 0
    assert_quiet(out + err)
    assert out.strip().startswith("wrote ") and "lr 0.005" in err


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs the onnx extra")
def test_predict_and_export_are_quiet(capfd, trained, tmp_path):
    code, out, err = run(capfd, "predict", "今天游戏真好", "队友太差", "--model", trained)
    assert code == 0 and len(out.splitlines()) == 2
    assert_quiet(err)
    code, out, err = run(capfd, "export", "--model", trained, "--output-dir", tmp_path / "onnx", "--int8")
    assert code == 0
    assert_quiet(out + err)
    assert "pre-processing before quantization" not in err  # onnxruntime's advice through the root logger
    assert err.strip().startswith("wrote ")


def test_missing_encoder_weights_are_a_warning_in_freezetunes_words(caplog, tiny_bert, tmp_path):
    from freezetune.models import load_classifier

    folder = tmp_path / "damaged"
    folder.mkdir()
    for item in tiny_bert.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    weights = load_file(folder / "model.safetensors")
    dropped = sorted(key for key in weights if "layer.1.output.dense" in key)
    save_file({k: v for k, v in weights.items() if k not in dropped}, folder / "model.safetensors", metadata={"format": "pt"})
    with caplog.at_level(logging.INFO, logger="freezetune"):
        load_classifier(str(folder), ["a", "b", "c"])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("freezetune")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {len(dropped)} encoder weights were not in the "
                                                         "checkpoint and start random: ")
    assert "layer.1.output.dense" in warnings[0] and "classifier" not in warnings[0]


def test_in_jupyter_the_trainer_draws_no_bar_of_its_own(tmp_path):
    """In a notebook the Trainer adds NotebookProgressCallback (an HTML table) instead of ProgressCallback: it
    gives way to freezetune's one bar there too."""
    import torch
    from transformers import PrinterCallback, ProgressCallback, Trainer, TrainingArguments
    from transformers.utils.notebook import NotebookProgressCallback

    from freezetune.training.progress import training_progress

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = Trainer(model=torch.nn.Linear(1, 1), args=args)
    trainer.add_callback(NotebookProgressCallback)  # as the Trainer does when it finds itself in a notebook
    with training_progress(trainer):
        kinds = {type(c) for c in trainer.callback_handler.callbacks}
        assert not kinds & {ProgressCallback, PrinterCallback, NotebookProgressCallback}


def test_the_python_api_speaks_as_the_cli_and_train_log_keeps_the_libraries(capfd, tiny_bert, tiny_csv_dir, tmp_path):
    """freezetune.train in a program that configured no logging: freezetune's lines, not transformers' LOAD REPORT
    or bars, on the console; train.log keeps the report; transformers' own console handler is back afterwards."""
    from transformers.utils import logging as transformers_logging

    import freezetune

    transformers_logging.get_logger("transformers").warning("configure")  # transformers installs its console handler
    library = logging.getLogger("transformers")
    before = list(library.handlers)
    freezetune.train(model=str(tiny_bert), data=str(tiny_csv_dir), output_dir=str(tmp_path / "m"), epochs=1,
                     lr=5e-3, max_length=16, strategy="head")
    out, err = capfd.readouterr()
    assert_quiet(out + err)
    assert "[freezetune] new classification head for 3 labels" in err
    assert "LOAD REPORT" in (tmp_path / "m" / "train.log").read_text(encoding="utf-8").split("library messages:")[1]
    assert library.handlers == before and transformers_logging.is_progress_bar_enabled()
