"""The loss registry: each loss against PyTorch or a hand computation, its gradients, and its spec parser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax
from torch.nn import functional as F

from freezetune import UserError
from freezetune.losses import class_prior, class_weights, make_loss, parse_loss

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 3.0, 0.0], [0.5, -0.5, 1.5], [1.0, 1.0, -2.0]])
LABELS = torch.tensor([0, 2, 1, 2, 1])
WEIGHTS = torch.tensor([0.5, 1.0, 2.0])
PRIOR = torch.tensor([0.6, 0.3, 0.1])


def loss_of(spec: str, weights=None, prior=PRIOR, logits=LOGITS, **kwargs) -> torch.Tensor:
    return make_loss(spec, weights, prior)({"logits": logits}, LABELS, **kwargs)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])
def test_ce_is_torch_cross_entropy_averaged_over_examples(weights, smoothing):
    spec = f"ce:smoothing={smoothing}"
    per_example = F.cross_entropy(LOGITS, LABELS, weight=weights, label_smoothing=smoothing, reduction="none")
    torch.testing.assert_close(loss_of(spec, weights), per_example.mean())
    if weights is None:  # the loss the model computes itself
        torch.testing.assert_close(loss_of(spec), F.cross_entropy(LOGITS, LABELS, label_smoothing=smoothing))
    # The Trainer's count of examples across accumulated batches replaces the batch's own.
    torch.testing.assert_close(loss_of(spec, weights, num_items_in_batch=20), per_example.sum() / 20)


@pytest.mark.parametrize("weights", [None, WEIGHTS], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("neutral", ["focal:gamma=0", "logit-adjusted:tau=0"])
def test_focal_gamma_0_and_logit_adjustment_tau_0_are_cross_entropy(neutral, weights):
    torch.testing.assert_close(loss_of(f"{neutral},smoothing=0.2", weights), loss_of("ce:smoothing=0.2", weights))
    assert not torch.allclose(loss_of(neutral.split(":")[0], weights), loss_of("ce", weights))  # the defaults change it


def test_focal_loss_by_hand():
    log_p = log_softmax(LOGITS.numpy().astype(np.float64), axis=1)[np.arange(5), LABELS.numpy()]
    alpha = WEIGHTS.numpy()[LABELS.numpy()]
    expected = np.mean(alpha * (1 - np.exp(log_p)) ** 3 * -log_p)
    assert loss_of("focal:gamma=3", WEIGHTS).item() == pytest.approx(expected, rel=1e-5)


def test_logit_adjusted_loss_by_hand():
    # Menon et al. (2021), eq. 10: -log softmax(f(x) + tau * log pi)_y.
    adjusted = LOGITS.numpy().astype(np.float64) + 0.5 * np.log(PRIOR.numpy())
    expected = -np.mean(log_softmax(adjusted, axis=1)[np.arange(5), LABELS.numpy()])
    assert loss_of("logit-adjusted:tau=0.5").item() == pytest.approx(expected, rel=1e-5)
    # A rare class's example costs more than under plain CE (its logit must win by a margin), a frequent one's less.
    rare, frequent = LABELS == 2, LABELS == 0
    per_example = lambda spec: make_loss(spec, None, PRIOR).per_example(  # noqa: E731
        make_loss(spec, None, PRIOR).training_logits(LOGITS), LABELS)
    assert torch.all(per_example("logit-adjusted")[rare] > per_example("ce")[rare])
    assert torch.all(per_example("logit-adjusted")[frequent] < per_example("ce")[frequent])


@pytest.mark.parametrize("spec", ["ce:smoothing=0.1", "focal:gamma=2", "focal:gamma=0.5,smoothing=0.1", "logit-adjusted:tau=1"])
def test_gradients_match_finite_differences(spec):
    loss = make_loss(spec, WEIGHTS.double(), PRIOR.double())
    logits = LOGITS.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda z: loss({"logits": z}, LABELS), (logits,))
    if parse_loss(spec).option("smoothing") == 0:  # (smoothing pushes a confident example's logit back down)
        loss({"logits": logits}, LABELS).backward()
        # Raising the true class's logit lowers the loss.
        assert torch.all(logits.grad[torch.arange(5), LABELS] < 0)


def test_focal_gradient_is_finite_on_a_saturated_example():
    logits = torch.tensor([[200.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)  # p_t is exactly 1 in row 0
    loss = make_loss("focal:gamma=0.5")({"logits": logits}, torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_half_precision_logits_are_scored_in_float32():
    got = loss_of("focal", WEIGHTS, logits=LOGITS.bfloat16())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, loss_of("focal", WEIGHTS, logits=LOGITS.bfloat16().float()))


@pytest.mark.parametrize("spec, canonical", [
    ("ce", "ce"), (" focal ", "focal"), ("focal:gamma=2", "focal"), ("focal:gamma=1.5", "focal:gamma=1.5"),
    ("logit-adjusted:smoothing=0.1, tau=2", "logit-adjusted:tau=2,smoothing=0.1"), ("ce:smoothing=0.05", "ce:smoothing=0.05"),
])
def test_specs_have_one_canonical_form(spec, canonical):
    parsed = parse_loss(spec)
    assert str(parsed) == canonical
    assert parse_loss(str(parsed)) == parsed


def test_spec_options_are_filled_with_defaults():
    spec = parse_loss("focal:smoothing=0.1")
    assert (spec.name, spec.option("gamma"), spec.option("smoothing")) == ("focal", 2.0, 0.1)


@pytest.mark.parametrize("spec, problem", [
    ("hinge", "unknown loss 'hinge'"),
    ("", "unknown loss ''"),
    ("focal:gamma=-1", "gamma must be a finite number >= 0, got -1"),
    ("logit-adjusted:tau=nan", "tau must be a finite number >= 0, got nan"),
    ("focal:gamma=inf", "gamma must be a finite number >= 0"),
    ("ce:smoothing=1", "smoothing must be a finite number in [0, 1)"),
    ("ce:smoothing=-0.1", "smoothing must be a finite number in [0, 1)"),
    ("ce:gamma=2", "ce has no option 'gamma' (its options: smoothing)"),
    ("focal:gamma", "write each option once, as gamma=VALUE"),
    ("focal:gamma=1,gamma=2", "write each option once"),
    ("focal:gamma=two", "gamma='two' is not a number"),
])
def test_bad_specs_are_one_line_user_errors(spec, problem):
    with pytest.raises(UserError) as error:
        parse_loss(spec)
    message = str(error.value)
    assert message.startswith(f"--loss {spec!r} is not valid: {problem}")
    assert "ce, focal[:gamma=2], logit-adjusted[:tau=1]" in message and "smoothing" in message
    assert "\n" not in message


def test_logit_adjustment_needs_a_positive_prior():
    with pytest.raises(ValueError, match="class prior"):
        make_loss("logit-adjusted", None, None)
    with pytest.raises(ValueError, match="class prior"):
        make_loss("logit-adjusted", None, torch.tensor([0.5, 0.5, 0.0]))


def test_class_weights_and_prior_from_training_labels():
    labels = [0] * 6 + [1] * 3 + [2] * 1
    weights = class_weights("balanced", labels, 3)
    # Every class carries the same total weight.
    torch.testing.assert_close(weights * torch.tensor([6.0, 3.0, 1.0]), torch.full((3,), 10 / 3))
    assert class_weights("none", labels, 3) is None
    torch.testing.assert_close(class_prior(labels, 3), torch.tensor([0.6, 0.3, 0.1]))
    with pytest.raises(UserError, match="--class-weights 'inverse' is not valid: use one of none, balanced"):
        class_weights("inverse", labels, 3)
