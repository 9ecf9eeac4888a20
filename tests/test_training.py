"""End to end: train -> saved folder -> metrics, freezing, determinism, atomic output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, f1_score

from freezetune import UserError
from freezetune.training import train

from .conftest import tiny_config


@pytest.fixture(scope="module")
def trained(tiny_bert, tiny_csv_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, out))
    return out, metrics


def test_output_folder_is_complete(trained):
    out, metrics = trained
    for name in ("config.json", "model.safetensors", "tokenizer_config.json", "metrics.json", "run_config.json", "train.log"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == json.loads(json.dumps(metrics, ensure_ascii=False))
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3]
    for row in metrics["epochs"]:
        assert set(row) == {"epoch", "train_loss", "eval_loss", "accuracy", "macro_f1", "weighted_f1"}
    assert json.loads((out / "run_config.json").read_text())["strategy"] == "freeze1"
    assert not list(out.parent.glob(".out.partial-*"))


def test_best_epoch_is_the_best_by_metric(trained):
    _, metrics = trained
    best = max(metrics["epochs"], key=lambda r: r["accuracy"])
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["validation"]["accuracy"] == pytest.approx(best["accuracy"])


def test_recorded_predictions_are_the_saved_models(trained, tiny_csv_dir):
    from freezetune import Predictor

    out, metrics = trained
    texts = pd.read_csv(tiny_csv_dir / "test.csv")["sentence"].tolist()
    assert len(set(metrics["evaluation_predictions"])) > 1  # the model learned something
    assert Predictor(str(out)).probabilities(texts).argmax(axis=-1).tolist() == metrics["evaluation_predictions"]


def test_metrics_equal_scikit_learn(trained, tiny_csv_dir):
    _, metrics = trained
    labels = pd.read_csv(tiny_csv_dir / "test.csv")["label"].map(metrics["label_names"].index)
    preds = metrics["evaluation_predictions"]
    report = metrics["evaluation"]
    assert report["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert report["macro_f1"] == pytest.approx(f1_score(labels, preds, average="macro", zero_division=0))
    assert report["weighted_f1"] == pytest.approx(f1_score(labels, preds, average="weighted", zero_division=0))
    assert np.array(report["confusion_matrix"]).sum() == len(labels)
    per_class_f1 = f1_score(labels, preds, average=None, labels=[0, 1, 2], zero_division=0)
    assert [report["per_class"][n]["f1"] for n in metrics["label_names"]] == pytest.approx(per_class_f1)


def test_frozen_parameters_unchanged_and_trainable_ones_changed(trained, tiny_bert):
    out, _ = trained
    before = load_file(tiny_bert / "model.safetensors")
    after = {k.removeprefix("bert."): v for k, v in load_file(out / "model.safetensors").items()}
    frozen = [k for k in before if k.startswith("encoder.layer.0.")]
    trainable = [k for k in before if k.startswith(("encoder.layer.1.", "embeddings.word_embeddings"))]
    assert frozen and trainable
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    assert all(not torch.equal(before[k], after[k]) for k in trainable)


def test_saved_model_loads_with_auto_class_and_pipeline(trained):
    from transformers import AutoModelForSequenceClassification, pipeline

    out, metrics = trained
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert [model.config.id2label[i] for i in range(3)] == metrics["label_names"] == ["中性", "正面", "负面"]
    result = pipeline("text-classification", model=str(out))("今天游戏真好")
    assert result[0]["label"] in metrics["label_names"]


def test_same_seed_gives_same_metrics(trained, tiny_bert, tiny_csv_dir, tmp_path):
    _, metrics = trained
    again = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "again"))
    for key in ("epochs", "evaluation", "evaluation_predictions", "best_epoch"):
        assert again[key] == metrics[key], key


def test_existing_output_is_refused_and_untouched(trained, tiny_bert, tiny_csv_dir):
    out, _ = trained
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(UserError, match="already exists.*--overwrite"):
        train(tiny_config(tiny_bert, tiny_csv_dir, out))
    assert (out / "metrics.json").read_bytes() == before


def test_overwrite_replaces_an_existing_result(trained, tiny_bert, tiny_csv_dir, tmp_path):
    out, metrics = trained
    target = tmp_path / "out"
    train(tiny_config(tiny_bert, tiny_csv_dir, target, epochs=1))
    first = json.loads((target / "metrics.json").read_text())
    train(tiny_config(tiny_bert, tiny_csv_dir, target, overwrite=True))  # 3 epochs this time
    replaced = json.loads((target / "metrics.json").read_text())
    assert len(first["epochs"]) == 1 and len(replaced["epochs"]) == 3
    assert replaced["evaluation_predictions"] == metrics["evaluation_predictions"]  # the same run as `trained`
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old folder left


def test_early_stopping_stops_after_patience_epochs_without_improvement(tiny_bert, tiny_csv_dir, tmp_path):
    # lr 0 from a fixed head: the validation metric never improves after epoch 1, so patience 1 stops at epoch 2.
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", strategy="head", lr=1e-12, epochs=5,
                                early_stopping=1))
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2] and metrics["best_epoch"] == 1


def test_interrupted_run_leaves_no_output(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    from transformers import Trainer

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out"))
    assert list(tmp_path.iterdir()) == []


def test_freeze_beyond_the_layers_is_refused(tiny_bert, tiny_csv_dir, tmp_path):
    with pytest.raises(UserError, match="more than the model's 2 encoder layers"):
        train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", strategy="freeze5"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("strategy, cached", [("bitfit", 0), ("freeze1+lora", 1), ("llrd:0.8", 0), ("gradual", 1), ("top1", 1)])
def test_every_strategy_trains_end_to_end(tiny_bert, tiny_csv_dir, tmp_path, strategy, cached):
    """Through `train`: the strategy's parameters move, the prefix cache covers what never trains, and the
    saved folder is a plain transformers model whose predictions are the recorded ones."""
    from transformers import pipeline

    out = tmp_path / "out"
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, out, strategy=strategy, epochs=2, keep_adapter=True))
    assert metrics["strategy"] == strategy and metrics["cached_layers"] == cached
    assert 0 < metrics["trainable_params"] < metrics["total_params"] or strategy.startswith("llrd")
    before = load_file(tiny_bert / "model.safetensors")
    after = {k.removeprefix("bert."): v for k, v in load_file(out / "model.safetensors").items()}
    assert set(before) - {"pooler.dense.weight", "pooler.dense.bias"} <= set(after)  # no adapter keys, same names
    assert (out / "adapter" / "adapter_config.json").is_file() == ("lora" in strategy)
    test = pd.read_csv(tiny_csv_dir / "test.csv")
    labels = [row["label"] for row in pipeline("text-classification", model=str(out))(test["sentence"].tolist())]
    names = metrics["label_names"]
    assert labels == [names[i] for i in metrics["evaluation_predictions"]]


def test_lr_auto_keeps_the_best_candidate_by_validation(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    from freezetune.strategies import HeadOnly

    monkeypatch.setattr(HeadOnly, "lr_grid", (1e-4, 5e-2))
    out = tmp_path / "out"
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, out, strategy="head", lr="auto", epochs=2))
    trials = {t["lr"]: t["validation_accuracy"] for t in metrics["lr_search"]}
    assert set(trials) == {1e-4, 5e-2} and metrics["lr"] == max(trials, key=trials.get)
    assert json.loads((out / "metrics.json").read_text())["lr_search"] == metrics["lr_search"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the other candidate is gone


def test_decision_rule_and_temperature_are_fitted_on_validation_and_folded(tiny_bert, tiny_csv_dir, tmp_path):
    """--decision macro_f1 and --calibration temperature: fitted on validation, recorded, folded into the saved
    classifier so that a plain transformers pipeline gives the recorded labels."""
    from transformers import pipeline

    out = tmp_path / "out"
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, out, epochs=1, decision="macro_f1", loss="focal:gamma=1"))
    details = metrics["details"]
    assert details["loss"] == "focal:gamma=1" and details["decision"]["rule"] == "macro_f1"
    calibration = details["calibration"]
    assert calibration["temperature"] > 0 and set(calibration) >= {"temperature", "validation", "test"}
    # Temperature scaling minimises the validation NLL, so it cannot raise the validation Brier score by much.
    assert calibration["validation"]["after_temperature"]["brier"] <= calibration["validation"]["before"]["brier"] + 1e-3
    config = json.loads((out / "config.json").read_text())
    assert config["freezetune_temperature"] == pytest.approx(calibration["temperature"])
    assert (out / "reliability.png").stat().st_size > 0
    test = pd.read_csv(tiny_csv_dir / "test.csv")
    labels = [row["label"] for row in pipeline("text-classification", model=str(out))(test["sentence"].tolist())]
    assert labels == [metrics["label_names"][i] for i in metrics["evaluation_predictions"]]


def test_bad_loss_is_refused_before_work(tiny_bert, tiny_csv_dir, tmp_path):
    with pytest.raises(UserError, match="--loss 'focal:gamma=-1' is not valid"):
        tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", loss="focal:gamma=-1")


def test_a_diverged_run_stops_with_one_line():
    from types import SimpleNamespace

    from freezetune.training.run import StopOnNonFiniteLoss

    callback = StopOnNonFiniteLoss()
    callback.on_log(None, SimpleNamespace(epoch=1.0), None, logs={"loss": 0.7})  # a finite loss passes
    with pytest.raises(UserError, match="the training loss became nan in epoch 2: the run diverged; lower --lr"):
        callback.on_log(None, SimpleNamespace(epoch=1.5), None, logs={"loss": float("nan")})


def test_max_length_beyond_the_positions_is_refused_before_training(tiny_bert, tiny_csv_dir, tmp_path):
    with pytest.raises(UserError, match="--max-length 100 is more than the model's 64 positions"):
        train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", max_length=100))
    assert not (tmp_path / "out").exists()


def test_the_run_says_how_many_training_texts_max_length_truncates(tiny_bert):
    from freezetune.models import load_tokenizer
    from freezetune.training.run import truncation_note

    from .conftest import FILLER

    tokenizer = load_tokenizer(str(tiny_bert))
    texts = [FILLER[:n] for n in (3, 8, 8, 20)]  # one token per character, plus [CLS] and [SEP]: 5, 10, 10, 22
    note = truncation_note(tokenizer, texts, max_length=9)
    assert note.startswith("3 of 4 training texts (75.0%) are longer than --max-length 9 tokens and are truncated "
                           "(longest 22); --max-length 22 would keep 100.0% whole"), note
    assert truncation_note(tokenizer, texts, max_length=22) is None
