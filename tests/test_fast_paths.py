"""The speed paths change cost, not results: cached frozen prefixes and compact word-embedding updates."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, BertConfig, DistilBertConfig, ElectraConfig, XLMRobertaConfig

from freezetune.models.mean_pool import MeanPoolBertConfig
from freezetune.training import train
from freezetune.training.compact_embedding import compact_word_embeddings
from freezetune.training.prefix_cache import collate_cached, encode_prefix, top_only

from .conftest import tiny_config

SIZES = dict(vocab_size=60, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
             max_position_embeddings=40, num_labels=3, pad_token_id=0)
CONFIGS = {
    "bert": BertConfig(**SIZES),
    "mean-pool-bert": MeanPoolBertConfig(**SIZES),
    "xlm-roberta": XLMRobertaConfig(**{**SIZES, "pad_token_id": 1}),
    "electra": ElectraConfig(embedding_size=8, **SIZES),
    "distilbert": DistilBertConfig(vocab_size=60, dim=16, n_layers=3, n_heads=2, hidden_dim=32,
                                   max_position_embeddings=40, num_labels=3, pad_token_id=0),
}


def features(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        length = int(torch.randint(3, 12, (1,), generator=g))
        ids = [2] + torch.randint(5, 40, (length,), generator=g).tolist() + [3]
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": i % 3})
    return rows


def padded(rows):
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [0] * (width - len(r["input_ids"])) for r in rows])
    mask = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("n", [1, 3])
def test_cached_prefix_gives_the_full_models_logits(kind, n):
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(CONFIGS[kind]).eval()
    rows = features()
    with torch.no_grad():
        expected = model(**padded(rows)).logits
        states = encode_prefix(model, rows, n, batch_size=5)
        with top_only(model, n):
            batch = collate_cached([{"inputs_embeds": s, "labels": r["labels"]} for s, r in zip(states, rows)])
            got = model(inputs_embeds=batch["inputs_embeds"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert len(list(model.parameters())) == len(list(AutoModelForSequenceClassification.from_config(CONFIGS[kind]).parameters()))


def test_compact_embedding_training_equals_dense_training():
    rows = features(24)
    torch.manual_seed(0)
    initial = AutoModelForSequenceClassification.from_config(CONFIGS["bert"]).get_input_embeddings().weight.detach().clone()
    results = []
    for compact in (False, True):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_config(CONFIGS["bert"])
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
        model.eval()  # no dropout: both runs see the same computation
        with compact_word_embeddings(model, rows if compact else [], weight_decay=0.0 if compact else 1.0):
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
            for start in range(0, len(rows), 6):
                batch = padded(rows[start : start + 6])
                loss = model(**batch, labels=torch.tensor([r["labels"] for r in rows[start : start + 6]])).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
        results.append(model.get_input_embeddings().weight.detach().clone())
    dense, compact = results
    torch.testing.assert_close(compact, dense, atol=1e-6, rtol=1e-5)
    unseen = sorted(set(range(60)) - {t for r in rows for t in r["input_ids"]})
    assert unseen and torch.equal(compact[unseen], initial[unseen])
    assert not torch.equal(compact, initial)


def changed(before, after, prefix):
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return [not torch.equal(before[k], after[k]) for k in keys]


def test_training_with_a_cached_prefix_keeps_it_bit_for_bit(tiny_bert, tiny_csv_dir, tmp_path):
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", strategy="freeze1+emb"))
    assert metrics["cached_layers"] == 1 and metrics["strategy"] == "freeze1+emb"
    before = load_file(tiny_bert / "model.safetensors")
    after = {k.removeprefix("bert."): v for k, v in load_file(tmp_path / "out" / "model.safetensors").items()}
    assert set(before) <= set(after)  # saved whole
    assert not any(changed(before, after, "embeddings.")) and not any(changed(before, after, "encoder.layer.0."))
    assert all(changed(before, after, "encoder.layer.1."))


def test_head_only_training_changes_only_the_head(tiny_bert, tiny_csv_dir, tmp_path):
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", strategy="head"))
    assert metrics["cached_layers"] == 2
    before = load_file(tiny_bert / "model.safetensors")
    after = load_file(tmp_path / "out" / "model.safetensors")
    assert all(torch.equal(before[k], after[f"bert.{k}"]) for k in before)
    assert metrics["trainable_params"] == 32 * 3 + 3


def test_full_training_moves_only_the_embedding_rows_it_saw(tiny_bert, tiny_csv_dir, tmp_path):
    import pandas as pd
    from transformers import AutoTokenizer

    train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", strategy="full"))
    key = "embeddings.word_embeddings.weight"
    before = load_file(tiny_bert / "model.safetensors")[key]
    after = load_file(tmp_path / "out" / "model.safetensors")[f"bert.{key}"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    seen = {t for text in pd.read_csv(tiny_csv_dir / "train.csv")["sentence"] for t in tokenizer(text)["input_ids"]}
    moved = {i for i in range(len(before)) if not torch.equal(before[i], after[i])}
    assert moved and moved <= seen
    assert tokenizer.pad_token_id not in moved


@pytest.mark.parametrize("strategy", ["head", "freeze1+emb"])
def test_cached_training_of_the_mean_pooling_model(tiny_bert, tiny_csv_dir, tmp_path, strategy):
    """The builtin model's head class takes `inputs_embeds` only through **kwargs: the cache must reach it."""
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path / "mean-pool"
    config = MeanPoolBertConfig(**{**BertModel.from_pretrained(tiny_bert).config.to_dict(), "model_type": None})
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(folder)
    metrics = train(tiny_config(folder, tiny_csv_dir, tmp_path / "out", strategy=strategy))
    assert metrics["cached_layers"] == (2 if strategy == "head" else 1)
    assert len(metrics["epochs"]) == 3


def test_each_shortcut_can_be_turned_off(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    from freezetune.training import run as training

    compacted = []
    real_compact = training.compact_word_embeddings
    monkeypatch.setattr(training, "compact_word_embeddings", lambda *a: compacted.append(1) or real_compact(*a))
    config = tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "out", strategy="freeze1+emb", prefix_cache=False,
                         compact_embeddings=False, length_grouping=False)
    assert training.training_arguments(config, "fp32", str(tmp_path)).train_sampling_strategy == "random"
    metrics = train(config)
    assert metrics["cached_layers"] == 0 and not compacted
    before = load_file(tiny_bert / "model.safetensors")
    after = {k.removeprefix("bert."): v for k, v in load_file(tmp_path / "out" / "model.safetensors").items()}
    assert not any(changed(before, after, "encoder.layer.0.")) and all(changed(before, after, "encoder.layer.1."))
