"""Distillation (--distill-from): its loss by hand, the soft targets each row trains with, and bad teachers refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForSequenceClassification, TrainingArguments

from freezetune import UserError
from freezetune.data import LABEL, TEXT, load_splits
from freezetune.inference.predict import Predictor
from freezetune.losses.terms import distillation_kl, symmetric_kl
from freezetune.training import distill, train
from freezetune.training.distill import SOFT_TARGETS, DistillTrainer, teacher_probabilities
from freezetune.training.run import _trainer_class

from .conftest import tiny_config

# The module's tests share module fixtures that take seconds: one worker runs them all, so they are built once.
pytestmark = pytest.mark.xdist_group("distill")


@pytest.fixture(scope="module")
def teachers(tiny_bert, tiny_csv_dir, tmp_path_factory):
    """Two tiny models trained on the tiny data with different seeds (a seed ensemble)."""
    folder = tmp_path_factory.mktemp("teachers")
    for seed in (0, 1):
        train(tiny_config(tiny_bert, tiny_csv_dir, folder / f"seed{seed}", seed=seed, epochs=2))
    return [str(folder / f"seed{seed}") for seed in (0, 1)]


def test_kl_by_hand_and_a_zero_target():
    torch.manual_seed(0)
    logits, targets = torch.randn(4, 3), torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.1, 0.1, 0.8], [1 / 3] * 3])
    q, p = F.softmax(logits, -1).numpy(), targets.numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.nansum(np.where(p > 0, p * np.log(p / q), 0.0), axis=-1)
    # atol: a KL near 0 is a difference of nearly equal float32 terms (about 1e-7 of cancellation error)
    np.testing.assert_allclose(distillation_kl(logits, targets).numpy(), expected, rtol=1e-5, atol=1e-6)
    own = targets.clamp_min(1e-30).log()  # the targets as logits (finite: a model's logits always are)
    assert torch.all(distillation_kl(own, targets).abs() < 1e-6)  # its own distribution: no divergence


def _trainer(tiny_bert, tmp_path, cls=DistillTrainer, **kwargs):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
    args = TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to=[])
    return model, cls(model=model, args=args, **kwargs)


IDS = torch.tensor([[2, 7, 9, 11, 3], [2, 8, 3, 0, 0], [2, 12, 10, 9, 3]])
BATCH = {"input_ids": IDS, "attention_mask": (IDS != 0).long(), "labels": torch.tensor([0, 2, 1]),
         SOFT_TARGETS: torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])}


def test_training_loss_mixes_the_labels_loss_and_the_kl_to_the_teachers(tiny_bert, tmp_path):
    model, trainer = _trainer(tiny_bert, tmp_path, distill_weight=0.3)
    model.train()  # training mode (that is what distils), without dropout, so the hand computation sees the same logits
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    got = trainer.compute_loss(model, dict(BATCH))
    logits = model(input_ids=IDS, attention_mask=BATCH["attention_mask"]).logits
    expected = 0.7 * F.cross_entropy(logits, BATCH["labels"]) + 0.3 * distillation_kl(logits, BATCH[SOFT_TARGETS]).mean()
    torch.testing.assert_close(got, expected)
    # How real training calls it: the Trainer counts the rows (the model's own loss then sums over them too).
    torch.testing.assert_close(trainer.compute_loss(model, dict(BATCH), num_items_in_batch=torch.tensor(3)), expected)
    # A training batch that lost its soft targets is a bug, not a reason to quietly train on the labels.
    plain = {k: v for k, v in BATCH.items() if k != SOFT_TARGETS}
    with pytest.raises(RuntimeError, match="dropped the teachers' targets"):
        trainer.compute_loss(model, plain)
    # Evaluation (validation rows, labels only): the labels' loss alone.
    model.eval()
    torch.testing.assert_close(trainer.compute_loss(model, plain), F.cross_entropy(logits, BATCH["labels"]))


def test_with_rdrop_both_copies_distil_and_rdrop_adds_its_kl(tiny_bert, tiny_csv_dir, tmp_path):
    config = tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", rdrop=2.0, distill_from=[str(tmp_path)],
                         distill_weight=0.4)
    model, trainer = _trainer(tiny_bert, tmp_path, cls=_trainer_class(config))
    model.train()  # dropout on: the two copies of a row differ
    torch.manual_seed(1)
    got = trainer.compute_loss(model, dict(BATCH))
    torch.manual_seed(1)
    twice = {k: torch.cat([v, v]) for k, v in BATCH.items()}
    logits = model(input_ids=twice["input_ids"], attention_mask=twice["attention_mask"]).logits
    mixed = 0.6 * F.cross_entropy(logits, twice["labels"]) + 0.4 * distillation_kl(logits, twice[SOFT_TARGETS]).mean()
    torch.testing.assert_close(got, mixed + 1.0 * symmetric_kl(*logits.chunk(2)).mean())
    torch.manual_seed(1)  # the Trainer's count of the rows: the n of the batch it was given, twice over for R-Drop
    torch.testing.assert_close(trainer.compute_loss(model, dict(BATCH), num_items_in_batch=torch.tensor(3)), got)


@pytest.mark.parametrize("strategy", ["full", "freeze1+emb"], ids=["tokens", "cached prefix"])
def test_each_row_trains_with_its_own_teachers_probabilities(tiny_bert, tiny_csv_dir, tmp_path, teachers, monkeypatch,
                                                              strategy):
    seen = []
    real = DistillTrainer.compute_loss
    def spy(self, model, inputs, *args, **kwargs):
        if SOFT_TARGETS in inputs:
            seen.extend(zip(inputs["labels"].tolist(), map(tuple, inputs[SOFT_TARGETS].tolist())))
        return real(self, model, inputs, *args, **kwargs)
    monkeypatch.setattr(DistillTrainer, "compute_loss", spy)
    config = tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", strategy=strategy, epochs=1, distill_from=teachers,
                         distill_weight=1.0)
    metrics = train(config)

    splits = load_splits(config.data, config.text_column, config.label_column, config.seed, config.validation_fraction)
    texts = splits.train[TEXT].tolist()
    # At the run's own precision and batch size: on a CPU with native bf16 that is bf16, whose sums differ from fp32's.
    expected = np.mean([Predictor(t, config.eval_batch_size, precision=metrics["precision"]).probabilities(texts)
                        for t in teachers], axis=0)
    # Every training row once in the epoch, paired with its own label: the soft targets never leave their row.
    want = sorted(zip(splits.train[LABEL].tolist(), map(tuple, expected.tolist())))
    np.testing.assert_allclose(np.array([[label, *p] for label, p in sorted(seen)]),
                               np.array([[label, *p] for label, p in want]), rtol=1e-6)
    assert metrics["cached_layers"] == (1 if strategy == "freeze1+emb" else 0)
    assert json.loads((tmp_path / "out" / "run_config.json").read_text())["distill_from"] == teachers
    assert any("distilled from 2 model(s) (weight 1)" in line for line in (tmp_path / "out" / "train.log").read_text().splitlines())
    assert metrics["epochs"][0]["train_loss"] > 0


def test_teachers_are_computed_once_for_the_runs_of_a_study(teachers, monkeypatch):
    made = []
    real = Predictor.__init__
    monkeypatch.setattr(Predictor, "__init__", lambda self, *a, **k: made.append(a[0]) or real(self, *a, **k))
    monkeypatch.setattr(distill, "_memo", {})
    first = teacher_probabilities(teachers, ["好棒", "差烂"], "fp32", 8)
    again = teacher_probabilities(teachers, ["好棒", "差烂"], "fp32", 8)
    assert made == teachers and again is first
    teacher_probabilities(teachers, ["好棒"], "fp32", 8)  # other texts: computed again
    assert made == teachers * 2
    weights = Path(teachers[1]) / "model.safetensors"  # a teacher trained again in place: computed again
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1))
    teacher_probabilities(teachers, ["好棒"], "fp32", 8)
    assert made == teachers * 3


def test_bad_teachers_and_weights_are_refused_before_training(tiny_bert, tiny_csv_dir, tmp_path, teachers):
    for value in (0, 1.5, float("nan")):
        with pytest.raises(UserError, match="--distill-weight must be a number above 0 and at most 1"):
            tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", distill_weight=value)
    with pytest.raises(UserError, match="is not a folder"):
        train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", distill_from=[str(tmp_path / "nope")]))
    # The bare encoder has no head trained on these labels.
    with pytest.raises(UserError, match="predicts the labels LABEL_0, LABEL_1 but the data has"):
        train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", distill_from=[teachers[0], str(tiny_bert)]))
    # The same labels in another order: its probabilities would land on the wrong classes.
    shuffled = tmp_path / "shuffled"
    shutil.copytree(teachers[0], shuffled)
    config = json.loads((shuffled / "config.json").read_text())
    names = [config["id2label"][str(i)] for i in range(3)]
    config["id2label"] = {str(i): name for i, name in enumerate(names[::-1])}
    config["label2id"] = {name: i for i, name in enumerate(names[::-1])}
    (shuffled / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="a teacher must be trained on the same labels, in the same order"):
        train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", distill_from=[str(shuffled)]))
    (shuffled / "model.safetensors").unlink()
    with pytest.raises(UserError, match="holds no model weights"):
        train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", distill_from=[str(shuffled)]))
    with pytest.raises(UserError, match="names a folder twice"):
        tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", distill_from=[teachers[0], teachers[0]])
    with pytest.raises(UserError, match="must be one or more folder paths"):
        tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", distill_from=[1])  # e.g. from a YAML file
    # An output folder holding a teacher would destroy it, with --lr auto too (it replaces OUT at its end).
    for lr in (5e-3, "auto"):
        with pytest.raises(UserError, match="contains the input --distill-from"):
            train(tiny_config(tiny_bert, tiny_csv_dir, Path(teachers[0]).parent, overwrite=True, lr=lr,
                              distill_from=teachers))
    assert not (tmp_path / "out").exists() and all((Path(t) / "model.safetensors").is_file() for t in teachers)


def test_the_report_names_the_teachers():
    from types import SimpleNamespace

    from freezetune.compare.report import _recipe_text

    study = SimpleNamespace(recipes=[], loss="ce", class_weights="balanced", rdrop=0.0, ema=0.0,
                            distill_from=["runs/a/seed0", "runs/a/seed1"], distill_weight=0.8)
    assert _recipe_text(study).endswith("distilled from 2 model(s) (runs/a/seed0, runs/a/seed1) with weight 0.8")
    assert "distilled" not in _recipe_text(SimpleNamespace(**{**vars(study), "distill_from": []}))


def test_a_teacher_may_be_another_model(tiny_bert, tiny_csv_dir, tmp_path):
    """A teacher of another architecture (and max length): its own folder's tokenizer and settings predict."""
    from transformers import BertConfig, BertModel, BertTokenizer

    other = tmp_path / "other_base"
    BertTokenizer(str(tiny_bert / "vocab.txt")).save_pretrained(other)
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=BertTokenizer(str(tiny_bert / "vocab.txt")).vocab_size, hidden_size=16,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64)).save_pretrained(other)
    train(tiny_config(other, tiny_csv_dir, tmp_path / "teacher", strategy="full", max_length=8, epochs=1))
    student = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "student", epochs=1,
                                distill_from=[str(tmp_path / "teacher")]))
    assert student["epochs"][0]["train_loss"] > 0 and (tmp_path / "student" / "model.safetensors").is_file()


def test_compare_checks_the_teachers_before_any_run(tiny_bert, tiny_csv_dir, tmp_path):
    from freezetune.compare import CompareOptions, compare

    options = CompareOptions(output_dir=str(tmp_path / "study"), model=str(tiny_bert), data=str(tiny_csv_dir),
                             strategies=["tfidf", "freeze1"], seeds=[0], epochs=1, max_length=16,
                             distill_from=[str(tiny_bert)])  # no head for these labels
    with pytest.raises(UserError, match="predicts the labels LABEL_0, LABEL_1"):
        compare(options)
    assert not (tmp_path / "study").exists()  # not even the baseline ran
