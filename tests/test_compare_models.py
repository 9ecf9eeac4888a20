"""`compare --models`: every strategy on each model on the same splits, the baselines once, the lr grid per model and
strategy, the report's model column, models-by-strategy table and paired tests between models, resume, checks."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import freezetune.compare.grid as grid
from freezetune.cli import main
from freezetune.compare import CompareOptions, compare
from freezetune.compare.grid import study_models
from freezetune.compare.study import _refuse_mixing
from freezetune.errors import UserError
from freezetune.layout import OPTIONS_FILE

LRS = (0.005, 0.001)
STRATEGIES = ["full", "head", "lstm", "tfidf"]
TINY = dict(epochs=1, batch_size=32, max_length=16)


def _bert(tiny_bert, folder: Path, layers: int) -> Path:
    """The tiny BERT's vocabulary and shape with `layers` layers, saved into `folder`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    BertTokenizer(str(tiny_bert / "vocab.txt")).save_pretrained(folder)
    config = BertConfig.from_pretrained(tiny_bert)
    config.num_hidden_layers = layers
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


# The module's tests share module fixtures that take seconds: one worker runs them all, so they are built once.
pytestmark = pytest.mark.xdist_group("compare_models")


@pytest.fixture(scope="module")
def berts(tiny_bert, tmp_path_factory):
    """A 2-layer and a 4-layer tiny BERT, both in folders named `bert` (so their run folders are bert and bert-2)."""
    root = tmp_path_factory.mktemp("berts")
    return _bert(tiny_bert, root / "two" / "bert", 2), _bert(tiny_bert, root / "four" / "bert", 4)


@pytest.fixture(scope="module")
def study(berts, tiny_csv_dir, tmp_path_factory):
    """Two models x full, head (an lr grid of two on seed 0, then seed 1) and the baselines, 2 seeds."""
    options = CompareOptions(output_dir=str(tmp_path_factory.mktemp("models") / "out"), models=[str(m) for m in berts],
                             data=str(tiny_csv_dir), strategies=STRATEGIES, seeds=[0, 1],
                             lr_grid=",".join(map(str, LRS)), **TINY)
    return compare(options), options


@pytest.fixture
def no_training(monkeypatch):
    """Any run that starts fails the test: the checks must come first."""
    from transformers import Trainer

    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("a run started before the check"))


def finished(out: Path) -> list[str]:
    """Every finished run, by its folder under runs/."""
    return sorted(p.parent.relative_to(out / "runs").as_posix() for p in (out / "runs").rglob("metrics.json"))


def metrics(out: Path, name: str) -> dict:
    return json.loads((out / "runs" / name / "metrics.json").read_text(encoding="utf-8"))


def test_folder_names_are_safe_unique_and_stable(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub / "bert").mkdir(parents=True)
    models = ["Qwen/Qwen2.5-0.5B", "builtin:multilingual-e5-small", str(tmp_path / "a" / "bert"),
              str(tmp_path / "b" / "bert"), "BERT", "lstm-seed0", "x/../..", "a b:c"]
    slugs = [m.slug for m in study_models(models)]
    assert slugs == ["Qwen--Qwen2.5-0.5B", "builtin-multilingual-e5-small", "bert", "bert-2", "BERT-3",
                     "lstm-seed0-model", "x", "a-b-c"]
    assert [m.slug for m in study_models(models)] == slugs  # the same list, the same folders (--resume)


def test_each_model_has_its_runs_and_the_baselines_run_once(study, berts):
    out, _ = study
    assert json.loads((out / "models.json").read_text()) == {
        "bert": {"model": str(berts[0]), "type": "bert", "layers": "2 encoder layers", "depth": 2},
        "bert-2": {"model": str(berts[1]), "type": "bert", "layers": "4 encoder layers", "depth": 4}}
    runs = finished(out)
    assert [r for r in runs if "/" not in r] == ["lstm-seed0", "lstm-seed1", "tfidf-seed0", "tfidf-seed1"]
    for model in ("bert", "bert-2"):
        mine = [r.split("/")[1] for r in runs if r.startswith(f"{model}/")]
        assert {re.sub(r"-lr.*", "", r) for r in mine} == {"full", "head"}  # no baseline under a model
        for strategy in ("full", "head"):
            config = json.loads((out / "runs" / model / f"{strategy}-lr{LRS[0]:g}-seed0" / "run_config.json").read_text())
            assert config["model"] == str(berts[model == "bert-2"])  # each model's runs trained that model


