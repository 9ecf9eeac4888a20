"""A study's cells as Ray tasks: the same files as the serial loop, resumable, failures kept apart.

The Ray tests share one local Ray of 2 CPUs (each cell asks for 1, so two run at once). Its workers get this
checkout's freezetune through PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import freezetune
from freezetune.cli import main
from freezetune.compare import CompareOptions, compare
from freezetune.errors import UserError

ROOT = Path(freezetune.__file__).parent.parent
TIMING = {"train_seconds", "train_samples_per_second", "peak_memory_mb"}  # what two identical runs differ in
TINY = dict(epochs=2, batch_size=16, max_length=16)


def env() -> dict:
    return {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": env()["PYTHONPATH"]}})
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread():
    """This process computes as a 1-CPU Ray worker does: one thread (a float sum's order depends on threads)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def without_timing(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if key not in TIMING}


def run_files(out: Path) -> dict[str, object]:
    """Every file of every run, by path relative to the study: JSON content (timings left out), else its bytes.

    train.log is left out (it holds timings); run_config.json records its own folder, compared relative to the study.
    """
    files = {}
    for path in sorted(p for p in (out / "runs").rglob("*") if p.is_file() and p.name != "train.log"):
        if path.name == "run_config.json":
            config = json.loads(path.read_text())
            files[str(path.relative_to(out))] = {**config, "output_dir": str(Path(config["output_dir"]).relative_to(out))}
        elif path.suffix == ".json":
            files[str(path.relative_to(out))] = without_timing(json.loads(path.read_text()))
        else:
            files[str(path.relative_to(out))] = path.read_bytes()
    return files


@pytest.mark.ray
def test_ray_study_writes_the_serial_study_files(local_ray, one_thread, tiny_bert, tiny_csv_dir, tmp_path):
    options = dict(model=str(tiny_bert), data=str(tiny_csv_dir), strategies=["freeze1+emb", "lstm", "tfidf"],
                   seeds=[0, 1], **TINY)
    serial = compare(CompareOptions(output_dir=str(tmp_path / "serial"), **options))
    distributed = compare(CompareOptions(output_dir=str(tmp_path / "ray"), executor="ray", **options))
    expected, got = run_files(serial), run_files(distributed)
    assert sum(name.endswith("metrics.json") for name in expected) == 3 * 2
    assert "runs/freeze1+emb-seed1/model.safetensors" in expected  # the saved model, compared bit for bit
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name] == expected[name], name
    assert (distributed / "report.md").is_file()


@pytest.mark.ray
def test_a_failed_run_is_named_the_others_finish_and_resume_reruns_it(local_ray, tiny_bert, tiny_csv_dir, tmp_path,
                                                                      capsys):
    """The transformer runs fail on the workers (their weights file is damaged after the study's checks, which read
    only the tokenizer and config); the baseline finishes; `--resume` with the weights repaired runs only them."""
    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    weights = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(b"not safetensors")
    out = tmp_path / "study"
    argv = ["compare", "--executor", "ray", "--model", str(model), "--data", str(tiny_csv_dir), "--strategies",
            "freeze1+emb,tfidf", "--seeds", "0,1", "--epochs", "1", "--max-length", "16", "--output-dir", str(out)]

    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("freezetune: error: 2 of 4 runs failed: freeze1+emb-seed")
    assert "freeze1+emb-seed0: " in error and "freeze1+emb-seed1: " in error and "--resume" in error
    assert "tfidf-seed" not in error
    finished = {p.parent.name for p in (out / "runs").glob("*/metrics.json")}
    assert finished == {"tfidf-seed0", "tfidf-seed1"}
    assert not (out / "report.md").exists()
    untouched = (out / "runs" / "tfidf-seed0" / "metrics.json").stat().st_mtime_ns

    (model / "model.safetensors").write_bytes(weights)
    assert main([*argv, "--resume"]) == 0
    assert (out / "runs" / "tfidf-seed0" / "metrics.json").stat().st_mtime_ns == untouched
    assert {p.parent.name for p in (out / "runs").glob("*/metrics.json")} == finished | {"freeze1+emb-seed0", "freeze1+emb-seed1"}
    assert (out / "report.md").is_file()


def test_an_unreachable_cluster_is_one_line_and_touches_nothing(monkeypatch, tiny_csv_dir, tmp_path):
    """What `ray.init` raises when no cluster answers (a real one takes minutes to give up), as one line, before the
    existing study is touched."""
    ray = pytest.importorskip("ray")

    def unreachable(address=None, **kwargs):
        raise ConnectionError(f"Could not find any running Ray instance at {address}.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", unreachable)
    out = tmp_path / "study"
    argv = ["compare", "--data", str(tiny_csv_dir), "--strategies", "tfidf", "--seeds", "0", "--output-dir", str(out)]
    assert main(argv) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(UserError, match=r"cannot join Ray at --ray-address head:6379: Could not find .* `ray start --head`"):
        compare(CompareOptions(**{**vars(CompareOptions(output_dir=str(out), data=str(tiny_csv_dir), strategies=["tfidf"],
                                                        seeds=[0])), "executor": "ray", "ray_address": "head:6379",
                                  "overwrite": True}))
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.ray
def test_an_address_while_ray_is_already_joined_is_refused(local_ray, tmp_path, tiny_csv_dir):
    with pytest.raises(UserError, match="Ray is already initialised in this process, so --ray-address auto cannot be joined"):
        compare(CompareOptions(output_dir=str(tmp_path / "out"), data=str(tiny_csv_dir), strategies=["tfidf"],
                               executor="ray", ray_address="auto"))
    assert not (tmp_path / "out").exists()


def test_help_does_not_import_ray():
    code = ("import sys\nfrom freezetune.cli import main\nfor argv in (['--help'], ['compare', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\nprint('ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stderr[-2000:]


@pytest.mark.parametrize("options, message", [
    (dict(ray_address="auto"), "apply to --executor ray"),
    (dict(ray_gpus_per_run=1), "apply to --executor ray"),
    (dict(executor="dask"), "--executor 'dask' is not valid: use one of serial, ray"),
    (dict(executor="ray", ray_cpus_per_run=0), "--ray-cpus-per-run must be a positive number"),
    (dict(executor="ray", ray_gpus_per_run=-1), "--ray-gpus-per-run must be a number >= 0"),
])
def test_bad_executor_options_are_one_line(options, message, tmp_path):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("'", "'")):
        CompareOptions(output_dir=str(tmp_path / "out"), **options)


def test_ray_missing_says_how_to_install_it(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(UserError, match=r"--executor ray needs Ray: pip install 'freezetune\[ray\]'"):
        CompareOptions(output_dir=str(tmp_path / "out"), executor="ray")


def test_resume_may_change_the_executor(tmp_path):
    serial = CompareOptions(output_dir=str(tmp_path / "out"))
    assert CompareOptions(output_dir=str(tmp_path / "out"), executor="ray", ray_cpus_per_run=2).run_defining() == serial.run_defining()
