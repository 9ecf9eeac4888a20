"""Folding a temperature and logit offsets into the classifier: every prediction path then gives the same labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from freezetune import UserError
from freezetune.layout import OFFSETS_KEY, TEMPERATURE_KEY
from freezetune.models import load_tokenizer
from freezetune.posthoc.fold import check_foldable, final_linear, fold_into_classifier, folded

LABEL_NAMES = ["中性", "正面", "负面"]  # the tiny data's sorted names
TEMPERATURE = 1.7


def save_classifier(tiny_bert, folder: Path, seed: int, label_names: list[str] = LABEL_NAMES) -> Path:
    """The tiny BERT with a fresh head drawn with `seed`, saved with its tokenizer like a trained model."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)})
    model.save_pretrained(folder)
    load_tokenizer(str(tiny_bert)).save_pretrained(folder)
    return folder


def logits_of(model, tokenizer, texts) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(**tokenizer(texts, padding=True, return_tensors="pt")).logits.double().numpy()


@pytest.fixture(scope="module")
def texts(tiny_csv_dir) -> list[str]:
    return pd.read_csv(tiny_csv_dir / "test.csv")["sentence"].tolist()


@pytest.fixture(scope="module")
def folded_folder(tiny_bert, texts, tmp_path_factory):
    """A saved classifier with T and offsets folded in, and the labels argmax(old logits / T + o) it must give."""
    from transformers import AutoModelForSequenceClassification

    folder = save_classifier(tiny_bert, tmp_path_factory.mktemp("fold") / "model", seed=0)
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(folder), load_tokenizer(str(folder))
    old = logits_of(model, tokenizer, texts)
    # Offsets that even out the classes: they move labels, so the test sees whether every path applies them.
    offsets = -(old / TEMPERATURE).mean(axis=0)
    offsets -= offsets[0]
    expected = np.argmax(old / TEMPERATURE + offsets, axis=1)
    assert (expected != old.argmax(axis=1)).any()
    fold_into_classifier(model, TEMPERATURE, offsets)
    np.testing.assert_allclose(logits_of(model, tokenizer, texts), old / TEMPERATURE + offsets, atol=1e-5)
    model.save_pretrained(folder)
    return folder, offsets, [LABEL_NAMES[i] for i in expected]


def test_the_saved_config_records_what_was_folded(folded_folder):
    from transformers import AutoConfig

    folder, offsets, _ = folded_folder
    config = AutoConfig.from_pretrained(folder)
    assert getattr(config, TEMPERATURE_KEY) == pytest.approx(TEMPERATURE)
    np.testing.assert_allclose(getattr(config, OFFSETS_KEY), offsets)
    temperature, recorded = folded(config)
    assert temperature == pytest.approx(TEMPERATURE)
    np.testing.assert_allclose(recorded, offsets)


def test_pipeline_and_predictor_give_the_folded_labels(folded_folder, texts):
    from transformers import pipeline

    from freezetune.inference.predict import Predictor

    folder, _, expected = folded_folder
    assert [row["label"] for row in pipeline("text-classification", model=str(folder))(texts)] == expected
    assert [row["label"] for row in Predictor(str(folder), precision="fp32").predict(texts)] == expected


def test_onnx_export_gives_the_folded_labels(folded_folder, texts, tmp_path):
    pytest.importorskip("onnx", reason="needs the onnx extra")
    from freezetune.inference.export import export_onnx
    from freezetune.inference.onnx_predict import OnnxPredictor

    folder, _, expected = folded_folder
    exported = export_onnx(str(folder), str(tmp_path / "onnx"))
    assert [row["label"] for row in OnnxPredictor(str(exported)).predict(texts)] == expected


