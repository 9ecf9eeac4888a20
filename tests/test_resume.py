"""`--resume`: a run killed at any point continues from its last completed epoch, to the same metrics.json."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import Trainer

import freezetune
import freezetune.training.resume as resume
from freezetune import TrainConfig, UserError
from freezetune.cli import main
from freezetune.training import train

SOURCE_ROOT = Path(freezetune.__file__).resolve().parents[1]  # the freezetune under test, for the subprocess
TIMINGS = ("train_seconds", "train_samples_per_second", "peak_memory_mb")  # differ between any two runs


def settings(tiny_bert, tiny_csv_dir, strategy: str, **overrides) -> dict:
    return {"model": str(tiny_bert), "data": str(tiny_csv_dir), "strategy": strategy, "epochs": 3, "batch_size": 4,
            "lr": 5e-3, "max_length": 16, "precision": "fp32", **overrides}


def as_flags(options: dict) -> list[str]:
    return [item for key, value in options.items() for item in (f"--{key.replace('_', '-')}", str(value))]


def without_timings(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in TIMINGS}


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The metrics of an uninterrupted run with the same options and seed (each computed once)."""
    computed = {}

    def metrics(options: dict, tag: str = "") -> dict:
        key = json.dumps(options, sort_keys=True) + tag
        if key not in computed:
            out = tmp_path_factory.mktemp("reference") / "out"
            computed[key] = without_timings(train(TrainConfig(**options, output_dir=str(out))))
        return computed[key]

    return metrics


@contextlib.contextmanager
def interrupted_at(step: int):
    """Ctrl-C in the middle of training, just before optimizer step `step` (counted from 0)."""
    original = Trainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step == step:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    Trainer.training_step = training_step
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        Trainer.training_step = original


def saved_epoch(out: Path) -> float:
    (checkpoint,) = resume.complete_checkpoints(resume.resume_dir(out))
    return json.loads((checkpoint / "trainer_state.json").read_text())["epoch"]


# --- a real `python -m freezetune train` killed with SIGKILL --------------------------------------------------

@pytest.mark.parametrize("strategy", ["full", "freeze1+emb"])  # freeze1+emb: prefix cache, compact embeddings off
def test_sigkill_then_resume_gives_the_uninterrupted_metrics(strategy, tiny_bert, tiny_csv_dir, tmp_path, monkeypatch,
                                                            reference, request):
    options = settings(tiny_bert, tiny_csv_dir, strategy, batch_size=2)  # 60 steps an epoch: time to kill in epoch 2
    # One thread everywhere, as in the killed subprocess: another thread count sums floats in another order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    expected = reference(options, tag="one-thread")
    work, scratch = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    scratch.mkdir()
    out, stage = work / "out", work / ".out.resume"
    command = ["train", *as_flags(options), "--output-dir", str(out)]
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SOURCE_ROOT), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "freezetune", *command], env=env, stdout=subprocess.DEVNULL,
                                stderr=stderr)
    deadline = time.monotonic() + 300
    while not list(stage.glob("checkpoint-*/freezetune.pt")):  # epoch 1's checkpoint is complete: kill in epoch 2
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    proc.kill()  # SIGKILL
    proc.wait(timeout=60)
    assert not out.exists() and not list(work.glob(".out.partial-*"))
    assert 1 <= saved_epoch(out) < 3  # killed with training left to do (almost always in epoch 2)
    assert list(scratch.glob("freezetune-trainer-*"))  # what the SIGKILL left; the resumed run removes it

    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the resumed run works in the killed one's TMPDIR
    assert main([*command, "--resume"]) == 0
    assert without_timings(read_metrics(out)) == expected
    assert read_metrics(out)["cached_layers"] == (1 if strategy == "freeze1+emb" else 0)
    assert "resuming after epoch" in (out / "train.log").read_text(encoding="utf-8")
    assert sorted(p.name for p in work.iterdir()) == ["out"]  # checkpoint and lock gone
    assert not list(scratch.glob("freezetune-*"))


# --- in-process interruptions: every strategy, every moment ---------------------------------------------------

