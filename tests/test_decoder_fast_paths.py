"""The fast paths on decoder-only models (and the compact embeddings on encoder-decoders) change cost, not results.

The prefix cache: cached and uncached logits agree on padded batches of different lengths (positions, causal and
padding masks, the final norm, GPT-2's added positions, last-token pooling), and training on the cache equals
training without it. The compact embeddings: the dense embedding's loss and gradients, rows the data never uses
left bit for bit on vocabularies of Qwen's and Gemma's size, shared matrices kept one. Where a path cannot apply
the log says why.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import transformers as hf
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForSequenceClassification

from freezetune.strategies import TrainPlan, parse_strategy, prepare
from freezetune.training import train
from freezetune.training.compact_embedding import compact_word_embeddings
from freezetune.training.prefix_cache import cached_layers, collate_cached, encode_prefix, top_only

from .conftest import FILLER, MARKERS, tiny_config
from .tiny_models import toy_classifier

PAD = 0
_DECODER = dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=64, vocab_size=100, pad_token_id=PAD, num_labels=3)
_NO_DROPOUT_GPT2 = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)
CONFIGS = {
    "gpt2": dict(cls=hf.GPT2Config, n_layer=3, n_embd=32, n_head=2, vocab_size=100, num_labels=3, pad_token_id=PAD,
                 bos_token_id=1, eos_token_id=1, **_NO_DROPOUT_GPT2),
    "llama": dict(cls=hf.LlamaConfig, **_DECODER),
    "qwen2": dict(cls=hf.Qwen2Config, **_DECODER),
    "mistral": dict(cls=hf.MistralConfig, **_DECODER),
    # Sliding-window and full layers mixed, a window shorter than the examples and a rotary base per layer type:
    # a cached top that lost each block's place would take the wrong mask and positions.
    "gemma3_text": dict(cls=hf.Gemma3TextConfig, head_dim=16, sliding_window=4, rope_local_base_freq=10.0,
                        layer_types=["sliding_attention", "full_attention", "sliding_attention"], **_DECODER),
}
_SEQ2SEQ = dict(d_model=32, vocab_size=100, num_labels=3, pad_token_id=PAD, eos_token_id=1, decoder_start_token_id=0)
SHARED = {
    "t5": dict(cls=hf.T5Config, num_layers=1, num_decoder_layers=1, d_kv=16, num_heads=2, d_ff=64, dropout_rate=0.0,
               **_SEQ2SEQ),
    "bart": dict(cls=hf.BartConfig, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                 scale_embedding=True, dropout=0.0, **_SEQ2SEQ),
}


def model_of(kind: str, **overrides):
    settings = {**CONFIGS, **SHARED}[kind] | overrides
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(settings["cls"](**{k: v for k, v in settings.items()
                                                                             if k != "cls"}))


def examples(n=10, seed=0, vocab=100, eos=None):
    """Token-id rows of 3..13 tokens (ids from 5 up; with `eos`, each ends with it), labels 0..2."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        ids = torch.randint(5, vocab, (int(torch.randint(3, 13, (1,), generator=g)),), generator=g).tolist()
        ids = ids + [eos] if eos is not None else ids
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": i % 3})
    return rows


def padded(rows, side="right"):
    """What DataCollatorWithPadding gives the uncached model: padded with the pad id (on the tokenizer's side)."""
    width = max(len(r["input_ids"]) for r in rows)

    def pad(values, fill):
        padding = [fill] * (width - len(values))
        return values + padding if side == "right" else padding + values

    return {"input_ids": torch.tensor([pad(r["input_ids"], PAD) for r in rows]),
            "attention_mask": torch.tensor([pad([1] * len(r["input_ids"]), 0) for r in rows]),
            "labels": torch.tensor([r["labels"] for r in rows])}


def cached_batch(rows, states):
    return collate_cached([{**r, "inputs_embeds": s} for r, s in zip(rows, states)], pad_token_id=PAD)


# --- the prefix cache ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("n", [1, 3])  # 3: every block cached, the top is the final norm and the head
def test_cached_prefix_gives_the_uncached_logits_on_padded_batches(kind, n):
    model = model_of(kind).eval()
    rows = examples()
    with torch.no_grad():
        expected = model(**padded(rows)).logits
        states = encode_prefix(model, rows, n, batch_size=4)  # other batches, other padding than the check's
        with top_only(model, n):
            got = model(**cached_batch(rows, states)).logits
        after = model(**padded(rows)).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert torch.equal(after, expected)  # whole again


