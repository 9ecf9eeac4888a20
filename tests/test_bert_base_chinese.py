"""bert-base-chinese without the hub: the notebook's tokenizer cell exactly, the shipped vocabulary, and --init random.

The notebook's cell runs the CLI in a fresh process with HF_HUB_OFFLINE=1 and an empty HF_HOME; the other tests
switch the hub off in this process (`offline_hub`). Either way nothing cached on this machine can help.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import freezetune
import freezetune.cli
from freezetune.errors import UserError
from freezetune.models import bert_base_chinese, load_classifier, load_tokenizer

SOURCE_ROOT = Path(freezetune.__file__).resolve().parents[1]  # the freezetune under test, for the subprocesses
LABELS = ["中性", "正面", "负面"]

# The notebook's first cell (task2-notebook.md) and what it printed:
#   tokenizer = BertTokenizer.from_pretrained('bert-base-chinese')
#   print(tokenizer(["你好，  世界", "我是个比较长的句子。"], padding=True, truncation=True, max_length=10))
#   print(tokenizer("你好。", "你也好。", padding=True, truncation=True, max_length=10))
NOTEBOOK_CELL = [
    (["你好，  世界", "我是个比较长的句子。"],
     "{'input_ids': [[101, 872, 1962, 8024, 686, 4518, 102, 0, 0, 0], [101, 2769, 3221, 702, 3683, 6772, 7270, 4638, 1368, 102]], "
     "'token_type_ids': [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], "
     "'attention_mask': [[1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]}"),
    (["--pair", "你好。", "你也好。"],
     "{'input_ids': [101, 872, 1962, 511, 102, 872, 738, 1962, 511, 102], "
     "'token_type_ids': [0, 0, 0, 0, 0, 1, 1, 1, 1, 1], 'attention_mask': [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]}"),
]


@pytest.fixture
def offline_env(tmp_path):
    """A fresh process's environment: hub off, an empty HF cache, and this checkout's freezetune."""
    hf_home = tmp_path / "empty-hf-home"
    hf_home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(hf_home), PYTHONPATH=str(SOURCE_ROOT), OMP_NUM_THREADS="1")
    return env


def run_cli(env, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "freezetune", *map(str, argv)], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """In this process: hub off and an empty HF cache (huggingface_hub reads both at call time from `constants`)."""
    from huggingface_hub import constants

    cache = tmp_path / "empty-hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))


@pytest.mark.parametrize("texts, printed", NOTEBOOK_CELL, ids=["batch", "pair"])
def test_tokenize_prints_the_notebooks_output_offline(offline_env, texts, printed):
    # The notebook's settings: padding=True (= longest, our default), truncation (always on), max_length=10.
    result = run_cli(offline_env, "tokenize", "--model", "bert-base-chinese", *texts, "--max-length", "10", "--dict")
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed + "\n"
    assert "using the vocabulary shipped with freezetune" in result.stderr


def test_shipped_vocabulary_is_googles():
    data = bert_base_chinese.VOCAB_FILE.read_bytes()
    # The checksums published for bert-base-chinese's vocab.txt (see the NOTICE beside it), not our constants.
    assert hashlib.md5(data).hexdigest() == "3b5b76c4aef48ecf8cb3abaafe960f09"
    assert bert_base_chinese.vocab_file() == bert_base_chinese.VOCAB_FILE
    tokens = data.decode("utf-8").split("\n")[:-1]
    assert len(tokens) == bert_base_chinese.architecture_config().vocab_size == 21128
    assert {t: tokens.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")} == \
        {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}


def test_damaged_vocabulary_is_refused(monkeypatch, tmp_path):
    damaged = tmp_path / "vocab.txt"
    damaged.write_bytes(bert_base_chinese.VOCAB_FILE.read_bytes().replace("你".encode(), "妳".encode(), 1))
    monkeypatch.setattr(bert_base_chinese, "VOCAB_FILE", damaged)
    with pytest.raises(UserError, match="checksum mismatch.*reinstall freezetune"):
        bert_base_chinese.shipped_tokenizer()


def test_shipped_tokenizer_is_cased_like_the_hubs(offline_hub):
    # The hub's tokenizer_config.json says do_lower_case false: upper-case Latin words are not in the vocabulary.
    tokenizer = load_tokenizer("google-bert/bert-base-chinese")
    assert tokenizer.tokenize("GDP和gdp") == ["[UNK]", "和", "gdp"]
    assert tokenizer.model_max_length == 512


def test_shipped_tokenizer_agrees_with_the_python_bert_tokenizer():
    """The notebook ran transformers 4's pure-Python BertTokenizer; transformers 5 keeps it as BertTokenizerLegacy."""
    legacy = pytest.importorskip("transformers.models.bert.tokenization_bert_legacy").BertTokenizerLegacy
    texts = ["你好，  世界", "我是个比较长的句子。", "GG NB 666 这波apple打得好！！", "ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ１２３",
             "emoji 😀👍 表情\t制表\n换行", "日本語のテキストと한국어", "[CLS] 字面的 [SEP]", "café naïve 2022年"]
    reference = legacy(str(bert_base_chinese.vocab_file()), **bert_base_chinese.HUB_TOKENIZER_SETTINGS)
    shipped = bert_base_chinese.shipped_tokenizer()
    assert shipped(texts)["input_ids"] == reference(texts)["input_ids"]
    assert shipped(texts[2], texts[3])["input_ids"] == reference(texts[2], texts[3])["input_ids"]


