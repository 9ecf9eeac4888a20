"""A study's strategies (and a train run's) are checked against the model's anatomy before any run starts."""

from __future__ import annotations

import re

import pytest

from freezetune import UserError
from freezetune.cli import main
from freezetune.compare.grid import parse_strategies

from .conftest import tiny_config


@pytest.fixture(scope="module")
def tiny_bert4(tmp_path_factory, tiny_bert):
    """The tiny BERT's vocabulary and shape with 4 layers instead of 2."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny_bert4")
    BertTokenizer(str(tiny_bert / "vocab.txt")).save_pretrained(folder)
    config = BertConfig.from_pretrained(tiny_bert)
    config.num_hidden_layers = 4
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("depth, points", [(2, [0, 2]), (4, [0, 2, 4]), (5, [0, 2, 4, 5]), (1, [0, 1]),
                                           (None, [0, 2, 4, 6, 8, 10, 12])])
def test_the_default_sweep_stops_at_the_model_depth(depth, points):
    names = [s.name for s in parse_strategies(["sweep"], depth)]
    assert names == ["full"] + [f"freeze{n}" for n in points[1:]]


def compare(model, data, out, strategies: str, *extra) -> int:
    return main(["compare", "--model", str(model), "--data", str(data), "--strategies", strategies, "--seeds", "0",
                 "--epochs", "1", "--batch-size", "8", "--max-length", "16", "--output-dir", str(out), *extra])


@pytest.fixture
def no_training(monkeypatch):
    """Any run that starts fails the test: the checks must come first."""
    from transformers import Trainer

    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("a run started before the check"))


@pytest.mark.parametrize("strategies, extra, message", [
    ("full,sweep:0/5", (), "freeze5 asks for more than the model's 2 encoder layers: use freeze0..freeze2"),
    ("sweep:0/5", ("--lr-grid", "auto"), "freeze5 asks for more than the model's 2 encoder layers: use freeze0..freeze2"),
    ("full,freeze3+emb", (), "freeze3 asks for more than the model's 2 encoder layers: use freeze0..freeze2"),
    ("full,top5", (), "top5 asks for more than the model's 2 encoder layers: use top0..top2"),
    ("full,freeze2+lora", (), "strategy lora: all 2 encoder layers are frozen, none is left for adapters"),
    ("full,lora:targets=query/q_proj", (), "no Linear layer named q_proj: choose targets from"),
    ("lstm,full,top3", ("--recipes", "focal"), "top3 asks for more than the model's 2 encoder layers"),
])
def test_a_study_that_does_not_fit_the_model_stops_before_any_run(strategies, extra, message, tiny_bert, tiny_csv_dir,
                                                                   tmp_path, capsys, no_training):
    out = tmp_path / "study"
    assert compare(tiny_bert, tiny_csv_dir, out, strategies, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(re.escape(message), err[0]), err
    assert not out.exists()  # no run folder, no metrics: nothing was written


@pytest.mark.parametrize("model, strategies, expected", [
    ("tiny_bert", ["sweep", "lstm"], ["full", "freeze2", "lstm"]),
    ("tiny_bert4", ["sweep", "top4", "lstm"], ["full", "freeze2", "freeze4", "top4", "lstm"]),
])
def test_the_default_sweep_expands_to_each_models_depth(model, strategies, expected, tiny_csv_dir, tmp_path, request):
    from freezetune.compare import CompareOptions
    from freezetune.compare.study import _check_against_model

    options = CompareOptions(model=str(request.getfixturevalue(model)), data=str(tiny_csv_dir), strategies=strategies,
                             output_dir=str(tmp_path / "study"))
    assert [s.name for s in _check_against_model(options, ["a", "b", "c"])] == expected
    assert not (tmp_path / "study").exists()


def test_a_two_layer_default_sweep_runs_to_the_end(tiny_bert, tiny_csv_dir, tmp_path):
    """`--strategies sweep` on a 2-layer model: every point fits the model, none stops the study halfway (freeze4 would)."""
    out = tmp_path / "study"
    assert compare(tiny_bert, tiny_csv_dir, out, "sweep") == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["freeze2-seed0", "full-seed0"]


def test_train_checks_the_strategy_before_tokenizing(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch, no_training):
    from freezetune.training import run as training
    from freezetune.training import train

    monkeypatch.setattr(training, "tokenize_frame", lambda *a: pytest.fail("tokenized before the check"))
    with pytest.raises(UserError, match=re.escape("freeze3 asks for more than the model's 2 encoder layers: "
                                                  "use freeze0..freeze2")):
        train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", strategy="freeze3"))
    assert not (tmp_path / "out").exists()
