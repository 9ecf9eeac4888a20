"""Decoder-only and encoder-decoder models end to end: train, eval, predict, serve and export on tiny random models
(tests/families.py). Every strategy runs on GPT-2 and on T5, the cheap path on Llama, Qwen2, BART and Gemma-3.

The oracles are outside freezetune: which saved weights moved, read by parameter name from the safetensors files;
a plain transformers `pipeline("text-classification")` on the trained folder; ONNX Runtime on the export.
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from freezetune.cli import main

from .families import KINDS, tiny_config, tiny_family_model, tiny_tokenizer

ARGS = ["--epochs", "1", "--lr", "5e-3", "--max-length", "16", "--batch-size", "16", "--precision", "fp32"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """base(kind): the folder of a tiny random model of that family (built once per module)."""
    built = {}

    def folder(kind):
        if kind not in built:
            built[kind] = tiny_family_model(kind, tmp_path_factory.mktemp(kind) / "model")
        return built[kind]

    return folder


@pytest.fixture(scope="module")
def texts(tiny_csv_dir):
    return pd.read_csv(tiny_csv_dir / "test.csv")["sentence"].tolist()


def train(capsys, model, data, out, *extra):
    code = main(["train", "--model", str(model), "--data", str(data), "--output-dir", str(out), *ARGS, *map(str, extra)])
    return code, capsys.readouterr().err


def pipeline_predictions(folder, texts):
    """Labels and every class's probability from a plain transformers pipeline, in input order."""
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(folder), device="cpu")
    rows = classify(texts, batch_size=8, top_k=None)
    names = [classify.model.config.id2label[i] for i in range(classify.model.config.num_labels)]
    probabilities = np.array([[{r["label"]: r["score"] for r in row}[n] for n in names] for row in rows])
    return [names[i] for i in probabilities.argmax(axis=1)], probabilities


def assert_plain_transformers_agrees(folder, texts):
    """freezetune predict and pipeline() give the same labels and probabilities (the temperature folded in)."""
    from freezetune.inference.predict import Predictor

    predictor = Predictor(str(folder), batch_size=16, precision="fp32")
    labels, probabilities = pipeline_predictions(folder, texts)
    assert [row["label"] for row in predictor.predict(texts)] == labels
    np.testing.assert_allclose(predictor.probabilities(texts), probabilities, atol=1e-5)


# --- every strategy on one decoder (GPT-2) and one encoder-decoder (T5) ----------------------------------------

# Depth by parameter name (the oracle): GPT-2's h.i; T5's encoder.block.i, then decoder.block.i after the
# encoder's 2. The encoder's final norm runs between the stacks: with the last encoder block (docs/architectures.md).
ENCODER_DEPTH = 2


def depth_of(name: str) -> int | None:
    if name.startswith("encoder.final_layer_norm"):
        return ENCODER_DEPTH - 1
    found = re.match(r"(?:(encoder|decoder)\.)?(?:h|block)\.(\d+)\.", name)
    if not found:
        return None
    return int(found[2]) + (ENCODER_DEPTH if found[1] == "decoder" else 0)


def in_layers(name: str, start: int, stop: int) -> bool:
    return depth_of(name) is not None and start <= depth_of(name) < stop


def is_embedding(name: str) -> bool:
    return name.split(".")[0] in ("wte", "wpe", "shared")


def is_final_norm(name: str) -> bool:
    """The norm after the top layer (it trains with it)."""
    return name.split(".")[0] == "ln_f" or name.startswith("decoder.final_layer_norm")


def is_bias_or_norm(name: str) -> bool:
    return name.endswith(".bias") or re.search(r"(^|\.)(ln_\w+|\w*layer_norm)\.", name) is not None


ATTENTION_QV = re.compile(r"(\.attn\.c_attn|\.(q|v))\.weight$")  # GPT-2's fused query/key/value; T5's q and v
LINEAR = re.compile(r"\.(c_attn|c_proj|c_fc|q|k|v|o|wi|wo)\.weight$")


