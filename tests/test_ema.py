"""--ema: the weights' average by hand, what is evaluated and saved, training untouched, bad values refused
(on the command line: test_cli.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from freezetune import UserError
from freezetune.compare.grid import parse_recipe
from freezetune.training import train
from freezetune.training.ema import WeightAverage

from .conftest import tiny_config


def test_the_average_by_hand_is_the_bias_corrected_exponential_average():
    param = torch.nn.Parameter(torch.full((3,), 7.0))  # the start: not part of the average
    average = WeightAverage(0.9, [param])
    average.on_train_begin(None, None, None)
    values = [1.0, 2.0, -1.0, 4.0, 0.5] + [3.0] * 40
    for t, value in enumerate(values, start=1):
        param.data.fill_(value)
        average.on_step_end(None, None, None)
        weights = torch.tensor([0.9 ** (t - s) for s in range(1, t + 1)], dtype=torch.float64)
        expected = float((weights * torch.tensor(values[:t], dtype=torch.float64)).sum() / weights.sum())
        torch.testing.assert_close(average.average[0], torch.full((3,), expected, dtype=torch.float32))
    assert average.updates == 45


def test_evaluation_sees_the_average_and_training_goes_on_from_the_raw_weights():
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    average = WeightAverage(0.5, [param])
    average.average, average.updates = [torch.tensor([5.0, 6.0])], 100
    average.on_epoch_end(None, None, None)
    assert param.tolist() == [5.0, 6.0]  # what the epoch's evaluation (and the best-epoch snapshot) sees
    average.on_evaluate(None, None, None)
    assert param.tolist() == [1.0, 2.0]  # what the next step updates, and the checkpoint saves


def trained_layer(folder) -> dict:
    weights = load_file(str(folder / "model.safetensors"))
    return {k: v for k, v in weights.items() if ".layer.1." in k}  # freeze1: layer 1 is the trained encoder layer


def test_a_run_saves_the_average_and_trains_the_raw_weights_as_without_it(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    plain_options = dict(epochs=2, precision="fp32", calibration="none", metric="accuracy", early_stopping=None)
    plain = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "plain", **plain_options))
    seen = []  # the weights the average starts from, then each step's raw weights, to average by hand
    real_begin, real_step_end = WeightAverage.on_train_begin, WeightAverage.on_step_end

    def record(real):
        def spy(self, *args, **kwargs):
            seen.append([p.detach().clone() for p in self.params])
            return real(self, *args, **kwargs)
        return spy

    monkeypatch.setattr(WeightAverage, "on_train_begin", record(real_begin))
    monkeypatch.setattr(WeightAverage, "on_step_end", record(real_step_end))
    averaged = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "ema", ema=0.95, **plain_options))
    # The raw trajectory is the plain run's: the average never feeds back into training.
    assert [row["train_loss"] for row in averaged["epochs"]] == [row["train_loss"] for row in plain["epochs"]]
    # The epochs were evaluated with the average, so they score otherwise.
    assert [row["eval_loss"] for row in averaged["epochs"]] != [row["eval_loss"] for row in plain["epochs"]]
    assert json.loads((tmp_path / "ema" / "run_config.json").read_text())["ema"] == 0.95
    # The saved model is the best epoch's average, computed by hand over the steps up to that epoch's end.
    steps = seen[1:]  # seen[0]: the weights before training, which the average does not include
    steps = steps[:len(steps) * averaged["best_epoch"] // len(averaged["epochs"])]
    factors = [0.95 ** (len(steps) - s) for s in range(1, len(steps) + 1)]
    by_hand = [sum(f * w[i] for f, w in zip(factors, steps)) / sum(factors) for i in range(len(steps[0]))]
    saved = list(trained_layer(tmp_path / "ema").values())
    for tensor in saved:  # each saved tensor of the trained layer is one of the hand-averaged ones
        assert any(h.shape == tensor.shape and torch.allclose(h, tensor, rtol=1e-5, atol=1e-6) for h in by_hand)
    assert trained_layer(tmp_path / "ema").keys() == trained_layer(tmp_path / "plain").keys()
    assert any(not torch.equal(a, b) for a, b in zip(saved, trained_layer(tmp_path / "plain").values()))


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan"), 2])
def test_bad_decay_is_refused(tiny_bert, tiny_csv_dir, tmp_path, value):
    with pytest.raises(UserError, match="--ema must be a number from 0"):
        tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", ema=value)


def test_a_recipe_sets_the_average():
    assert parse_recipe("ce+balanced+ema=0.998") == (
        "ce+balanced+ema=0.998", (("loss", "ce"), ("class_weights", "balanced"), ("ema", 0.998)))
    with pytest.raises(UserError, match="recipe 'ce\\+ema=1'.*--ema|ema must be"):
        parse_recipe("ce+ema=1")


def test_the_average_covers_exactly_what_the_optimizer_updates(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    """`full` trains the compact embeddings' row parameter, which replaces the embedding in the run's parameter list
    after the callback is built: the average must follow it, or the embeddings would be evaluated raw."""
    checked = []
    real_step_end = WeightAverage.on_step_end

    def spy(self, args, state, control, optimizer=None, **kwargs):
        updated = {id(p) for group in optimizer.param_groups for p in group["params"]}
        checked.append(updated == {id(p) for p in self.params} and len(self.average) == len(self.params))
        return real_step_end(self, args, state, control, optimizer=optimizer, **kwargs)

    monkeypatch.setattr(WeightAverage, "on_step_end", spy)
    train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", strategy="full", ema=0.9, epochs=1))
    assert checked and all(checked)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["cached_layers"] == 0


def test_the_report_says_where_the_average_holds():
    from types import SimpleNamespace

    from freezetune.compare.report import _recipe_text

    study = SimpleNamespace(recipes=[], loss="ce", class_weights="balanced", rdrop=0.0, ema=0.995, distill_from=[],
                            distill_weight=0.5)
    assert _recipe_text(study) == "loss ce, class weights balanced, weights averaged (EMA 0.995)"
    with_recipes = SimpleNamespace(**{**vars(study), "recipes": ["ce", "ce+ema=0.99"]})
    assert _recipe_text(with_recipes).endswith("weights averaged (EMA 0.995) where a recipe does not set it")
    assert "EMA" not in _recipe_text(SimpleNamespace(**{**vars(study), "ema": 0.0}))
