"""`--report-to`: the run in a real TensorBoard event file and a real MLflow folder store, read back with the
trackers' own readers; a study's runs by name; a tracker asked for but missing. Also the report's figures, which
leave the program's matplotlib backend alone, and a Ray worker's library output, which follows --verbose."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import freezetune
from freezetune.cli import main
from freezetune.training import train

from .conftest import SPLIT_SIZES, tiny_config

BATCH = 8
STEPS_PER_EPOCH = math.ceil(SPLIT_SIZES["train"] / BATCH)


def tracked_config(tiny_bert, tiny_csv_dir, out, **overrides):
    return tiny_config(tiny_bert, tiny_csv_dir, out, **{"epochs": 2, "batch_size": BATCH, **overrides})


def final_of(metrics: dict) -> dict:
    """What the tracker must hold as final/...: metrics.json's numbers."""
    return {"final/validation_accuracy": metrics["validation"]["accuracy"],
            "final/test_macro_f1": metrics["evaluation"]["macro_f1"], "final/best_epoch": metrics["best_epoch"]}


def event_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def epoch_means(steps: list[tuple[int, float]]) -> list[float]:
    return [sum(v for s, v in steps if (epoch - 1) * STEPS_PER_EPOCH < s <= epoch * STEPS_PER_EPOCH) / STEPS_PER_EPOCH
            for epoch in (1, 2)]


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A local MLflow folder store (MLflow 3 refuses one unless asked), and a client reading it."""
    pytest.importorskip("mlflow", reason="needs the mlflow extra: pip install 'freezetune[mlflow]'")
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(uri)


def mlflow_runs(client) -> dict:
    """The store's runs by name."""
    ids = [e.experiment_id for e in client.search_experiments()]
    return {run.info.run_name: run for run in client.search_runs(ids)}