def tiny_model(kind: str):
    """A randomly initialised 1-layer classifier of each supported head layout (no download)."""
    import transformers as tf

    from freezetune.models.mean_pool import MeanPoolBertConfig, MeanPoolBertForSequenceClassification

    size = dict(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=40, num_labels=3)
    torch.manual_seed(0)
    return {
        "bert": lambda: tf.BertForSequenceClassification(tf.BertConfig(**size)),
        "roberta": lambda: tf.RobertaForSequenceClassification(tf.RobertaConfig(**size)),
        "xlm-roberta": lambda: tf.XLMRobertaForSequenceClassification(tf.XLMRobertaConfig(**size)),
        "electra": lambda: tf.ElectraForSequenceClassification(tf.ElectraConfig(embedding_size=16, **size)),
        "distilbert": lambda: tf.DistilBertForSequenceClassification(tf.DistilBertConfig(
            vocab_size=60, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=40, num_labels=3)),
        "mean-pool": lambda: MeanPoolBertForSequenceClassification(MeanPoolBertConfig(**size)),
    }[kind]().eval()


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta", "electra", "distilbert", "mean-pool"])
def test_folding_works_on_every_supported_head_and_composes(kind):
    model = tiny_model(kind)
    ids = torch.randint(5, 60, (4, 7))
    run = lambda: model(input_ids=ids).logits.double().detach().numpy()  # noqa: E731
    old, offsets = run(), np.array([0.0, 0.3, -0.2])
    fold_into_classifier(model, 2.0, offsets)
    np.testing.assert_allclose(run(), old / 2 + offsets, atol=1e-5)
    # Folding again composes, and the config holds the totals.
    fold_into_classifier(model, 0.5, -offsets)
    np.testing.assert_allclose(run(), (old / 2 + offsets) / 0.5 - offsets, atol=1e-5)
    temperature, recorded = folded(model.config)
    assert temperature == pytest.approx(1.0)
    np.testing.assert_allclose(recorded, offsets / 0.5 - offsets)


def test_a_final_layer_without_bias_takes_a_temperature_but_refuses_offsets():
    model = tiny_model("bert")
    model.classifier = torch.nn.Linear(model.classifier.in_features, 3, bias=False)
    ids = torch.randint(5, 60, (4, 7))
    old = model(input_ids=ids).logits.detach().double().numpy()
    check_foldable(model, offsets=False)
    fold_into_classifier(model, 2.0, np.zeros(3))
    np.testing.assert_allclose(model(input_ids=ids).logits.detach().double().numpy(), old / 2, atol=1e-6)
    with pytest.raises(UserError, match="no bias to fold the decision offsets into: use --decision argmax"):
        check_foldable(model, offsets=True)
    with pytest.raises(UserError, match="no bias"):
        fold_into_classifier(model, 1.0, np.array([0.0, 0.5, 0.0]))


def test_a_model_without_a_known_head_is_refused():
    from transformers import BertConfig, BertModel

    with pytest.raises(UserError, match="cannot find the final linear layer of BertModel"):
        final_linear(BertModel(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32)))


@pytest.mark.parametrize("temperature, offsets", [(0.0, [0, 0, 0]), (float("nan"), [0, 0, 0]), (1.0, [0, 0]),
                                                  (1.0, [0, float("inf"), 0])])
def test_bad_temperature_or_offsets_are_refused(temperature, offsets):
    with pytest.raises(ValueError):
        fold_into_classifier(tiny_model("bert"), temperature, offsets)


def test_a_head_that_cannot_be_folded_into_fails_before_training_unless_nothing_is_folded(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    """Temperature scaling (the default) and decision offsets are folded into the final linear layer: a model whose
    final layer freezetune cannot find is refused before training; with nothing to fold, it trains and is scored."""
    from transformers import Trainer

    from freezetune.posthoc import fold as head
    from freezetune.training import train

    from .conftest import tiny_config

    def not_found(model):
        raise UserError("cannot find the final linear layer (stand-in)")

    monkeypatch.setattr(head, "final_linear", not_found)
    original_train = Trainer.train
    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("trained a model whose head cannot be folded"))
    with pytest.raises(UserError, match="cannot find the final linear layer"):
        train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()

    monkeypatch.setattr(Trainer, "train", original_train)
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "plain", calibration="none", decision="argmax", epochs=1))
    assert metrics["details"]["calibration"]["temperature"] == 1.0 and len(metrics["evaluation_predictions"]) == 40
