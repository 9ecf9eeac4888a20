"""models/anatomy.py: every family of its table on a tiny random model, the fallback, and the strategies asking it.

The oracle is the parameter names (which transformers writes) and the model's own forward pass, never the
anatomy's own paths.
"""

from __future__ import annotations

import re

import pytest
import torch
import transformers as hf
from transformers import AutoModelForSequenceClassification

from freezetune import UserError
from freezetune.models.anatomy import KNOWN, TABLE, anatomy, depth_from_config, skeleton
from freezetune.posthoc.fold import final_linear
from freezetune.strategies import TrainPlan, parse_strategy, prepare

from .tiny_models import CONFIGS, toy_classifier

_DECODER = dict(num_hidden_layers=3, hidden_size=32, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=64, vocab_size=100, pad_token_id=0, num_labels=3)
_SEQ2SEQ = dict(d_model=32, vocab_size=100, num_labels=3, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
FAMILY_CONFIGS = {
    **CONFIGS,
    "gpt2": hf.GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=100, num_labels=3, pad_token_id=0),
    "llama": hf.LlamaConfig(**_DECODER),
    "qwen2": hf.Qwen2Config(**_DECODER),
    "qwen3": hf.Qwen3Config(head_dim=16, **_DECODER),
    "mistral": hf.MistralConfig(**_DECODER),
    "gemma": hf.GemmaConfig(head_dim=16, **_DECODER),
    "gemma3_text": hf.Gemma3TextConfig(head_dim=16, **_DECODER),
    "t5": hf.T5Config(num_layers=1, num_decoder_layers=2, d_kv=16, num_heads=2, d_ff=64, **_SEQ2SEQ),
    "mt5": hf.MT5Config(num_layers=1, num_decoder_layers=2, d_kv=16, num_heads=2, d_ff=64, **_SEQ2SEQ),
    "bart": hf.BartConfig(encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                          encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, **_SEQ2SEQ),
    "mbart": hf.MBartConfig(encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                            encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64, **_SEQ2SEQ),
}
FAMILIES = sorted(FAMILY_CONFIGS)
SEQ2SEQ = {"t5", "mt5", "bart", "mbart"}


def model_of(kind: str):
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(FAMILY_CONFIGS[kind]).eval()


def block_of(name: str) -> tuple[str, int] | None:
    """(stack, index) of the block a parameter name lies in, read from the name alone."""
    found = re.search(r"(?:^|\.)(encoder|decoder)?\.?(?:layer|layers|block|h)\.(\d+)\.", name)
    if not found:
        return None
    return found[1] or "decoder", int(found[2])


def names(model, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def ids_of(model):
    """Two rows of token ids, each ending with an end-of-sequence token (T5 and BART pool there)."""
    ids = torch.randint(2, 50, (2, 6), generator=torch.Generator().manual_seed(1))
    ids[:, -1] = 1
    return ids


def test_every_table_family_has_a_tiny_model_here():
    assert set(TABLE) == {m for m in FAMILIES} | {"camembert", "freezetune-mean-pool-bert"}


@pytest.mark.parametrize("kind", FAMILIES)
def test_family_table(kind):
    config = FAMILY_CONFIGS[kind]
    model = model_of(kind)
    body = anatomy(model)
    assert body.family == config.model_type

    # Blocks: in depth order through the model, encoder first; each block's parameters carry its name.
    expected = sorted({b for n, _ in model.named_parameters() if (b := block_of(n))},
                      key=lambda b: (b[0] != "encoder", b[1]))
    if kind not in SEQ2SEQ:  # encoders name no stack in their paths: the table says which it is
        expected = [(body.blocks[0].stack, i) for _, i in expected]
    assert [(b.stack, b.index) for b in body.blocks] == expected
    assert body.depth == len(expected) == depth_from_config(config)
    for block in body.blocks:
        assert {block_of(n) for n in names(model, block.module.parameters())} <= {(block.stack, block.index),
                                                                                  ("decoder", block.index)}

    # Embeddings hold the token embeddings; the head is what lies outside the base model.
    assert model.get_input_embeddings().weight in [p for m in body.embeddings for p in m.parameters()]
    outside = {n for n, _ in model.named_parameters() if not n.startswith(model.base_model_prefix + ".")}
    assert names(model, body.head_parameters()) == outside and outside

    # The final linear layer gives the logits: zero it and every logit is 0.
    with torch.no_grad():
        body.final_linear.weight.zero_()
        if body.final_linear.bias is not None:  # decoder-only heads have none
            body.final_linear.bias.zero_()
        assert torch.equal(model(input_ids=ids_of(model)).logits, torch.zeros(2, 3))
    assert final_linear(model) is body.final_linear

    # Norms: every module whose class is one, and at least the final norm where the family has one.
    norms = body.norms(model)
    assert norms and all(re.search(r"(Layer|RMS)Norm$", type(m).__name__) for m in norms)
    if body.final_norm is not None:
        assert body.final_norm in norms
    # LoRA's default targets exist in the blocks; the pooling is named.
    leaves = {n.rpartition(".")[2] for n, _ in body.blocks[-1].module.named_modules()}
    assert set(body.lora_targets) <= leaves and body.lora_targets
    assert body.pooling in ("cls", "mean", "last-token", "eos")
    # The fast paths (tests/test_fast_paths.py, tests/test_decoder_fast_paths.py): the prefix cache on one stack,
    # the compact embeddings everywhere.
    assert body.prefix_cache == (kind not in SEQ2SEQ) and body.compact_embeddings


def test_an_encoder_decoder_counts_encoder_blocks_first():
    model = model_of("t5")  # 1 encoder + 2 decoder blocks
    body = anatomy(model)
    assert body.describe_depth() == "3 layers (1 encoder, 2 decoder)"
    strategy = parse_strategy("freeze1")
    prepare(strategy, model, TrainPlan(1, 1))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    # The whole encoder stack, its final norm included (it runs between the stacks), and nothing else.
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith("transformer.encoder.block.") or n.startswith("transformer.encoder.final_layer")}
    with pytest.raises(UserError, match=re.escape("freeze4 asks for more than the model's 3 layers (1 encoder, 2 "
                                                  "decoder): use freeze0..freeze3")):
        prepare(parse_strategy("freeze4"), model_of("t5"), TrainPlan(1, 1))


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bart"])
def test_layer_wise_strategies_on_other_families(kind):
    model = model_of(kind)
    trained = prepare(parse_strategy("top1"), model, TrainPlan(1, 1))
    last = anatomy(model).blocks[-1]
    assert {block_of(n) for n in names(model, trained)} == {(last.stack, last.index), None}
    model = model_of(kind)
    trained = prepare(parse_strategy("bitfit"), model, TrainPlan(1, 1))
    norm_weights = {n for n, p in model.named_parameters() if re.search(r"(norm|ln_\w+)\.weight$", n)}
    assert norm_weights and norm_weights <= names(model, trained)  # RMSNorm (no bias) too