def test_tensorboard_event_file_holds_each_step_each_epoch_and_the_final_metrics(capfd, tiny_bert, tiny_csv_dir,
                                                                                 tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install 'freezetune[tensorboard]'")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    out = tmp_path / "out"
    code = main(["train", "--model", str(tiny_bert), "--data", str(tiny_csv_dir), "--output-dir", str(out),
                 "--strategy", "freeze1", "--epochs", "2", "--batch-size", str(BATCH), "--lr", "5e-3",
                 "--max-length", "16", "--report-to", "tensorboard"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    scalars = event_scalars(out / "tensorboard")
    # Per step: the training loss, whose epoch means are metrics.json's; per epoch: the validation metrics.
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert epoch_means(scalars["train/loss"]) == pytest.approx([row["train_loss"] for row in metrics["epochs"]])
    assert scalars["eval/accuracy"] == [(STEPS_PER_EPOCH * row["epoch"], pytest.approx(row["accuracy"]))
                                        for row in metrics["epochs"]]
    for tag, value in final_of(metrics).items():
        assert scalars[tag] == [(2 * STEPS_PER_EPOCH, pytest.approx(value))]
    assert not list(tmp_path.glob(".*.resume"))  # the events moved into OUT with the rest
    # No tracker chatter: freezetune's lines on stderr only, and its report on stdout.
    printed = capfd.readouterr()
    assert all(line.startswith("[freezetune]") for line in printed.err.splitlines() if line.strip()), printed.err
    assert "tensorboard" not in printed.out.lower()


def test_a_resumed_run_continues_its_event_file(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    """The events wait beside the checkpoint, which --resume continues: OUT gets the whole curve."""
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install 'freezetune[tensorboard]'")
    from .test_resume import interrupted_at

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    config = tracked_config(tiny_bert, tiny_csv_dir, tmp_path / "out", report_to="tensorboard")
    with interrupted_at(STEPS_PER_EPOCH + 2):  # in epoch 2, after epoch 1's checkpoint
        train(config)
    assert not Path(config.output_dir).exists()
    metrics = train(dataclasses.replace(config, resume=True))
    scalars = event_scalars(Path(config.output_dir) / "tensorboard")
    # Epoch 2's first steps twice (before the interruption, and again), every step at least once.
    assert {s for s, _ in scalars["train/loss"]} == set(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert [s for s, _ in scalars["eval/accuracy"]] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert scalars["final/test_macro_f1"] == [(2 * STEPS_PER_EPOCH, pytest.approx(metrics["evaluation"]["macro_f1"]))]


def test_tensorboard_logging_dir_gets_each_run_in_a_folder_of_its_name(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install 'freezetune[tensorboard]'")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    metrics = train(tracked_config(tiny_bert, tiny_csv_dir, tmp_path / "out", epochs=1, report_to="tensorboard",
                                   run_name="mine"))
    scalars = event_scalars(tmp_path / "tb" / "mine")
    assert scalars["final/test_macro_f1"] == [(STEPS_PER_EPOCH, pytest.approx(metrics["evaluation"]["macro_f1"]))]
    assert not (tmp_path / "out" / "tensorboard").exists()


def test_mlflow_run_holds_each_epoch_the_final_metrics_and_the_options(mlflow_store, tiny_bert, tiny_csv_dir, tmp_path):
    metrics = train(tracked_config(tiny_bert, tiny_csv_dir, tmp_path / "out", report_to="mlflow"))
    (name, run), = mlflow_runs(mlflow_store).items()
    assert name == f"{tiny_bert.name}/freeze1/seed0"
    assert run.info.status == "FINISHED"
    history = mlflow_store.get_metric_history(run.info.run_id, "eval_accuracy")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (STEPS_PER_EPOCH * row["epoch"], pytest.approx(row["accuracy"])) for row in metrics["epochs"]]
    assert len(mlflow_store.get_metric_history(run.info.run_id, "loss")) == 2 * STEPS_PER_EPOCH
    for key, value in final_of(metrics).items():
        assert run.data.metrics[key] == pytest.approx(value)
    assert run.data.params["freezetune.strategy"] == "freeze1"
    assert float(run.data.params["freezetune.lr"]) == metrics["lr"]
    assert run.data.params["freezetune.output_dir"] == str(tmp_path / "out")


@pytest.mark.parametrize("run_name", ["", "mine"])
def test_each_learning_rate_candidate_is_its_own_mlflow_run(mlflow_store, tiny_bert, tiny_csv_dir, tmp_path, run_name):
    metrics = train(tracked_config(tiny_bert, tiny_csv_dir, tmp_path / "out", epochs=1, lr="auto", report_to="mlflow",
                                   run_name=run_name))
    lrs = [trial["lr"] for trial in metrics["lr_search"]]
    base = run_name or f"{tiny_bert.name}/freeze1"
    names = {lr: f"{base}-lr{lr:g}" + ("" if run_name else "/seed0") for lr in lrs}
    runs = mlflow_runs(mlflow_store)
    assert len(lrs) > 1 and sorted(runs) == sorted(names.values())
    for trial in metrics["lr_search"]:
        assert runs[names[trial["lr"]]].data.metrics["final/validation_accuracy"] == pytest.approx(
            trial["validation_accuracy"])


def test_an_mlflow_run_the_program_started_receives_the_run(mlflow_store, tiny_bert, tiny_csv_dir, tmp_path):
    import mlflow

    with mlflow.start_run(run_name="the program's"):
        metrics = train(tracked_config(tiny_bert, tiny_csv_dir, tmp_path / "out", epochs=1, report_to="mlflow"))
        assert mlflow.active_run() is not None  # still the program's to end
    (name, run), = mlflow_runs(mlflow_store).items()
    assert name == "the program's"
    assert run.data.metrics["final/test_accuracy"] == pytest.approx(metrics["evaluation"]["accuracy"])


def test_mlflows_own_messages_follow_verbose_while_a_run_trains(capfd):
    pytest.importorskip("mlflow", reason="needs the mlflow extra: pip install 'freezetune[mlflow]'")
    import logging

    from freezetune import logs
    from freezetune.logs import captured
    from freezetune.training.tracking import quiet

    logs.show_library_output(False)  # the CLI without --verbose
    mlflow_log = logging.getLogger("mlflow")
    before = list(mlflow_log.handlers)
    with captured() as kept, quiet("mlflow"):
        mlflow_log.warning("a message of MLflow's")
    assert "MLflow's" not in capfd.readouterr().err
    assert kept == ["[mlflow] a message of MLflow's"]  # for train.log
    assert mlflow_log.handlers == before  # the program's MLflow prints as before, after the run


def test_compare_names_each_run_after_its_model_strategy_and_seed(mlflow_store, tiny_bert, tiny_csv_dir, tmp_path):
    """The strategy as the study names it: with a recipe that is not the training strategy's name."""
    from freezetune.compare import compare

    out = compare(output_dir=str(tmp_path / "study"), model=str(tiny_bert), data=str(tiny_csv_dir),
                  strategies=["freeze1"], recipes=["ce+balanced"], seeds=[0, 1], epochs=1, batch_size=BATCH, lr=5e-3,
                  max_length=16, report_to="mlflow")
    runs = mlflow_runs(mlflow_store)
    names = {seed: f"{tiny_bert.name}/freeze1@ce+balanced/seed{seed}" for seed in (0, 1)}
    assert sorted(runs) == sorted(names.values())
    for seed, name in names.items():
        metrics = json.loads((out / "runs" / f"freeze1@ce+balanced-seed{seed}" / "metrics.json").read_text())
        assert runs[name].data.metrics["final/test_accuracy"] == pytest.approx(metrics["evaluation"]["accuracy"])
        assert runs[name].data.params["freezetune.seed"] == str(seed)


@pytest.fixture
def nothing_runs(monkeypatch):
    """Any work past the options fails the test loudly (a traceback, not exit 2)."""
    from freezetune.compare import study
    from freezetune.training import run

    def refuse(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(run, "load_splits", refuse)
    monkeypatch.setattr(study, "_run_study", refuse)


@pytest.mark.parametrize("command", ["train", "compare"])
@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_tracker_not_installed_is_one_line_before_any_work(command, tracker, nothing_runs, capfd, tiny_bert,
                                                             tiny_csv_dir, tmp_path, monkeypatch):
    if tracker == "mlflow":  # installed here: hidden from the check, as on a machine without it
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "mlflow" else real(name, *a, **k))
    elif importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    out = tmp_path / "out"
    code = main([command, "--model", str(tiny_bert), "--data", str(tiny_csv_dir), "--output-dir", str(out),
                 "--report-to", tracker])
    err = capfd.readouterr().err
    assert code == 2
    assert err == f"freezetune: error: --report-to {tracker} needs the {tracker} package: pip install " \
                  f"'freezetune[{tracker}]'\n"
    assert not out.exists()


def test_an_mlflow_store_it_cannot_write_is_one_line_before_the_data_loads(nothing_runs, capfd, tiny_bert,
                                                                           tiny_csv_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="needs the mlflow extra: pip install 'freezetune[mlflow]'")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchstore://somewhere")
    code = main(["train", "--model", str(tiny_bert), "--data", str(tiny_csv_dir), "--output-dir", str(tmp_path / "out"),
                 "--report-to", "mlflow"])
    err = capfd.readouterr().err
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("freezetune: error: --report-to mlflow: MLflow cannot store runs at nosuchstore://somewhere")
    assert "MLFLOW_TRACKING_URI" in err


# --- the report's figures and Ray workers ---------------------------------------------------------------------

def test_figures_leave_the_programs_backend_and_settings_alone(tmp_path):
    """A notebook's inline backend survives a study: drawing its files neither switches the backend nor opens
    pyplot figures, and the Chinese font of the confusion matrix is the figure's own."""
    script = """
import sys
import matplotlib
matplotlib.use("svg")  # any backend the program chose
fonts = list(matplotlib.rcParams["font.sans-serif"])
import pandas as pd
from pathlib import Path
from freezetune.compare import plots
summary = pd.DataFrame({"strategy": ["full", "head"], "trainable_params": [1000, 10], "macro_f1_mean": [0.8, 0.5],
                        "macro_f1_std": [0.01, 0.02]})
plots.f1_vs_params(summary, Path(sys.argv[1]) / "f1.png")
plots.confusion_matrix([[3, 1], [0, 4]], ["正面", "负面"], "test", Path(sys.argv[1]) / "confusion.png")
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, matplotlib.rcParams["font.sans-serif"] == fonts)
"""
    root = Path(freezetune.__file__).parent.parent
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=root,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["svg", "False", "True"]
    for name in ("f1.png", "confusion.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_ray_workers_library_output_follows_the_studys_verbose(tiny_splits, tmp_path):
    """A Ray worker is a process of its own: it takes the study's --verbose, as the CLI sets it in the study's
    process (its output reaches the study's console). Called here in-process, on the cheapest cell."""
    from freezetune import logs
    from freezetune.compare import CompareOptions
    from freezetune.compare.executors import _run_cell
    from freezetune.compare.grid import Run, StudyStrategy

    options = CompareOptions(output_dir=str(tmp_path / "study"), strategies=["tfidf"], seeds=[0])
    logs.show_library_output(True)  # what the worker's process may have been left with
    try:
        files = _run_cell(Run(StudyStrategy("tfidf"), 0), tiny_splits, options, verbose=False)
        assert not logs.libraries_verbose()
        assert "metrics.json" in files
        _run_cell(Run(StudyStrategy("tfidf"), 0), tiny_splits, options, verbose=True)
        assert logs.libraries_verbose()
    finally:
        logs.show_library_output(False)
