"""`compare` end to end on a tiny local BERT and tiny data: grid, report files, resume, errors."""

import json
from pathlib import Path

import pandas as pd
import pytest

import freezetune.compare.grid as grid
from freezetune.cli import main
from freezetune.compare import CompareOptions, compare
from freezetune.errors import UserError

STRATEGIES = ["full", "freeze1+emb", "head", "lstm", "tfidf"]
REPORT_FILES = ["report.md", "report.html", "results.csv", "results.json",
                "learning_curves.png", "frozen_layers.png", "f1_vs_params.png", "confusion_matrix.png"]


# The module's tests share module fixtures that take seconds: one worker runs them all, so they are built once.
pytestmark = pytest.mark.xdist_group("compare")


@pytest.fixture(scope="module")
def study(tiny_bert, tiny_csv_dir, tmp_path_factory):
    """One finished 5-strategy x 2-seed study, shared by the tests that only read it."""
    options = CompareOptions(
        output_dir=str(tmp_path_factory.mktemp("study") / "out"), model=str(tiny_bert), data=str(tiny_csv_dir),
        strategies=STRATEGIES, seeds=[0, 1], epochs=2, batch_size=32, max_length=16,
    )
    return compare(options), options


def test_grid_writes_every_run_and_report(study):
    out, options = study
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name
    for strategy in STRATEGIES:
        for seed in (0, 1):
            assert (out / "runs" / f"{strategy}-seed{seed}" / "metrics.json").is_file()
    results = pd.read_csv(out / "results.csv")
    assert set(results["strategy"]) == set(STRATEGIES)
    # One row per run and epoch: 2 epochs for transformers and the LSTM, 1 for TF-IDF.
    assert len(results) == 2 * (4 * 2 + 1)
    assert len(json.loads((out / "results.json").read_text())) == len(results)
    report = (out / "report.md").read_text()
    for text in ("| strategy | seed | epoch | training loss | validation loss | accuracy | macro-F1 |",
                 f"Model: {options.model}", "head vs full:", "tfidf vs full:"):
        assert text in report


def test_resume_skips_finished_runs(study, monkeypatch):
    out, options = study
    runs = out / "runs"
    calls = []

    def fake_lstm(splits, **kwargs):  # stands in for the LSTM: returns the result it had computed
        calls.append("lstm")
        return json.loads((out / "lstm-seed1.json").read_text())

    monkeypatch.setattr(grid, "_train_transformer", lambda *a: calls.append("transformer"))
    monkeypatch.setattr("freezetune.baselines.run_lstm", fake_lstm)
    monkeypatch.setattr("freezetune.baselines.run_tfidf", lambda *a, **k: calls.append("tfidf"))
    untouched = (runs / "full-seed0" / "metrics.json").stat().st_mtime_ns

    # A run interrupted before its metrics.json was written is the only one redone.
    (runs / "lstm-seed1" / "metrics.json").rename(out / "lstm-seed1.json")
    compare(CompareOptions(**{**vars(options), "resume": True}))
    assert calls == ["lstm"]
    assert (runs / "full-seed0" / "metrics.json").stat().st_mtime_ns == untouched

    calls.clear()
    compare(CompareOptions(**{**vars(options), "resume": True}))
    assert calls == []


def test_existing_output_needs_resume_or_overwrite(study):
    out, options = study
    with pytest.raises(UserError, match="--resume"):
        compare(CompareOptions(**{**vars(options), "resume": False}))
    with pytest.raises(UserError, match="different epochs"):
        compare(CompareOptions(**{**vars(options), "resume": True, "epochs": 5}))


def test_a_study_from_before_an_option_existed_resumes_with_its_default(tmp_path):
    import dataclasses

    from freezetune.compare.study import _prepare_output
    from freezetune.layout import OPTIONS_FILE

    options = CompareOptions(output_dir=str(tmp_path / "out"), resume=True)
    out = Path(options.output_dir)
    out.mkdir()
    older = {k: v for k, v in dataclasses.asdict(options).items() if k != "rdrop"}  # written before --rdrop existed
    (out / OPTIONS_FILE).write_text(json.dumps(older), encoding="utf-8")
    _prepare_output(out, options)  # the missing rdrop counts as its default, 0: the same study
    (out / OPTIONS_FILE).write_text(json.dumps({**older, "rdrop": 1.0}), encoding="utf-8")
    with pytest.raises(UserError, match="different rdrop"):
        _prepare_output(out, options)


@pytest.mark.parametrize("name", ["freeze", "freezeX", "half", "freeze6+embeddings"])
def test_bad_strategy_names_list_the_valid_forms(name, tmp_path):
    with pytest.raises(UserError, match=r"valid names are full, freezeN"):
        compare(CompareOptions(output_dir=str(tmp_path / "out"), strategies=["full", name]))
    assert not (tmp_path / "out").exists()  # refused before any work


def test_yaml_config_with_flags_overriding(tiny_csv_dir, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(f"data: {tiny_csv_dir}\nstrategies: [lstm, tfidf]\nseeds: 0,1\nepochs: 1\nbatch-size: 64\n")
    out = tmp_path / "out"
    assert main(["compare", "--config", str(config), "--seeds", "3", "--output-dir", str(out)]) == 0
    recorded = json.loads((out / "compare.json").read_text())
    assert (recorded["strategies"], recorded["seeds"], recorded["batch_size"]) == (["lstm", "tfidf"], [3], 64)
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["lstm-seed3", "tfidf-seed3"]


def test_unknown_yaml_key_is_a_user_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("strategys: full\n")
    assert main(["compare", "--config", str(config), "--output-dir", str(tmp_path / "out")]) == 2
    assert "unknown option(s) strategys" in capsys.readouterr().err


def test_every_packaged_config_is_a_valid_study(tmp_path):
    """Each config `compare --list-configs` names loads, with every strategy and recipe name valid."""
    import dataclasses

    from freezetune.compare.grid import parse_strategies, with_recipes
    from freezetune.configs import list_configs, load_yaml

    names = [row.split(":")[0] for row in list_configs()]  # `NAME: what it is`
    assert {"offline-default", "seed-game-chat", "strategies", "sweep", "recipes"} <= set(names)
    for name in names:
        values = load_yaml(name, valid=[f.name for f in dataclasses.fields(CompareOptions)])
        options = CompareOptions(**{"output_dir": str(tmp_path / name), **values})
        assert with_recipes(parse_strategies(options.strategies), options.recipes)