def test_offline_training_says_how_to_get_the_weights(offline_hub, tiny_csv_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = freezetune.cli.main(["train", "--model", "bert-base-chinese", "--data", str(tiny_csv_dir), "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("freezetune: error: the pretrained weights of bert-base-chinese are not available offline")
    assert "--model PATH" in last and "--init random" in last
    assert "Traceback" not in err and not out.exists()


def _encoder_parameters(c) -> int:
    """BERT's encoder size from its shape: embeddings, layers (attention, FFN, 2 LayerNorms), pooler."""
    embeddings = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * c.hidden_size + 2 * c.hidden_size
    attention = 4 * (c.hidden_size * c.hidden_size + c.hidden_size)
    ffn = 2 * c.hidden_size * c.intermediate_size + c.intermediate_size + c.hidden_size
    layer = attention + ffn + 2 * 2 * c.hidden_size
    return embeddings + c.num_hidden_layers * layer + c.hidden_size * c.hidden_size + c.hidden_size


def test_random_init_builds_the_bert_base_chinese_architecture_offline(offline_hub):
    with torch.device("meta"):  # shapes only: drawing 102M random weights takes seconds (the seeded test checks values)
        model = load_classifier("bert-base-chinese", LABELS, init="random")
    c = model.config
    assert type(model).__name__ == "BertForSequenceClassification"
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size,
            c.max_position_embeddings, c.type_vocab_size, c.vocab_size) == (12, 768, 12, 3072, 512, 2, 21128)
    assert c.id2label == dict(enumerate(LABELS))
    n_encoder = sum(p.numel() for p in model.bert.parameters())
    assert n_encoder == _encoder_parameters(c) > 102_000_000


def test_random_init_is_seeded_and_ignores_the_weights(tiny_bert):
    from transformers import set_seed

    def weights(init: str, seed: int) -> dict:
        set_seed(seed)
        return load_classifier(str(tiny_bert), LABELS, init=init).state_dict()

    # (Not seed 0: conftest drew tiny_bert's saved weights with torch.manual_seed(0), so they would coincide.)
    random1, again1, random2, pretrained = weights("random", 1), weights("random", 1), weights("random", 2), weights("pretrained", 1)
    assert random1.keys() == pretrained.keys()
    assert all(random1[k].shape == pretrained[k].shape for k in random1)
    assert all(torch.equal(random1[k], again1[k]) for k in random1)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(random1[key], random2[key]) and not torch.equal(random1[key], pretrained[key])


def test_bad_init_is_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match="--init 'zeros' is not valid: use one of pretrained, random"):
        freezetune.train(freezetune.TrainConfig(output_dir=str(tmp_path / "out"), data="no/such/data.csv", init="zeros"))


def tiny_architecture(**kwargs):
    """bert-base-chinese's vocabulary on a 2-layer, 32-wide encoder: the full shape would train for minutes."""
    from transformers import BertConfig

    return BertConfig(vocab_size=bert_base_chinese.VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64, **kwargs)


def test_random_init_training_says_so_everywhere(offline_hub, monkeypatch, tiny_csv_dir, tmp_path, capsys):
    monkeypatch.setattr(bert_base_chinese, "architecture_config", tiny_architecture)
    out = tmp_path / "out"
    code = freezetune.cli.main(["train", "--model", "bert-base-chinese", "--data", str(tiny_csv_dir), "--init", "random",
                                "--epochs", "1", "--precision", "fp32", "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "model bert-base-chinese (random init, not pretrained), strategy full" in captured.err
    assert "bert-base-chinese (random init, not pretrained): best epoch 1" in captured.err
    assert "RANDOM INIT, not pretrained" in captured.out
    assert json.loads((out / "metrics.json").read_text())["init"] == "random"
    assert json.loads((out / "run_config.json").read_text())["init"] == "random"
    assert "(random init, not pretrained)" in (out / "train.log").read_text(encoding="utf-8")

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    saved = AutoModelForSequenceClassification.from_pretrained(out)
    assert (saved.config.vocab_size, saved.config.num_hidden_layers) == (21128, 2)
    assert AutoTokenizer.from_pretrained(out)("你好。", "你也好。")["input_ids"] == [101, 872, 1962, 511, 102, 872, 738, 1962, 511, 102]
