"""Tiny random models of the decoder-only and encoder-decoder families, saved as ready model folders.

`tiny_family_model(kind, folder)` writes what `freezetune train --model FOLDER` reads as it reads a hub checkpoint:
config.json, random weights of the bare model (training attaches a new head) and the family's own tokenizer
class saved beside them, so `AutoTokenizer` and `pipeline()` load what they load for the real models:

- gpt2: GPT2Tokenizer, byte-level BPE, `<|endoftext|>` as bos and eos, and no padding token (as GPT-2's own);
- llama: LlamaTokenizer, `<s>` added in front, no padding token, padding on the left;
- qwen2: Qwen2Tokenizer, byte-level BPE, `<|endoftext|>` as eos and padding token, nothing added;
- t5: T5Tokenizer (unigram), `</s>` appended, `<pad>`: T5's classifier pools the last `</s>`;
- bart: BartTokenizer, byte-level BPE, `<s> ... </s>` around the text, `<pad>`: BART pools the last `</s>`.

Their vocabulary is the synthetic data's characters (tests/conftest.py) and the export's example texts, one token
each (the byte-level ones through merges). Each layer holds a few thousand parameters; a folder takes well under
a second to build.
"""

from __future__ import annotations

from pathlib import Path

from .conftest import FILLER, MARKERS

CHARACTERS = sorted(set(FILLER + "".join(MARKERS.values()) + "今天天气很好这是一个比较长一些的例句"))
HIDDEN = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, max_position_embeddings=64)
DECODERS = ("gpt2", "llama", "qwen2", "qwen3", "mistral", "gemma", "gemma3_text")
ENCODER_DECODERS = ("t5", "mt5", "bart", "mbart")
KINDS = DECODERS + ENCODER_DECODERS


def _byte_level(specials: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary (specials first, then the 256 byte symbols) whose merges make each of
    CHARACTERS one token, as GPT-2's, Qwen2's and BART's tokenizers store them."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbol = bytes_to_unicode()
    vocab = {token: i for i, token in enumerate(specials)}
    for byte in sorted(symbol.values()):
        vocab.setdefault(byte, len(vocab))
    merges = []
    for char in CHARACTERS:
        left, *rest = (symbol[b] for b in char.encode("utf-8"))
        for right in rest:
            if left + right not in vocab:
                merges.append((left, right))
                vocab[left + right] = len(vocab)
            left += right
    return vocab, merges


def _metaspace(specials: list[str]) -> list[str]:
    """A SentencePiece-style vocabulary: specials, the word-start mark, then CHARACTERS."""
    return [*specials, "\u2581", *CHARACTERS]


def tiny_tokenizer(kind: str):
    """`kind`'s own tokenizer class over a tiny vocabulary (see the module docstring)."""
    import transformers as hf

    limit = dict(model_max_length=HIDDEN["max_position_embeddings"])
    if kind == "gpt2":
        vocab, merges = _byte_level(["<|endoftext|>"])
        return hf.GPT2Tokenizer(vocab=vocab, merges=merges, **limit)
    if kind in ("qwen2", "qwen3"):
        vocab, merges = _byte_level(["<|endoftext|>"])
        return hf.Qwen2Tokenizer(vocab=vocab, merges=merges, **limit)
    if kind == "bart":
        vocab, merges = _byte_level(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        return hf.BartTokenizer(vocab=vocab, merges=merges, **limit)
    if kind in ("llama", "mistral"):
        pieces = _metaspace(["<unk>", "<s>", "</s>"])
        return hf.LlamaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], add_bos_token=True,
                                 padding_side="left", **limit)
    if kind in ("gemma", "gemma3_text"):
        pieces = _metaspace(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])
        return hf.GemmaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], **limit)
    if kind in ("t5", "mt5"):
        pieces = _metaspace(["<pad>", "</s>", "<unk>"])
        return hf.T5Tokenizer(vocab=[(p, 0.0 if i < 3 else -1.0) for i, p in enumerate(pieces)], extra_ids=0,
                              **limit)
    if kind == "mbart":
        pieces = _metaspace(["<s>", "<pad>", "</s>", "<unk>"])
        return hf.MBartTokenizer(vocab=[(p, 0.0 if i < 4 else -1.0) for i, p in enumerate(pieces)],
                                 src_lang="zh_CN", **limit)
    raise KeyError(f"no tiny model of kind {kind!r}: the kinds are {', '.join(KINDS)}")


def tiny_config(kind: str, tokenizer, layers: int = 2):
    """The architecture of `kind`, sized tiny, with the token ids of `tokenizer`."""
    import transformers as hf

    ids = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if kind == "gpt2":
        return hf.GPT2Config(n_layer=layers, n_embd=16, n_head=2, n_inner=32, n_positions=64, **ids)
    decoders = dict(llama=hf.LlamaConfig, qwen2=hf.Qwen2Config, qwen3=hf.Qwen3Config, mistral=hf.MistralConfig,
                    gemma=hf.GemmaConfig, gemma3_text=hf.Gemma3TextConfig)
    if kind in decoders:
        return decoders[kind](num_hidden_layers=layers, num_key_value_heads=1, head_dim=8, **HIDDEN, **ids)
    if kind in ("t5", "mt5"):
        config = hf.T5Config if kind == "t5" else hf.MT5Config
        return config(d_model=16, d_kv=8, d_ff=32, num_heads=2, num_layers=layers, num_decoder_layers=layers,
                      decoder_start_token_id=tokenizer.pad_token_id, **ids)
    if kind in ("bart", "mbart"):
        config = hf.BartConfig if kind == "bart" else hf.MBartConfig
        return config(d_model=16, encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                      max_position_embeddings=64, decoder_start_token_id=tokenizer.eos_token_id,
                      forced_eos_token_id=None, **ids)
    raise KeyError(f"no tiny model of kind {kind!r}: the kinds are {', '.join(KINDS)}")


def tiny_family_model(kind: str, folder, layers: int = 2, seed: int = 0) -> Path:
    """Write a tiny random model of family `kind` (one of KINDS) with its tokenizer into `folder`
    (created if needed) and return it: a folder `freezetune train --model` reads as it reads a hub checkpoint."""
    import torch
    from transformers import AutoModel

    folder = Path(folder)
    tokenizer = tiny_tokenizer(kind)
    torch.manual_seed(seed)
    AutoModel.from_config(tiny_config(kind, tokenizer, layers)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