@pytest.mark.parametrize("strategy, precision, extra", [("gradual", "fp32", {}), ("lora", "fp32", {}), ("head", "fp32", {}),
                                                        ("full", "bf16", {}), ("freeze1", "fp32", {"ema": 0.9})],
                         ids=["gradual", "lora", "head", "full-bf16", "ema"])  # ema: the average is in the checkpoint
def test_interrupted_mid_epoch_resumes_exactly(strategy, precision, extra, tiny_bert, tiny_csv_dir, tmp_path, reference):
    options = settings(tiny_bert, tiny_csv_dir, strategy, precision=precision, **extra)
    expected = reference(options)
    out = tmp_path / "out"
    with interrupted_at(step=45):  # 30 steps an epoch: in the middle of epoch 2
        train(TrainConfig(**options, output_dir=str(out)))
    assert saved_epoch(out) == 1 and not out.exists()
    assert without_timings(train(TrainConfig(**options, output_dir=str(out), resume=True))) == expected
    assert without_timings(read_metrics(out)) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_kill_while_a_checkpoint_is_written_keeps_the_last_complete_one(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch,
                                                                         reference):
    options = settings(tiny_bert, tiny_csv_dir, "freeze1")
    expected = reference(options)
    out = tmp_path / "out"
    write = resume.write_durably

    def dies_writing_epoch_2(path: Path, data):
        if path.name == resume.MARKER_FILE and path.parent.name == "checkpoint-60":
            path.with_name(f".{path.name}.tmp-1").write_bytes(b"half a fi")  # what a kill leaves
            raise KeyboardInterrupt
        write(path, data)

    monkeypatch.setattr(resume, "write_durably", dies_writing_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**options, output_dir=str(out)))
    monkeypatch.setattr(resume, "write_durably", write)
    stage = resume.resume_dir(out)
    assert sorted(p.name for p in stage.glob("checkpoint-*")) == ["checkpoint-30", "checkpoint-60"]
    assert saved_epoch(out) == 1  # checkpoint-60 is incomplete: ignored, then removed
    assert without_timings(train(TrainConfig(**options, output_dir=str(out), resume=True))) == expected


def test_stopped_after_training_resumes_without_training_again(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch,
                                                              reference):
    options = settings(tiny_bert, tiny_csv_dir, "freeze1", early_stopping=1)
    expected = reference(options)
    out = tmp_path / "out"
    from freezetune.training import run

    evaluate = run.evaluate

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "evaluate", interrupted)  # killed between the last epoch and writing OUT
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**options, output_dir=str(out)))
    monkeypatch.setattr(run, "evaluate", evaluate)

    # The checkpoint is not lost by a run without --resume, and a different run cannot continue it.
    with pytest.raises(UserError, match="unfinished run .*--resume to continue it, or --overwrite"):
        train(TrainConfig(**options, output_dir=str(out)))
    with pytest.raises(UserError, match="other epochs, lr: resume with the same options"):
        train(TrainConfig(**{**options, "lr": 1e-3, "epochs": 2}, output_dir=str(out), resume=True))

    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("trained again"))
    assert without_timings(train(TrainConfig(**options, output_dir=str(out), resume=True))) == expected