def test_the_lr_grid_runs_per_model_and_strategy(study):
    out, _ = study
    selection = json.loads((out / "lr_selection.json").read_text())
    assert list(selection) == ["bert/full", "bert/head", "bert-2/full", "bert-2/head"]
    for name, chosen in selection.items():
        model, strategy = name.split("/")
        assert chosen["model"] == model and set(chosen["candidates"]) == {f"{lr:g}" for lr in LRS}
        assert {f"{model}/{strategy}-lr{lr:g}-seed0" for lr in LRS} <= set(finished(out))
        seed1 = [r for r in finished(out) if r.startswith(f"{model}/{strategy}-") and r.endswith("-seed1")]
        assert seed1 == [f"{model}/{strategy}-lr{chosen['chosen_lr']:g}-seed1"]
    # 2 models x 2 strategies x (2 candidates on seed 0 + seed 1), and each baseline once per seed
    assert len(finished(out)) == 2 * 2 * (len(LRS) + 1) + 2 * 2


def test_the_report_compares_the_models(study, tiny_csv_dir):
    out, _ = study
    selection = json.loads((out / "lr_selection.json").read_text())
    chosen = {name: f"{s['chosen_lr']:g}" for name, s in selection.items()}
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns[:2]) == ["model", "strategy"]
    assert set(results["model"].dropna()) == {"bert", "bert-2"}
    assert set(results.loc[results["model"].isna(), "strategy"]) == {"lstm", "tfidf"}

    report = (out / "report.md").read_text()
    assert "| model | strategy | seeds | accuracy |" in report
    assert "## Models by strategy on the test split\n\n| strategy | bert | bert-2 |" in report
    # The table's cell is the mean over seeds of that model's runs; the paired test is between the two models.
    runs = {model: [metrics(out, f"{model}/full-lr{chosen[model + '/full']}-seed{s}") for s in (0, 1)]
            for model in ("bert", "bert-2")}
    accuracy = {model: np.mean([m["evaluation"]["accuracy"] for m in ms]) for model, ms in runs.items()}
    row = next(line for line in report.splitlines() if line.startswith("| full | "))
    assert row.split(" | ")[2].startswith(f"{accuracy['bert-2']:.4f} / ")
    assert sum(cell.endswith(" *") for cell in row.rstrip(" |").split(" | ")[1:]) == 1  # the best model marked
    difference = re.escape(f"{(accuracy['bert-2'] - accuracy['bert']) * 100:+.1f}")
    assert re.search(rf"^bert-2 vs bert on full: {difference} accuracy "
                     r"points \(p [=<] [\d.]+(, significant)?\); .* McNemar p [=<] [\d.]+ \(seed 0\), .*\(seed 1\)\.$",
                     report, re.M)
    assert "bert-2 vs bert on head:" in report
    assert "bert/head vs bert/full:" in report and "bert-2/head vs bert-2/full:" in report
    assert "lstm vs bert/full:" in report  # a baseline against the first model
    assert "<th>model</th><th>strategy</th>" in (out / "report.html").read_text()


def test_the_study_folder_shows_every_models_runs(study):
    from freezetune.display import StudyFolder

    out, options = study
    folder = StudyFolder(out)
    assert sorted(folder.runs()) == finished(out)
    shown = folder._repr_markdown_()
    assert f"models {', '.join(options.models)}" in shown and "| bert-2/full | 2 |" in shown and "| lstm | 2 |" in shown


def test_resume_of_a_multi_model_study(study, tiny_bert, monkeypatch):
    out, options = study
    again = next(r for r in finished(out) if r.startswith("bert-2/head-") and r.endswith("-seed1"))
    saved = out / "saved.json"
    shutil.move(out / "runs" / again / "metrics.json", saved)
    calls = []

    def fake_train(run, splits, options, folder):  # stands in for training: puts back what it had computed
        calls.append(run.name)
        shutil.move(saved, folder / "metrics.json")

    monkeypatch.setattr(grid, "_train_transformer", fake_train)
    monkeypatch.setattr("freezetune.baselines.run_lstm", lambda *a, **k: calls.append("lstm"))
    monkeypatch.setattr("freezetune.baselines.run_tfidf", lambda *a, **k: calls.append("tfidf"))
    compare(CompareOptions(**{**vars(options), "resume": True}))
    assert calls == [again]  # that one run only, in its model's folder
    for models in (options.models[::-1], [options.models[0], str(tiny_bert)], options.models[:1]):  # folders move
        with pytest.raises(UserError, match="can add models after its own, not reorder, replace or drop"):
            compare(CompareOptions(**{**vars(options), "models": models, "resume": True}))


