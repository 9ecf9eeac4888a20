"""Class-weighted training: the weights follow scikit-learn's balanced rule and the Trainer really uses them."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from freezetune import UserError
from freezetune.losses import class_weights, make_loss
from freezetune.training import train

from .conftest import tiny_config


def test_balanced_weights_give_every_class_the_same_total_weight():
    labels = [0] * 6 + [1] * 3 + [2] * 1
    weights = class_weights("balanced", labels, 3)
    totals = [weights[c] * labels.count(c) for c in range(3)]
    torch.testing.assert_close(torch.stack(totals), torch.full((3,), len(labels) / 3))
    assert class_weights("none", labels, 3) is None


def test_weighted_loss_is_the_example_weighted_mean():
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 0])
    weights = torch.tensor([0.5, 1.0, 2.0])
    got = make_loss("ce", weights)({"logits": logits}, labels)
    expected = (weights[labels] * F.cross_entropy(logits, labels, reduction="none")).mean()
    torch.testing.assert_close(got, expected)
    # Unit weights: the ordinary loss the model computes itself.
    torch.testing.assert_close(make_loss("ce", torch.ones(3))({"logits": logits}, labels), F.cross_entropy(logits, labels))


def test_training_with_balanced_weights_uses_them(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    from freezetune.training import run

    calls = []
    real = run.make_loss

    def spy(spec, weights, prior):
        assert str(spec) == "ce" and weights is not None
        loss = real(spec, weights, prior)
        return lambda *a, **k: calls.append(1) or loss(*a, **k)

    monkeypatch.setattr(run, "make_loss", spy)
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", class_weights="balanced"))
    # The tiny training data is 50/30/20% over the sorted names (中性, 正面, 负面): 30%, 50%, 20%.
    assert metrics["class_weights"] == pytest.approx([1 / (3 * 0.3), 1 / (3 * 0.5), 1 / (3 * 0.2)], rel=1e-4)
    assert len(calls) > 0


def test_unknown_class_weights_are_refused(tiny_bert, tiny_csv_dir, tmp_path):
    with pytest.raises(UserError, match="--class-weights 'inverse' is not valid"):
        train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", class_weights="inverse"))
    assert not (tmp_path / "out").exists()