def test_other_data_is_refused_and_overwrite_starts_again(tiny_bert, tiny_csv_dir, tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    shutil.copytree(tiny_csv_dir, data)
    options = settings(tiny_bert, data, "head", epochs=2)
    with interrupted_at(step=45):
        train(TrainConfig(**options, output_dir=str(out)))
    assert resume.resumable(out)
    frame = pd.read_csv(data / "train.csv")
    frame.loc[0, "sentence"] += "好"  # the same path and options, other content
    frame.to_csv(data / "train.csv", index=False)
    with pytest.raises(UserError, match="data of .* differ from this run's"):
        train(TrainConfig(**options, output_dir=str(out), resume=True))
    metrics = train(TrainConfig(**options, output_dir=str(out), overwrite=True))
    assert "resuming" not in (out / "train.log").read_text(encoding="utf-8") and len(metrics["epochs"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "out"]


def test_a_diverged_run_leaves_no_checkpoint(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    from freezetune.training.run import StopOnNonFiniteLoss

    def diverges_in_epoch_2(self, args, state, control, logs=None, **kwargs):
        if state.epoch and state.epoch > 1.5:
            raise UserError("the training loss became nan")

    monkeypatch.setattr(StopOnNonFiniteLoss, "on_log", diverges_in_epoch_2)
    with pytest.raises(UserError, match="nan"):
        train(TrainConfig(**settings(tiny_bert, tiny_csv_dir, "head"), output_dir=str(tmp_path / "out")))
    assert list(tmp_path.iterdir()) == []  # continuing would diverge the same way


# --- the command line ----------------------------------------------------------------------------------------

def test_resume_without_a_checkpoint_is_one_line_exit_2(tiny_bert, tiny_csv_dir, tmp_path, capsys):
    command = ["train", *as_flags(settings(tiny_bert, tiny_csv_dir, "head")), "--output-dir", str(tmp_path / "out")]
    assert main([*command, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume: no checkpoint of an unfinished run" in err and "without --resume" in err
    assert main([*command, "--resume", "--overwrite"]) == 2
    assert "--resume and --overwrite contradict" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_resume_of_a_finished_run_says_so(tiny_bert, tiny_csv_dir, tmp_path):
    options = settings(tiny_bert, tiny_csv_dir, "head", epochs=1)
    train(TrainConfig(**options, output_dir=str(tmp_path / "out")))
    with pytest.raises(UserError, match="already exists .*nothing to resume"):
        train(TrainConfig(**options, output_dir=str(tmp_path / "out"), resume=True))


# --- compare --resume continues inside an unfinished run -------------------------------------------------------

def test_compare_resume_continues_an_unfinished_run(tiny_bert, tiny_csv_dir, tmp_path, reference):
    from freezetune.compare import CompareOptions, compare

    options = settings(tiny_bert, tiny_csv_dir, "freeze1")
    del options["strategy"]
    expected = reference({**options, "strategy": "freeze1"})
    study = CompareOptions(**options, strategies=["freeze1"], seeds=[0], output_dir=str(tmp_path / "study"))
    with interrupted_at(step=45):
        compare(study)
    run = tmp_path / "study" / "runs" / "freeze1-seed0"
    assert saved_epoch(run) == 1 and not run.exists()
    compare(CompareOptions(**{**vars(study), "resume": True}))
    assert without_timings(read_metrics(run)) == expected
    assert "resuming after epoch 1" in (run / "train.log").read_text(encoding="utf-8")
    assert not resume.resume_dir(run).exists()


def test_no_checkpoints_saves_none_and_gives_the_same_result(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    saved, real = [], Trainer._save_checkpoint
    monkeypatch.setattr(Trainer, "_save_checkpoint", lambda self, *a, **k: saved.append(1) or real(self, *a, **k))
    options = settings(tiny_bert, tiny_csv_dir, "freeze1", epochs=2)
    with_checkpoints = train(TrainConfig(output_dir=str(tmp_path / "a"), **options))
    assert len(saved) == 2  # one per epoch
    saved.clear()
    without = train(TrainConfig(output_dir=str(tmp_path / "b"), checkpoints=False, **options))
    assert saved == []
    assert without_timings(without) == without_timings(with_checkpoints)


def test_a_checkpoint_from_before_an_option_existed_resumes_with_its_default(tiny_bert, tiny_csv_dir, tmp_path):
    config = TrainConfig(output_dir=str(tmp_path / "out"), resume=True, **settings(tiny_bert, tiny_csv_dir, "freeze1"))
    folder = resume.resume_dir(config.output_dir)
    (folder / "checkpoint-5").mkdir(parents=True)
    torch.save({}, folder / "checkpoint-5" / resume.MARKER_FILE)  # complete and readable, as far as the check looks
    older = {k: v for k, v in resume.run_defining(config).items() if k != "rdrop"}  # written before --rdrop existed
    (folder / resume.RECORD_FILE).write_text(json.dumps({"options": older, "data": ""}), encoding="utf-8")
    assert resume.Checkpoints.open(config).resume  # the missing rdrop counts as its default, 0: the same run
    (folder / resume.RECORD_FILE).write_text(json.dumps({"options": {**older, "rdrop": 1.0}, "data": ""}), encoding="utf-8")
    with pytest.raises(UserError, match="other rdrop"):
        resume.Checkpoints.open(config)
