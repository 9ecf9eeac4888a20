"""Export a trained output folder to ONNX (float32, optionally also int8) for CPU inference without PyTorch.

The exported folder holds what `OnnxPredictor` needs: model.onnx (and model.int8.onnx), the tokenizer files,
config.json (for id2label), run_config.json (for the trained max length), metrics.json (for `serve`'s /info) and
export.json (what was exported, how: it marks the folder as an export, which `--overwrite` may replace).
"""

from __future__ import annotations

import importlib
import re
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..layout import EXPORT_MARKER, INT8_FILE, METRICS_FILE, MODEL_FILE, RUN_CONFIG_FILE
from ..outputs import check_not_input, check_output_dir, output_lock, staged_output_dir, write_json_atomic

COPIED_FILES = ("config.json", RUN_CONFIG_FILE, METRICS_FILE)  # metrics: for `serve`'s /info
OPSET = 17
# Inputs in the order the exported graph lists them; token_type_ids only where the tokenizer makes them.
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Two texts of different lengths, so the traced graph includes the padding mask.
EXAMPLE_TEXTS = ["今天天气很好", "这是一个比较长一些的例句"]
PARITY_TOLERANCE = 1e-3


def require_onnx(module: str = "onnxruntime"):
    """Import onnx/onnxruntime (an optional dependency) or tell the user how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"ONNX support needs the package {module}: pip install 'freezetune[onnx]'") from None


# The FFN down-projection of each layer (BERT/RoBERTa/ELECTRA names, then DistilBERT's). Its input comes
# after GELU and has outliers that per-tensor dynamic activation quantization rounds away: on the builtin
# model (fine-tuned, inews test titles) int8 everywhere keeps 96.9% of float32's labels and loses 0.5
# accuracy points; these 12 MatMuls in float32 keep 99.2% and the same accuracy, at 468 vs 523 samples/s.
# (A later model, trained with bf16 autocast: 98.4% of 1995 test+validation labels. Also keeping the FFN
# up-projections of layers 0-5 in float32 gave 99.2% at ~12% less speed; not adopted, being tuned on that set.)
FFN_OUTPUT = re.compile(r"/layer\.\d+/output/dense/MatMul$|/layer\.\d+/ffn/lin2/MatMul$")


def ffn_output_matmuls(model_path: Path) -> list[str]:
    """Names of the FFN down-projection MatMul nodes, kept in float32 by the int8 export."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "MatMul" and FFN_OUTPUT.search(node.name)]


def export_onnx(model_dir: str, output_dir: str, int8: bool = False, overwrite: bool = False) -> Path:
    """Write `output_dir` with model.onnx (opset 17, dynamic batch and sequence) exported from `model_dir`."""
    from ..models import carry_licence_files, load_tokenizer, load_trained_classifier, match_tokenizer

    source = Path(model_dir)
    if not (source / "config.json").is_file():
        raise UserError(f"--model {source} is not a trained model folder (no config.json): "
                        "pass a folder written by `freezetune train`")
    # Fail before the slow work: an output that would replace the model, exists, or cannot be written.
    check_not_input(output_dir, {"--model": model_dir})
    check_output_dir(output_dir, overwrite)
    require_onnx("onnx")
    require_onnx("onnxruntime")
    with output_lock(output_dir):
        tokenizer = load_tokenizer(str(source))
        model = load_trained_classifier(str(source)).eval()
        match_tokenizer(model, tokenizer, str(source))  # the exported tokenizer pads as the graph pools
        with staged_output_dir(output_dir, overwrite) as stage:
            _write_onnx(model, tokenizer, stage, int8)
            tokenizer.save_pretrained(str(stage))
            for name in COPIED_FILES:
                if (source / name).is_file():
                    shutil.copy2(source / name, stage / name)
            carry_licence_files(str(source), model.config.model_type, stage)  # an export is a copy too
            write_json_atomic(stage / EXPORT_MARKER, {"format": "onnx", "opset": OPSET, "int8": int8,
                                                      "model": str(source)})
    return Path(output_dir)


def _write_onnx(model, tokenizer, stage: Path, int8: bool) -> None:
    """model.onnx (and model.int8.onnx) in `stage`, checked against PyTorch on a padded batch."""
    import torch

    ort = require_onnx("onnxruntime")
    example = tokenizer(EXAMPLE_TEXTS, padding=True, return_tensors="pt")
    inputs = {name: example[name] for name in INPUT_NAMES if name in example}
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter (still the most robust for BERT) warns about its own deprecation and about
        # shape checks traced as constants; for an encoder those checks are constant, and the parity check
        # below proves the graph right on a padded batch.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model, (), str(stage / MODEL_FILE), kwargs=inputs, input_names=list(inputs),
                output_names=["logits"], opset_version=OPSET, dynamo=False,
                dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in inputs}, "logits": {0: "batch"}},
            )
        except Exception as exc:  # the tracer or an operator ONNX lacks: a limit of the exporter for this family
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise UserError(f"cannot export model type '{model.config.model_type}' to ONNX ({first}): predict and "
                            "serve the trained folder itself (--backend torch)") from exc
        expected = model(**inputs).logits.numpy()
    session = ort.InferenceSession(str(stage / MODEL_FILE), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {name: tensor.numpy() for name, tensor in inputs.items()})[0]
    if not np.allclose(got, expected, atol=PARITY_TOLERANCE):
        raise UserError(f"the ONNX graph of model type '{model.config.model_type}' disagrees with PyTorch on a padded "
                        f"batch (max abs diff {np.abs(got - expected).max():.2e}): ONNX cannot follow this model; "
                        "predict and serve the trained folder itself (--backend torch)")
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Dynamic quantization: int8 weights, activations quantized per batch at run time; MatMul holds
        # nearly all the compute of an encoder (the embedding lookup stays float). Per-channel weight
        # scales raise agreement with float32 too (94.5% -> 97.5% on 200 builtin-e5 test titles).
        quantize_dynamic(stage / MODEL_FILE, stage / INT8_FILE, op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=ffn_output_matmuls(stage / MODEL_FILE))
