"""Seed ensembles: the mean of the members' probabilities, in Python and from `freezetune predict`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from freezetune import UserError
from freezetune.cli import main
from freezetune.inference.classifier import TextClassifier
from freezetune.inference.ensemble import EnsemblePredictor, average_probabilities
from freezetune.inference.predict import Predictor

from .test_head import LABEL_NAMES, save_classifier

TEXTS = ["今天游戏真好", "队友太差", "一般般吧", "好"]


class Fixed(TextClassifier):
    """A member whose probabilities are given (row i for text i)."""

    def __init__(self, probs, label_names=("a", "b", "c")):
        self.probs, self.label_names = np.asarray(probs, dtype=np.float32), list(label_names)

    def probabilities(self, texts):
        return self.probs[: len(texts)]


def random_probs(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(3), size=4).astype(np.float32)


def test_an_ensemble_of_one_is_the_member_and_of_two_the_mean():
    first, second = Fixed(random_probs(0)), Fixed(random_probs(1))
    np.testing.assert_array_equal(EnsemblePredictor([first]).probabilities(TEXTS), first.probabilities(TEXTS))
    assert EnsemblePredictor([first]).predict(TEXTS) == first.predict(TEXTS)
    both = EnsemblePredictor([first, second])
    np.testing.assert_allclose(both.probabilities(TEXTS), (first.probs + second.probs) / 2)
    assert [row["label"] for row in both.predict(TEXTS)] == [
        "abc"[i] for i in np.argmax(first.probs + second.probs, axis=1)]
    np.testing.assert_array_equal(average_probabilities([first.probs, second.probs]), both.probabilities(TEXTS))


@pytest.mark.parametrize("names", [("a", "b", "x"), ("b", "a", "c")], ids=["other labels", "other order"])
def test_members_with_other_labels_are_refused(names):
    with pytest.raises(UserError, match="--model B has the labels .* but --model A has a, b, c: an ensemble needs"):
        EnsemblePredictor([Fixed(random_probs(0)), Fixed(random_probs(1), names)], names=["A", "B"])


def test_arrays_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        average_probabilities([np.ones((2, 3)), np.ones((3, 3))])
    with pytest.raises(ValueError):
        average_probabilities([])


@pytest.fixture(scope="module")
def two_models(tiny_bert, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ensemble")
    return [str(save_classifier(tiny_bert, folder / f"seed{seed}", seed)) for seed in (0, 1)]


def predict_json(capsys, *args) -> tuple[int, list[dict], str]:
    capsys.readouterr()  # drop what building the models printed
    code = main(["predict", *TEXTS, "--json", "--precision", "fp32", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_predict_with_several_models_averages_their_probabilities(capsys, two_models):
    probs = [Predictor(model, precision="fp32").probabilities(TEXTS) for model in two_models]
    code, rows, _ = predict_json(capsys, "--model", two_models[0])
    assert code == 0 and [row["label"] for row in rows] == [LABEL_NAMES[i] for i in probs[0].argmax(axis=1)]
    code, rows, _ = predict_json(capsys, "--model", two_models[0], "--model", two_models[1])
    mean = (probs[0] + probs[1]) / 2
    assert code == 0
    assert [row["label"] for row in rows] == [LABEL_NAMES[i] for i in mean.argmax(axis=1)]
    np.testing.assert_allclose([row["probability"] for row in rows], mean.max(axis=1), rtol=1e-6)


def test_predict_refuses_models_with_other_labels(capsys, two_models, tiny_bert, tmp_path):
    other = save_classifier(tiny_bert, tmp_path / "other", seed=0, label_names=["pos", "neg"])
    code, rows, err = predict_json(capsys, "--model", two_models[0], "--model", str(other))
    assert code == 2 and rows == []
    errors = [line for line in err.splitlines() if line.startswith("freezetune: error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and "Traceback" not in err
    assert "an ensemble needs models trained on the same labels" in errors[0]