def expected_moves(strategy: str, depth: int):
    """strategy -> which base weights (by name) training moves; freezeN / topN as the strategy tests use them."""
    n = depth // 2  # freeze half: on T5 that is the whole encoder, its final norm included
    return {
        "full": lambda name: True,
        "llrd": lambda name: True,
        f"freeze{n}": lambda name: depth_of(name) is None or in_layers(name, n, depth),
        f"freeze{n}+emb": lambda name: in_layers(name, n, depth) or depth_of(name) is None and not is_embedding(name),
        "head": lambda name: False,
        "top1": lambda name: in_layers(name, depth - 1, depth) or is_final_norm(name),
        # 8 steps (120 rows, batch 16): the head, after step 3 the top layer too (its norm with it), after 6 the next
        "gradual:steps=3": lambda name: is_final_norm(name) or in_layers(name, depth - 2, depth),
        "bitfit": is_bias_or_norm,
        "lora": lambda name: ATTENTION_QV.search(name) is not None,
        "lora:targets=all": lambda name: depth_of(name) is not None and LINEAR.search(name) is not None,
        f"freeze{n}+lora": lambda name: ATTENTION_QV.search(name) is not None and in_layers(name, n, depth),
    }[strategy]


def moved(base_folder, trained_folder) -> set[str]:
    """Names (the bare model's) of the base weights whose saved values differ after training."""
    before = load_file(str(base_folder / "model.safetensors"))
    after = {re.sub(r"^(transformer|model)\.", "", k): v for k, v in load_file(str(trained_folder / "model.safetensors")).items()}
    assert set(before) <= set(after), sorted(set(before) - set(after))[:3]
    return {name for name, value in before.items() if not np.array_equal(value.numpy(), after[name].numpy())}


STRATEGIES = ["full", "freeze{n}", "freeze{n}+emb", "head", "top1", "bitfit", "lora", "lora:targets=all",
              "freeze{n}+lora", "llrd", "gradual:steps=3"]


