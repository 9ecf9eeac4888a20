"""One run on two processes: `torchrun` and `accelerate launch` on the CPU (gloo), against one process.

The comparisons use the same global batch (2 processes x 4 against 1 x 8) with what makes two runs differ even on
one process turned off: dropout (a tiny BERT without it), bf16 (fp32) and length grouping (each process groups
its own batches, so batches hold other examples). Then both runs see the same examples in every step, DDP
averages two 4-row mean gradients into the 8-row mean, and the only difference left is the order of float
additions: losses agree to 1e-5 and the saved models' logits to 1e-4. With the defaults they differ as two seeds do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import freezetune
from freezetune import TrainConfig, UserError
from freezetune.outputs import output_lock
from freezetune.training import train
from freezetune.training.run import prepare

ROOT = Path(freezetune.__file__).parent.parent
EXACT = dict(epochs=3, lr=1e-2, max_length=16, precision="fp32", length_grouping=False, calibration="none")
EXACT_FLAGS = ["--epochs", "3", "--lr", "1e-2", "--max-length", "16", "--precision", "fp32", "--no-length-grouping",
               "--calibration", "none"]
# What the feature case exercises: the prefix cache (embeddings and layer 0 never train), LoRA without its
# dropout, and class weights (our loss function instead of the model's). `full` exercises compact embeddings.
CASES = {"full": ("full", []), "cache+lora+weights": ("freeze1+lora:dropout=0", ["--class-weights", "balanced"])}


@pytest.fixture(scope="module")
def bert_without_dropout(tiny_bert, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert_no_dropout") / "bert"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def single_process(bert_without_dropout, tiny_csv_dir, tmp_path_factory):
    """Each case trained in this process with batch 8: {case: output folder}."""
    outputs = {}
    for case, (strategy, flags) in CASES.items():
        out = tmp_path_factory.mktemp("single") / case
        weights = "balanced" if "--class-weights" in flags else "none"
        train(TrainConfig(output_dir=str(out), model=str(bert_without_dropout), data=str(tiny_csv_dir),
                          strategy=strategy, class_weights=weights, batch_size=8, **EXACT))
        outputs[case] = out
    return outputs


@pytest.fixture(scope="module")
def tiny_texts(tiny_splits):
    return tiny_splits.test["text"].tolist()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun() -> list[str]:
    return ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def accelerate() -> list[str]:
    # --multi_gpu is accelerate's word for several processes, on CPUs too; without it, a machine without GPUs
    # gets one process. The other flags only silence its "defaults used" notice.
    return ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]


def launch(launcher: list[str], *train_args) -> subprocess.CompletedProcess:
    """`python -m <launcher> -m freezetune train ...` with this checkout's freezetune, one thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", *launcher, "-m", "freezetune", "train", *map(str, train_args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def check_one_writer(proc: subprocess.CompletedProcess, out: Path) -> None:
    """Both processes trained; only one wrote, and nothing but the output folder is left beside it."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[freezetune] training on 2 processes" in proc.stderr, "two processes must train"
    assert len(re.findall(r"^\[freezetune\] data: train 120", proc.stderr, re.M)) == 1  # only the main process speaks
    assert proc.stderr.count(f"[freezetune] wrote {out}") == 1
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no .lock, no .partial-* staging folder
    for name in ("metrics.json", "run_config.json", "train.log", "model.safetensors"):
        assert (out / name).is_file(), name


def saved_logits(folder: Path, texts: list[str]):
    from freezetune.inference.classifier import TorchClassifier
    from freezetune.models import load_classifier, load_tokenizer

    return TorchClassifier(load_classifier(str(folder)), load_tokenizer(str(folder)), 64, 16).logits(texts)


def check_same_run(single: Path, distributed: Path, texts: list[str]) -> None:
    a, b = (json.loads((folder / "metrics.json").read_text()) for folder in (single, distributed))
    assert len(a["epochs"]) == len(b["epochs"])
    for row_a, row_b in zip(a["epochs"], b["epochs"]):
        assert row_b == pytest.approx(row_a, rel=1e-5, abs=1e-6)
    for key in ("best_epoch", "cached_layers", "trainable_params", "class_weights"):
        assert b[key] == a[key], key
    # The saved models' outputs, not their weights: a parameter whose exact gradient is 0 (an attention key bias
    # shifts every score of a query alike) gets float noise, which AdamW scales up to steps of size lr.
    logits_a, logits_b = (saved_logits(folder, texts) for folder in (single, distributed))
    assert abs(logits_b - logits_a).max() < 1e-4


@pytest.mark.distributed
@pytest.mark.parametrize("case", CASES)
def test_torchrun_two_processes_equal_one_with_the_same_global_batch(case, single_process, bert_without_dropout,
                                                                     tiny_csv_dir, tiny_texts, tmp_path):
    strategy, flags = CASES[case]
    out = tmp_path / "runs" / "ddp"
    proc = launch(torchrun(), "--model", bert_without_dropout, "--data", tiny_csv_dir, "--strategy", strategy,
                  *flags, *EXACT_FLAGS, "--batch-size", 4, "--output-dir", out)
    check_one_writer(proc, out)
    check_same_run(single_process[case], out, tiny_texts)
    if case != "full":
        assert json.loads((out / "metrics.json").read_text())["cached_layers"] == 1  # the prefix cache was used


@pytest.mark.distributed
def test_accelerate_launch_two_processes_equal_one(single_process, bert_without_dropout, tiny_csv_dir, tiny_texts,
                                                   tmp_path):
    out = tmp_path / "runs" / "accelerate"
    proc = launch(accelerate(), "--model", bert_without_dropout, "--data", tiny_csv_dir, *EXACT_FLAGS,
                  "--batch-size", 4, "--output-dir", out)
    check_one_writer(proc, out)
    check_same_run(single_process["full"], out, tiny_texts)


@pytest.mark.distributed
def test_a_locked_output_stops_every_process_at_once(tiny_bert, tiny_csv_dir, tmp_path):
    """The main process cannot take the lock: every process exits 2 with that line, none waits to be killed."""
    out = tmp_path / "out"
    with output_lock(out):
        proc = launch(torchrun(), "--model", tiny_bert, "--data", tiny_csv_dir, "--epochs", 1, "--output-dir", out)
    assert proc.returncode != 0
    # Counted in the whole text: the two processes' lines may interleave on the shared stderr.
    assert proc.stderr.count("freezetune: error: ") == 2, proc.stderr[-3000:]
    assert proc.stderr.count(f"{out} is being written by another run (pid {os.getpid()} ") == 2
    assert not out.exists()


@pytest.mark.parametrize("strategy", ["gradual", "freeze1+gradual"])
def test_unfreezing_during_the_run_is_refused_on_several_processes(strategy, tiny_bert, tiny_csv_dir, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun tells each process; nothing is launched here
    config = TrainConfig(output_dir=str(tmp_path / "out"), model=str(tiny_bert), data=str(tiny_csv_dir),
                         strategy=strategy, max_length=16)
    with pytest.raises(UserError, match=r"unfreezes layers during the run, which several processes .* run it in one process"):
        prepare(config)