def test_lora_adapts_gpt2s_fused_conv1d_attention_and_merges_exactly():
    model = model_of("gpt2")
    strategy = parse_strategy("lora:r=2")
    params = prepare(strategy, model, TrainPlan(1, 1))
    assert {n.split(".lora_")[0].rpartition(".")[2] for n in names(model, params) if ".lora_" in n} == {"c_attn"}
    model.eval()  # the adapters' dropout came in training mode
    with torch.no_grad():
        for p in params:  # move the adapters off their zero start, so merging has something to merge
            p.add_(0.1 * torch.randn_like(p))
        ids = ids_of(model)
        unmerged = model(input_ids=ids).logits
        merged = strategy.finalize(model)
        torch.testing.assert_close(merged(input_ids=ids).logits, unmerged, atol=1e-5, rtol=0)
    assert not any("lora_" in k for k in merged.state_dict())


def test_an_unknown_family_trains_full_but_refuses_layer_wise_strategies_naming_the_known_ones():
    model = toy_classifier()
    prepare(parse_strategy("full"), model, TrainPlan(1, 1))
    assert all(p.requires_grad for p in model.parameters())
    prepare(parse_strategy("head"), model, TrainPlan(1, 1))
    assert names(model, [p for p in model.parameters() if p.requires_grad]) == {"classifier.weight",
                                                                               "classifier.bias"}
    for spec in ("freeze1", "top1", "llrd", "gradual", "lora"):
        with pytest.raises(UserError, match=r"cannot find the encoder layers of model type 'toy'") as caught:
            prepare(parse_strategy(spec), toy_classifier(), TrainPlan(1, 1))
        assert KNOWN in str(caught.value) and "\n" not in str(caught.value)
    body = anatomy(model)
    assert body.family is None and not body.prefix_cache and not body.compact_embeddings


def test_the_fallback_finds_the_blocks_of_a_bert_like_family_the_table_lacks():
    config = hf.MPNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=32, num_labels=3)
    model = AutoModelForSequenceClassification.from_config(config)
    body = anatomy(model)
    assert body.family is None and body.depth == 2 and not body.prefix_cache
    assert body.embeddings == (model.base_model.embeddings,)
    prepare(parse_strategy("freeze1+emb"), model, TrainPlan(1, 1))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters()
                      if n.startswith(("mpnet.embeddings.", "mpnet.encoder.layer.0."))}


@pytest.mark.parametrize("kind", FAMILIES)
def test_a_skeleton_on_the_meta_device_has_the_same_anatomy(kind):
    body = anatomy(skeleton(FAMILY_CONFIGS[kind]))
    real = anatomy(model_of(kind))
    assert (body.depth, body.describe_depth(), body.lora_targets, body.stack_paths) == (
        real.depth, real.describe_depth(), real.lora_targets, real.stack_paths)
    assert next(body.blocks[0].module.parameters()).device.type == "meta"


def test_a_skeleton_of_a_type_without_a_sequence_classifier_is_one_line():
    with pytest.raises(UserError, match=r"cannot build a sequence classifier of model type 'clip_vision_model'") as caught:
        skeleton(hf.CLIPVisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    assert "\n" not in str(caught.value)