@pytest.mark.parametrize("kind, depth", [("gpt2", 2), ("t5", 4)])
@pytest.mark.parametrize("template", STRATEGIES)
def test_every_strategy_trains_what_it_says_and_loads_in_plain_transformers(capsys, base, tiny_csv_dir, texts,
                                                                            tmp_path, kind, depth, template):
    strategy = template.format(n=depth // 2)
    code, err = train(capsys, base(kind), tiny_csv_dir, tmp_path / "out", "--strategy", strategy)
    assert code == 0, err
    before = load_file(str(base(kind) / "model.safetensors"))
    rule = expected_moves(strategy, depth)
    assert moved(base(kind), tmp_path / "out") == {name for name in before if rule(name)}
    assert_plain_transformers_agrees(tmp_path / "out", texts)
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    if strategy.startswith(("freeze", "top")):  # the model card names the layers as this model has them
        assert "encoder layers" not in card
        assert {"gpt2": "decoder layers", "t5": "(layers count through the encoder, then the decoder)"}[kind] in card


@pytest.mark.parametrize("strategy", ["freeze1+emb", "full"])
def test_a_decoder_trains_with_the_fast_paths_off(capsys, base, tiny_csv_dir, texts, tmp_path, strategy):
    """The prefix cache and the compact embeddings are optional: without them a decoder trains the same parts."""
    code, err = train(capsys, base("gpt2"), tiny_csv_dir, tmp_path / "out", "--strategy", strategy,
                      "--no-prefix-cache", "--no-compact-embeddings")
    assert code == 0, err
    rule = expected_moves(strategy, 2)
    assert moved(base("gpt2"), tmp_path / "out") == {n for n in load_file(str(base("gpt2") / "model.safetensors")) if rule(n)}
    assert_plain_transformers_agrees(tmp_path / "out", texts)


def test_an_encoder_decoder_run_says_which_stack_a_layer_count_reaches(capsys, base, tiny_csv_dir, tmp_path):
    code, err = train(capsys, base("t5"), tiny_csv_dir, tmp_path / "out", "--strategy", "freeze3")
    assert code == 0, err
    assert "freeze3 freezes encoder layers 0-1 and decoder layer 0 (layers count the encoder's first)" in err
    code, err = train(capsys, base("t5"), tiny_csv_dir, tmp_path / "out", "--strategy", "freeze5", "--overwrite")
    assert code == 2 and err.strip().splitlines()[-1] == (
        "freezetune: error: freeze5 asks for more than the model's 4 layers (2 encoder, 2 decoder): use freeze0..freeze4")


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_bitfit_on_a_family_without_biases_says_only_norms_and_the_head_train(capsys, base, tiny_csv_dir, tmp_path, kind):
    code, err = train(capsys, base(kind), tiny_csv_dir, tmp_path / "out", "--strategy", "bitfit")
    norm = {"t5": "T5LayerNorm", "llama": "LlamaRMSNorm"}[kind]
    assert code == 0 and f"bitfit: {kind} has no biases in its layers, only its norms ({norm}) and the head train" in err


@pytest.mark.parametrize("kind", KINDS)
def test_lora_defaults_are_peft_s_own(kind):
    """targets=auto adapts the layers peft itself picks for each family (its default target-module table)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    from freezetune.models.anatomy import anatomy, skeleton

    config = tiny_config(kind, tiny_tokenizer(kind))
    if config.model_type not in PEFT_DEFAULTS:
        pytest.skip(f"peft has no default targets for {config.model_type}")
    assert sorted(anatomy(skeleton(config)).lora_targets) == sorted(PEFT_DEFAULTS[config.model_type])


# --- the other families, padding, the decision rule ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["llama", "qwen2", "bart"])
def test_other_families_train_with_lora_predict_and_evaluate(capsys, base, tiny_csv_dir, texts, tmp_path, kind):
    out = tmp_path / "out"
    code, err = train(capsys, base(kind), tiny_csv_dir, out, "--strategy", "lora")
    assert code == 0, err
    assert_plain_transformers_agrees(out, texts)
    assert main(["eval", "--model", str(out), "--data", str(tiny_csv_dir), "--json", "--precision", "fp32"]) == 0
    report = json.loads(capsys.readouterr().out)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert report["confusion_matrix"] == metrics["evaluation"]["confusion_matrix"]


@pytest.mark.parametrize("kind, stand_in", [("gpt2", "<|endoftext|>"), ("llama", "</s>")])
def test_a_checkpoint_without_a_padding_token_gets_its_eos_in_the_saved_config_and_tokenizer(
        capsys, base, tiny_csv_dir, tmp_path, kind, stand_in):
    from transformers import AutoConfig, AutoTokenizer

    assert AutoTokenizer.from_pretrained(base(kind)).pad_token is None
    code, err = train(capsys, base(kind), tiny_csv_dir, tmp_path / "out", "--strategy", "head")
    tokenizer, config = AutoTokenizer.from_pretrained(tmp_path / "out"), AutoConfig.from_pretrained(tmp_path / "out")
    assert code == 0 and f"has no padding token: padding with its end-of-sequence token {stand_in!r}" in err
    assert tokenizer.pad_token == stand_in and config.pad_token_id == tokenizer.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.padding_side == "right"


def test_a_left_padding_tokenizer_pads_on_the_right_so_a_text_scores_alike_in_any_batch(capsys, base, tiny_csv_dir,
                                                                                        texts, tmp_path):
    """GPT-2 learns absolute positions: padded on the left, a text's positions depend on the longest text of its
    batch (its probabilities moved by ~1e-2 between batch sizes); on the right they never do."""
    from freezetune.inference.predict import Predictor

    source = tmp_path / "gpt2-left"
    shutil.copytree(base("gpt2"), source)
    settings = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    (source / "tokenizer_config.json").write_text(json.dumps({**settings, "padding_side": "left"}), encoding="utf-8")
    code, err = train(capsys, source, tiny_csv_dir, tmp_path / "out", "--strategy", "full")
    assert code == 0 and "pads on the left: padding on the right instead" in err
    alone, together = (Predictor(str(tmp_path / "out"), batch_size=b, precision="fp32").probabilities(texts)
                       for b in (1, len(texts)))
    np.testing.assert_allclose(alone, together, atol=1e-6)


def test_decision_offsets_are_refused_up_front_on_a_bias_less_decoder_head(capsys, base, tiny_csv_dir, tmp_path):
    code, err = train(capsys, base("qwen2"), tiny_csv_dir, tmp_path / "out", "--decision", "macro_f1")
    assert code == 2 and not (tmp_path / "out").exists()
    line, = [line for line in err.splitlines() if line.startswith("freezetune: error:")]
    assert "Qwen2ForSequenceClassification has no bias to fold the decision offsets into: use --decision argmax" in line
    assert "epoch" not in err  # refused before training


def test_compare_refuses_decision_offsets_for_a_decoder_before_any_run(capsys, base, tiny_bert, tiny_csv_dir, tmp_path):
    code = main(["compare", "--models", f"{tiny_bert},{base('qwen2')}", "--strategies", "head", "--seeds", "0",
                 "--decision", "macro_f1", "--data", str(tiny_csv_dir), "--output-dir", str(tmp_path / "study")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "study").exists()
    assert err.strip().splitlines()[-1] == (
        f"freezetune: error: --models {base('qwen2')}: the final linear layer of model type 'qwen2' has no bias to "
        "fold the decision offsets into: use --decision argmax with this model (a decoder's head has none, and "
        "transformers would not load one added; --calibration temperature still works)")


def test_an_encoder_decoder_head_takes_the_decision_offsets(capsys, base, tiny_csv_dir, texts, tmp_path):
    code, err = train(capsys, base("bart"), tiny_csv_dir, tmp_path / "out", "--strategy", "head", "--decision", "macro_f1")
    assert code == 0, err
    assert_plain_transformers_agrees(tmp_path / "out", texts)


def test_an_encoder_decoder_tokenizer_that_appends_no_eos_is_refused(capsys, base, tiny_csv_dir, tmp_path):
    """T5 and BART pool the last end-of-sequence token: a tokenizer that appends none would crash mid-training."""
    source = tmp_path / "t5-without-eos"
    shutil.copytree(base("t5"), source)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base("qwen2") / name, source / name)  # appends nothing
    code, err = train(capsys, source, tiny_csv_dir, tmp_path / "out")
    assert code == 2 and err.strip().splitlines()[-1].startswith(
        "freezetune: error: the tokenizer of") and "does not end a text with the end-of-sequence token" in err


def test_a_family_without_a_sequence_classifier_fails_in_one_line_naming_the_known_ones(capsys, base, tiny_csv_dir,
                                                                                       tmp_path):
    from transformers import PegasusConfig, PegasusModel

    source = tmp_path / "pegasus"
    PegasusModel(PegasusConfig(vocab_size=400, d_model=16, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=16,
                               decoder_ffn_dim=16, encoder_attention_heads=2, decoder_attention_heads=2,
                               max_position_embeddings=64)).save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(base("bart") / name, source / name)
    code, err = train(capsys, source, tiny_csv_dir, tmp_path / "out")
    assert code == 2 and err.strip().splitlines()[-1].startswith(
        f"freezetune: error: {source} is a model of type 'pegasus', for which transformers has no sequence classifier")
    assert "gpt2, llama" in err and "t5" in err
    # compare builds the model's skeleton from its config alone: the same families named.
    from freezetune import UserError
    from freezetune.models.anatomy import KNOWN, skeleton

    with pytest.raises(UserError, match=re.escape(f"use a model of a known type ({KNOWN})")):
        skeleton(PegasusConfig(vocab_size=400, d_model=16, encoder_layers=1, decoder_layers=1))


# --- export, serve, the Gemma notice -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["gpt2", "llama", "t5", "bart"])
def test_export_to_onnx_gives_the_labels_of_pytorch(capsys, base, tiny_csv_dir, texts, tmp_path, kind):
    pytest.importorskip("onnxruntime")
    from freezetune.inference.onnx_predict import OnnxPredictor
    from freezetune.inference.predict import Predictor

    code, err = train(capsys, base(kind), tiny_csv_dir, tmp_path / "out", "--strategy", "head")
    assert code == 0, err
    assert main(["export", "--model", str(tmp_path / "out"), "--output-dir", str(tmp_path / "onnx")]) == 0
    torch_side, onnx_side = (Predictor(str(tmp_path / "out"), batch_size=7, precision="fp32"),
                             OnnxPredictor(str(tmp_path / "onnx"), batch_size=5))
    expected = torch_side.probabilities(texts + [""])
    np.testing.assert_allclose(onnx_side.probabilities(texts + [""]), expected, atol=1e-5)
    # An empty text alone (GPT-2's tokenizer gives it no token at all) scores as it does beside others.
    for side in (torch_side, onnx_side):
        np.testing.assert_allclose(side.probabilities([""]), expected[-1:], atol=1e-5)


def test_serve_answers_with_a_decoder(capsys, base, tiny_csv_dir, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from freezetune.inference.predict import Predictor
    from freezetune.serve.http import create_app
    from freezetune.serve.options import ServeLimits
    from freezetune.serve.run import server_info

    assert train(capsys, base("gpt2"), tiny_csv_dir, tmp_path / "out", "--strategy", "head")[0] == 0
    predictor = Predictor(str(tmp_path / "out"), precision="fp32")
    limits = ServeLimits(max_texts=8, max_chars=50, max_body_bytes=4096, max_batch=16, max_wait_ms=2)
    app = create_app(predictor, server_info(str(tmp_path / "out"), predictor, "torch", "fp32", limits), limits)
    with TestClient(app) as client:
        served = client.post("/predict", json={"texts": ["", "今天游戏真好"]}).json()["predictions"]
    assert [row["label"] for row in served] == [row["label"] for row in predictor.predict(["", "今天游戏真好"])]


def test_a_model_derived_from_gemma_carries_its_notice_and_terms(capsys, base, tiny_csv_dir, tmp_path):
    from freezetune.models.builtin_gemma import NOTICE, TERMS_FILE

    source = tmp_path / "gemma"
    shutil.copytree(base("gemma3_text"), source)
    (source / "NOTICE").write_text(NOTICE, encoding="utf-8")  # as builtin:gemma3-270m's folder holds them
    (source / TERMS_FILE).write_text("<p>the terms</p>", encoding="utf-8")
    code, err = train(capsys, source, tiny_csv_dir, tmp_path / "out", "--strategy", "head")
    assert code == 0, err
    assert main(["export", "--model", str(tmp_path / "out"), "--output-dir", str(tmp_path / "onnx")]) == 0
    for folder in (tmp_path / "out", tmp_path / "onnx"):  # an export is a copy too
        assert (folder / "NOTICE").read_text(encoding="utf-8") == NOTICE
        assert (folder / TERMS_FILE).read_text(encoding="utf-8") == "<p>the terms</p>"
    # A Gemma checkpoint whose folder has no NOTICE (a hub download) still gets Gemma's.
    code, err = train(capsys, base("gemma3_text"), tiny_csv_dir, tmp_path / "plain", "--strategy", "head")
    assert code == 0 and (tmp_path / "plain" / "NOTICE").read_text(encoding="utf-8") == NOTICE


# --- the architectures page ----------------------------------------------------------------------------------

def test_the_architectures_page_shows_each_family_s_fast_paths_as_the_anatomy_table_sets_them():
    """docs/architectures.md's family table, rebuilt from models/anatomy.py: a flag turned on or off in the code
    must be turned in the page too."""
    from pathlib import Path

    from freezetune.models.anatomy import TABLE

    page = (Path(__file__).resolve().parent.parent / "docs" / "architectures.md").read_text(encoding="utf-8")
    reads = {"cls": "first token", "mean": "mean of the real tokens", "last-token": "last real token",
             "eos": "last end-of-sequence token"}
    on = {True: "on", False: "off"}
    for model_type, entry in TABLE.items():
        row = (f"| `{model_type}` | {' + '.join(stack.name for stack in entry.stacks)} | {reads[entry.pooling]} | "
               f"`{'/'.join(entry.lora_targets)}` | {on[entry.prefix_cache]} | {on[entry.compact_embeddings]} |")
        assert row in page.splitlines(), row
