"""R-Drop (--rdrop): its loss by hand, evaluation untouched, a run that uses it, and bad values refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForSequenceClassification, TrainingArguments

from freezetune import UserError
from freezetune.losses import make_loss
from freezetune.losses.terms import symmetric_kl
from freezetune.training import train
from freezetune.training.rdrop import RDropTrainer

from .conftest import tiny_config


def test_symmetric_kl_by_hand():
    first, second = torch.randn(4, 3), torch.randn(4, 3)
    p, q = F.softmax(first, -1).numpy(), F.softmax(second, -1).numpy()
    expected = 0.5 * ((p * np.log(p / q)).sum(-1) + (q * np.log(q / p)).sum(-1))
    np.testing.assert_allclose(symmetric_kl(first, second).numpy(), expected, rtol=1e-5)
    assert torch.all(symmetric_kl(first, first) == 0)


@pytest.fixture
def batch_and_trainer(tiny_bert, tmp_path):
    def make(alpha, loss=None):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3)
        args = TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True, report_to=[])
        return model, RDropTrainer(model=model, args=args, rdrop_alpha=alpha, compute_loss_func=loss)

    ids = torch.tensor([[2, 7, 9, 11, 3], [2, 8, 3, 0, 0], [2, 12, 10, 9, 3]])
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([0, 2, 1])}
    return make, inputs


@pytest.mark.parametrize("loss", [None, "focal:gamma=2"], ids=["model's own ce", "focal"])
def test_training_loss_is_the_loss_over_both_copies_plus_half_alpha_times_the_kl(batch_and_trainer, loss):
    make, inputs = batch_and_trainer
    loss_fn = None if loss is None else make_loss(loss)
    model, trainer = make(2.0, loss_fn)
    model.train()  # dropout on: the two copies of a row differ
    torch.manual_seed(1)
    got = trainer.compute_loss(model, dict(inputs))
    # By hand, with the same dropout masks (the same random state, the same 2n-row batch).
    torch.manual_seed(1)
    twice = {k: torch.cat([v, v]) for k, v in inputs.items() if k != "labels"}
    logits = model(**twice).logits
    labels = torch.cat([inputs["labels"], inputs["labels"]])
    base = F.cross_entropy(logits, labels) if loss_fn is None else loss_fn({"logits": logits}, labels)
    first, second = logits.chunk(2)
    assert not torch.allclose(first, second)  # the masks did differ
    torch.testing.assert_close(got, base + 1.0 * symmetric_kl(first, second).mean())
    # The Trainer's count of the batch's rows: both terms are normalised by it (the loss over twice as many rows).
    torch.manual_seed(1)
    torch.testing.assert_close(trainer.compute_loss(model, dict(inputs), num_items_in_batch=torch.tensor(3)), got)


def test_evaluation_runs_each_row_once_with_the_plain_loss(batch_and_trainer):
    make, inputs = batch_and_trainer
    model, trainer = make(1.0)
    model.eval()
    got, outputs = trainer.compute_loss(model, dict(inputs), return_outputs=True)
    assert outputs.logits.shape == (3, 3)
    plain = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
    torch.testing.assert_close(got, F.cross_entropy(plain, inputs["labels"]))


def test_a_run_with_rdrop_trains_with_it_and_records_it(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    calls = []
    real = RDropTrainer.compute_loss
    monkeypatch.setattr(RDropTrainer, "compute_loss",
                        lambda self, model, *a, **k: calls.append(model.training) or real(self, model, *a, **k))
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", rdrop=1.0, epochs=1))
    assert True in calls
    assert json.loads((tmp_path / "out" / "run_config.json").read_text())["rdrop"] == 1.0
    plain = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "plain", epochs=1))
    assert metrics["epochs"][0]["train_loss"] != plain["epochs"][0]["train_loss"]


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_bad_alpha_is_refused(tiny_bert, tiny_csv_dir, tmp_path, value):
    with pytest.raises(UserError, match="--rdrop must be a finite number >= 0"):
        tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", rdrop=value)