@pytest.mark.parametrize("kind", sorted(set(CONFIGS) - {"gpt2"}))
def test_rotary_models_give_the_logits_of_a_left_padding_tokenizer_too(kind):
    """Rotary attention depends only on the distance between positions: left padding, which shifts them, gives
    the same (GPT-2's absolute positions do shift)."""
    model = model_of(kind).eval()
    rows = examples()
    with torch.no_grad():
        expected = model(**padded(rows, side="left")).logits
        states = encode_prefix(model, rows, 1, batch_size=4)
        with top_only(model, 1):
            got = model(**cached_batch(rows, states)).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_gpt2s_embedding_dropout_belongs_to_the_cached_bottom():
    """The cached states went through GPT-2's embedding dropout (in eval mode); the training top must not drop
    them again."""
    model = model_of("gpt2", embd_pdrop=0.5).eval()
    rows = examples()
    with torch.no_grad():
        expected = model(**padded(rows)).logits
        states = encode_prefix(model, rows, 1, batch_size=4)
        model.train()
        with top_only(model, 1):
            got = model(**cached_batch(rows, states)).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def train_steps(model, rows, cached: bool, steps=3, batch=4):
    """A few AdamW steps of freeze1+emb, on cached states or not; the losses and the weights after."""
    model.train()  # the configs have no dropout: both runs compute the same
    params = prepare(parse_strategy("freeze1+emb"), model, TrainPlan(1, 1))
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    states = encode_prefix(model, rows, 1, batch_size=5) if cached else None
    losses = []
    with top_only(model, 1) if cached else contextlib.nullcontext():
        for step in range(steps):
            part = slice(step * batch, (step + 1) * batch)
            inputs = cached_batch(rows[part], states[part]) if cached else padded(rows[part])
            loss = model(**inputs).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["gpt2", "llama", "gemma3_text"])
def test_training_on_the_cached_prefix_equals_training_without_it(kind):
    rows = examples(12)
    initial = model_of(kind).state_dict()
    losses, weights = train_steps(model_of(kind), rows, cached=False)
    cached_losses, cached_weights = train_steps(model_of(kind), rows, cached=True)
    assert cached_losses == pytest.approx(losses, abs=1e-5)
    assert cached_weights.keys() == weights.keys()
    for key in weights:
        torch.testing.assert_close(cached_weights[key], weights[key], atol=1e-5, rtol=0)
    frozen = [k for k in weights if "embed_tokens" in k or k.startswith(("transformer.wte", "transformer.wpe"))
              or ".0." in k]
    assert frozen and all(torch.equal(cached_weights[k], initial[k]) for k in frozen)
    assert not torch.equal(cached_weights["score.weight"], initial["score.weight"])


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A 2-layer Llama with a character tokenizer (padding on the right) over the synthetic data (a folder)."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    chars = sorted(set(FILLER + "".join(MARKERS.values())))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = hf.BertTokenizer(str(folder / "vocab.txt"), model_input_names=["input_ids", "attention_mask"])
    tokenizer.save_pretrained(folder)
    config = hf.LlamaConfig(**{**_DECODER, "num_hidden_layers": 2, "vocab_size": len(vocab)})
    torch.manual_seed(0)
    hf.LlamaModel(config).save_pretrained(folder)
    return folder


def test_a_llama_trained_with_the_prefix_cache_learns_what_it_learns_without(tiny_llama, tiny_csv_dir, tmp_path):
    runs = {cache: train(tiny_config(tiny_llama, tiny_csv_dir, tmp_path / f"cache-{cache}", strategy="freeze1+emb",
                                     epochs=1, prefix_cache=cache, compact_embeddings=False))
            for cache in (True, False)}
    assert runs[True]["cached_layers"] == 1 and runs[False]["cached_layers"] == 0
    for key in ("train_loss", "eval_loss"):
        assert runs[True]["epochs"][-1][key] == pytest.approx(runs[False]["epochs"][-1][key], abs=1e-4)
    before = load_file(tiny_llama / "model.safetensors")
    after = load_file(tmp_path / "cache-True" / "model.safetensors")
    assert all(torch.equal(before[k], after[f"model.{k}"]) for k in before if k.startswith(("embed_tokens.", "layers.0.")))
    assert not torch.equal(before["layers.1.mlp.up_proj.weight"], after["model.layers.1.mlp.up_proj.weight"])


def test_where_the_prefix_cache_cannot_apply_the_log_says_why():
    said = []
    model = model_of("t5")
    strategy = parse_strategy("freeze1+emb")
    prepare(strategy, model, TrainPlan(1, 1))
    assert cached_layers(model, strategy, said.append) == 0
    assert said == ["prefix cache off: model type 't5' is an encoder-decoder (its decoder reads the encoder's "
                    "output); the frozen bottom runs at every step"]
    said.clear()
    model = model_of("llama")
    strategy = parse_strategy("full")
    prepare(strategy, model, TrainPlan(1, 1))
    assert cached_layers(model, strategy, said.append) == 0 and not said  # nothing frozen: nothing to say


# --- the compact embeddings ----------------------------------------------------------------------------------

def loss_and_gradients(model, rows, compact: bool):
    model.eval()  # no dropout; gradients still flow
    with compact_word_embeddings(model, rows if compact else [], weight_decay=0.0 if compact else 1.0) as swapped:
        assert (swapped is not None) == compact
        loss = model(**padded(rows)).loss
        loss.backward()
        word = swapped.weight_rows.grad if compact else model.get_input_embeddings().weight.grad
        rest = {n: p.grad for n, p in model.named_parameters() if p.grad is not None and "embed" not in n}
        rows_trained = swapped.rows if compact else None
    return loss.item(), word, rest, rows_trained