def test_resume_adds_a_model_after_the_studys_own(study, tiny_bert, tmp_path, monkeypatch):
    """The finished runs stay; the new model's runs (and its lr search) run in its own folder; the record follows."""
    out, options = study
    grown = tmp_path / "grown"
    shutil.copytree(out, grown)
    before = {name: metrics(grown, name) for name in finished(grown)}
    calls = []

    def fake_train(run, splits, options, folder):  # a finished run's numbers, in the new model's folder
        calls.append(run.name)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(grown / "runs" / run.name.replace("bert-3/", "bert/", 1) / "metrics.json", folder / "metrics.json")

    monkeypatch.setattr(grid, "_train_transformer", fake_train)
    monkeypatch.setattr("freezetune.baselines.run_lstm", lambda *a, **k: pytest.fail("the baselines ran again"))
    monkeypatch.setattr("freezetune.baselines.run_tfidf", lambda *a, **k: pytest.fail("the baselines ran again"))
    (tmp_path / "tiny").mkdir()
    shutil.copytree(tiny_bert, tmp_path / "tiny" / "bert")  # a third `bert` folder: its runs go to bert-3
    models = [*options.models, str(tmp_path / "tiny" / "bert")]
    compare(CompareOptions(**{**vars(options), "output_dir": str(grown), "models": models, "resume": True}))
    assert calls and all(name.startswith("bert-3/") for name in calls)
    assert {name: metrics(grown, name) for name in before} == before  # the finished runs untouched
    assert sorted(calls) == sorted(n.replace("bert/", "bert-3/", 1) for n in before if n.startswith("bert/"))
    assert json.loads((grown / OPTIONS_FILE).read_text(encoding="utf-8"))["models"] == models
    assert "| strategy | bert | bert-2 | bert-3 |" in (grown / "report.md").read_text(encoding="utf-8")
    assert {"bert-3/full", "bert-3/head"} <= set(json.loads((grown / "lr_selection.json").read_text()))


def test_a_one_model_study_does_not_resume_as_several(berts, tiny_csv_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "_train_transformer", lambda run, splits, options, folder: pytest.fail("a run started"))
    out = tmp_path / "out"
    out.mkdir()
    one = CompareOptions(output_dir=str(out), model=str(berts[0]), data=str(tiny_csv_dir), strategies=["head"],
                         seeds=[0], **TINY)
    (out / OPTIONS_FILE).write_text(json.dumps(dataclasses.asdict(one)), encoding="utf-8")
    with pytest.raises(UserError, match="one model's .runs/STRATEGY-seedN."):
        compare(CompareOptions(**{**vars(one), "models": [str(m) for m in berts], "resume": True}))
    with pytest.raises(UserError, match="its runs used different model;"):  # another one model: the usual refusal
        compare(CompareOptions(**{**vars(one), "model": str(berts[1]), "resume": True}))


def test_a_model_study_resumes_as_the_same_models_study(berts, tiny_csv_dir, tmp_path):
    """`--models A` is `--model A`, in either direction: the same folders, so the same study to resume."""
    out = tmp_path / "out"
    out.mkdir()
    by_list = CompareOptions(output_dir=str(out), models=[str(berts[0])], data=str(tiny_csv_dir), strategies=["head"],
                             seeds=[0], **TINY)
    (out / OPTIONS_FILE).write_text(json.dumps(dataclasses.asdict(by_list)), encoding="utf-8")
    _refuse_mixing(out, CompareOptions(**{**vars(by_list), "models": [], "model": str(berts[0]), "resume": True}))