def test_compact_embeddings_give_the_dense_loss_and_gradients_on_qwen2():
    rows = examples(vocab=151_936)
    rows[2]["input_ids"][1] = PAD  # the padding row, inside an example: nn.Embedding gives it no gradient
    dense = loss_and_gradients(model_of("qwen2", vocab_size=151_936, hidden_size=16, intermediate_size=32), rows, False)
    compact = loss_and_gradients(model_of("qwen2", vocab_size=151_936, hidden_size=16, intermediate_size=32), rows, True)
    assert compact[0] == pytest.approx(dense[0], abs=1e-6)
    assert compact[2].keys() == dense[2].keys() and dense[2]
    for name in dense[2]:
        torch.testing.assert_close(compact[2][name], dense[2][name], atol=1e-6, rtol=1e-5)
    trained = compact[3]
    assert PAD not in trained.tolist() and len(trained) == len({t for r in rows for t in r["input_ids"]} - {PAD})
    torch.testing.assert_close(compact[1], dense[1][trained], atol=1e-6, rtol=1e-5)
    untouched = torch.ones(151_936, dtype=torch.bool)
    untouched[trained] = False
    assert torch.count_nonzero(dense[1][untouched]) == 0  # so the dense step moves none of them either


def compact_steps(model, rows, steps=3, batch=4, **compact):
    """AdamW steps on the whole model, compact or dense (`weight_decay=1.0` turns compaction off)."""
    model.eval()
    with compact_word_embeddings(model, rows, **compact) as swapped:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        for step in range(steps):
            model(**padded(rows[step * batch : (step + 1) * batch])).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return swapped, trainable


@pytest.mark.parametrize("kind, vocab", [("qwen2", 151_936), ("gemma3_text", 262_144), ("gpt2", 100)])
def test_a_compact_step_leaves_the_rows_the_data_never_uses_bit_for_bit(kind, vocab):
    """Gemma 3's embedding scales its rows by sqrt(hidden) inside the module: the compact one must too."""
    rows = examples(12, vocab=vocab)
    small = dict(vocab_size=vocab) if kind == "gpt2" else dict(vocab_size=vocab, hidden_size=16, intermediate_size=32)
    initial = model_of(kind, **small).get_input_embeddings().weight.detach().clone()
    dense = model_of(kind, **small)
    _, dense_trainable = compact_steps(dense, rows, weight_decay=1.0)
    model = model_of(kind, **small)
    swapped, trainable = compact_steps(model, rows, weight_decay=0.0)
    seen = sorted({t for r in rows for t in r["input_ids"]})
    assert swapped is not None and swapped.weight_rows.shape == (len(seen), initial.shape[1])
    # The optimizer holds only the rows the data uses.
    assert dense_trainable - trainable == (vocab - len(seen)) * initial.shape[1]
    after = model.get_input_embeddings().weight.detach()
    unseen = torch.ones(vocab, dtype=torch.bool)
    unseen[seen] = False
    assert torch.equal(after[unseen], initial[unseen]) and not torch.equal(after[seen], initial[seen])
    for (name, p), q in zip(model.named_parameters(), dense.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", sorted(SHARED))
def test_shared_embeddings_stay_one_matrix_and_train_as_dense(kind):
    """T5's and BART's `shared`, `encoder.embed_tokens` and `decoder.embed_tokens` hold one matrix (BART's scaled)."""
    rows = examples(12, eos=1)
    holders = ("shared", "encoder.embed_tokens", "decoder.embed_tokens")
    dense = model_of(kind)
    compact_steps(dense, rows, weight_decay=1.0)
    model = model_of(kind)
    originals = [model.base_model.get_submodule(h) for h in holders]
    with compact_word_embeddings(model, rows, weight_decay=0.0) as swapped:
        assert all(model.base_model.get_submodule(h) is swapped for h in holders)
    compact_steps(model, rows, weight_decay=0.0)
    assert [model.base_model.get_submodule(h) for h in holders] == originals
    assert len({id(m.weight) for m in originals}) == 1
    for (name, p), q in zip(model.named_parameters(), dense.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)


def test_a_family_freezetune_does_not_know_keeps_dense_embeddings_and_the_log_says_why():
    model = toy_classifier()
    said = []
    with compact_word_embeddings(model, examples(vocab=50), weight_decay=0.0, say=said.append) as swapped:
        assert swapped is None
    assert said == ["compact embeddings off: model type 'toy' is not among the families freezetune knows"]


def test_an_embedding_tied_to_an_output_layer_is_not_compacted_and_the_log_says_why():
    model = model_of("qwen2")
    embedding = model.get_input_embeddings()
    model.lm_head = nn.Linear(32, 100, bias=False)
    model.lm_head.weight = embedding.weight  # an output layer reads every row: each would move
    said = []
    with compact_word_embeddings(model, examples(), weight_decay=0.0, say=said.append) as swapped:
        assert swapped is None and model.get_input_embeddings() is embedding
    assert said == ["compact embeddings off: the word embeddings are tied to lm_head, which reads every row"]