def test_a_bad_model_in_the_list_fails_in_one_line_before_any_run(berts, tiny_csv_dir, tmp_path, capsys, no_training):
    def study(models: str, strategies: str) -> list[str]:
        code = main(["compare", "--models", models, "--data", str(tiny_csv_dir), "--strategies", strategies,
                     "--seeds", "0", "--output-dir", str(tmp_path / "out")])
        assert code == 2 and not (tmp_path / "out").exists()  # nothing written
        return capsys.readouterr().err.strip().splitlines()

    two, four = map(str, berts)
    missing = str(tmp_path / "missing")
    assert study(f"{two},{missing}", "full,lstm") == [
        f"freezetune: error: --models {missing}: model folder {missing} not found: pass an existing folder or a hub "
        "id with --model"]
    # The 4-layer model would run freeze3; the 2-layer one, checked before any run, cannot.
    err = study(f"{four},{two}", "freeze3")
    assert len(err) == 1 and err[0].startswith(f"freezetune: error: --models {two}: freeze3 asks for more than the "
                                               "model's 2 encoder layers"), err


def test_the_default_sweep_follows_each_models_depth(berts, tiny_csv_dir, tmp_path):
    from freezetune.compare.study import _check_models

    options = CompareOptions(models=[str(m) for m in berts], data=str(tiny_csv_dir), strategies=["sweep", "tfidf"],
                             output_dir=str(tmp_path / "out"))
    _, models, _ = _check_models(options, ["a", "b", "c"])
    assert {model.slug: [s.name for s in own] for model, own in models.items()} == {
        "bert": ["full", "freeze2", "tfidf"], "bert-2": ["full", "freeze2", "freeze4", "tfidf"]}


def test_model_and_models(tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(UserError, match=r"^--model a and --models b,c name different models: pass --models alone$"):
        CompareOptions(output_dir=out, model="a", models=["b", "c"])
    both = CompareOptions(output_dir=out, model="b", models="b, c")  # the same model named twice is no conflict
    assert (both.model, both.models) == ("b", ["b", "c"])
    assert CompareOptions(**vars(both)).models == ["b", "c"]  # options rebuilt from themselves (a resume)
    # One model is the study --model makes: the same record, the same folders.
    assert CompareOptions(output_dir=out, models=["b"]).run_defining() == CompareOptions(output_dir=out, model="b").run_defining()
    assert CompareOptions(output_dir=out, models="b,c").input_paths["--models"] == ["b", "c"]


def test_model_and_models_conflict_on_the_command_line(tmp_path, capsys):
    assert main(["compare", "--model", "a", "--models", "b", "c", "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == ("freezetune: error: --model a and --models b,c name different models: "
                                               "pass --models alone")


def test_the_architectures_config_is_packaged(tmp_path, capsys):
    """An encoder, a decoder and an encoder-decoder, with strategies that fit all three."""
    import dataclasses

    from freezetune.configs import load_yaml

    assert main(["compare", "--list-configs"]) == 0
    assert re.search(r"^architectures: An encoder, a decoder and an encoder-decoder", capsys.readouterr().out, re.M)
    values = load_yaml("architectures", valid=[f.name for f in dataclasses.fields(CompareOptions)])
    options = CompareOptions(output_dir=str(tmp_path / "x"), **values)
    assert options.models == ["bert-base-chinese", "Qwen/Qwen2.5-0.5B", "google/mt5-small"]
    assert options.strategies == ["head", "lora", "freeze6+lora", "full", "tfidf"]


def test_the_architectures_config_runs_on_tiny_models_of_its_families(tiny_csv_dir, tmp_path):
    """With its models replaced by tiny ones of the same families (a decoder and an encoder-decoder, each 8 blocks
    deep, so that freeze6+lora fits), it is a multi-model study like any."""
    from .families import tiny_family_model

    models = [tiny_family_model("gpt2", tmp_path / "gpt2", layers=8), tiny_family_model("t5", tmp_path / "t5", layers=4)]
    out = tmp_path / "study"
    assert main(["compare", "--config", "architectures", "--models", *map(str, models), "--data", str(tiny_csv_dir),
                 "--seeds", "0", "--lr-grid", "5e-3", "--epochs", "1", "--batch-size", "32", "--max-length", "16",
                 "--output-dir", str(out)]) == 0
    transformer = [f"{m}/{s}-lr0.005-seed0" for m in ("gpt2", "t5") for s in ("full", "freeze6+lora", "head", "lora")]
    assert finished(out) == sorted([*transformer, "tfidf-seed0"])
    assert "t5 vs gpt2 on freeze6+lora:" in (out / "report.md").read_text()
