"""The model card: README.md in the Hugging Face convention, written by training, safe for any label name,
and its `pipeline()` example really runs."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml

from freezetune.cli import main
from freezetune.metrics import classification_report
from freezetune.modelcard import folder_facts, md, write_model_card

markdown_it = pytest.importorskip("markdown_it", reason="renders the card to check its escaping")

LABELS = ["positive", "neutral", "negative"]
BUILTIN_RUN = {"model": "builtin:multilingual-e5-small", "data": "builtin:inews", "strategy": "freeze6+emb",
               "max_length": 30, "epochs": 3, "lr": 5e-5, "output_dir": "/home/someone/runs/x", "overwrite": False}


def fake_metrics(labels, seed=0) -> dict:
    """metrics.json as training writes it, with reports computed by scikit-learn on random predictions."""
    rng = np.random.default_rng(seed)
    truth, preds = rng.integers(0, len(labels), 60), rng.integers(0, len(labels), 60)
    report = classification_report(truth, preds, labels)
    return {"label_names": labels, "validation": classification_report(truth[:30], preds[:30], labels),
            "evaluation_split": "test", "evaluation": report, "strategy": "freeze6+emb", "trainable_params": 1000,
            "total_params": 4000, "precision": "bf16", "best_epoch": 2, "selection_metric": "accuracy",
            "data_notes": ["dropped 3 duplicate rows"]}


def read_card(folder):
    text = (folder / "README.md").read_text(encoding="utf-8")
    header, body = re.fullmatch(r"---\n(.*?)\n---\n(.*)", text, re.S).groups()
    return yaml.safe_load(header), body


def render(body: str) -> str:
    return markdown_it.MarkdownIt("commonmark").enable("table").render(body)


def test_builtin_card_has_the_hub_header_results_and_the_not_bert_base_chinese_note(tmp_path):
    metrics = fake_metrics(LABELS)
    write_model_card(tmp_path, metrics, BUILTIN_RUN)
    header, body = read_card(tmp_path)
    assert header["pipeline_tag"] == "text-classification" and header["library_name"] == "transformers"
    assert header["base_model"] == "intfloat/multilingual-e5-small"
    assert "datasets" not in header  # builtin:inews is no hub dataset
    assert header["metrics"] == ["accuracy", "f1"] and "freezetune" in header["tags"]
    results = header["model-index"][0]["results"][0]
    assert results["dataset"]["split"] == "test"
    assert [m["value"] for m in results["metrics"]] == [round(metrics["evaluation"][k], 4) for k in ("accuracy", "macro_f1")]
    assert "NOT bert-base-chinese" in body and "4-bit" in body and "import freezetune" in body
    html = render(body)
    for label in LABELS:  # one table row per class: validation F1, test F1, test support
        row = re.search(rf"<tr>\s*<td>{label}</td>\s*<td>([\d.]+)</td>\s*<td>([\d.]+)</td>\s*<td>(\d+)</td>", html)
        assert row, label
        assert float(row.group(2)) == pytest.approx(metrics["evaluation"]["per_class"][label]["f1"], abs=5e-5)
        assert int(row.group(3)) == metrics["evaluation"]["per_class"][label]["support"]
    assert "encoder layers 0..5 frozen (embeddings frozen too)" in body
    assert "/home/someone" not in body  # where the run wrote is not the reader's business
    assert "max_length=30" in body  # pipeline() truncates as training did


def test_hub_model_and_dataset_go_to_the_header_local_paths_do_not(tmp_path):
    write_model_card(tmp_path, fake_metrics(LABELS), {"model": "bert-base-chinese", "data": "hf:someone/game_chat",
                                                      "strategy": "full", "max_length": 30})
    header, body = read_card(tmp_path)
    assert header["base_model"] == "bert-base-chinese" and header["datasets"] == ["someone/game_chat"]
    assert "NOT bert-base-chinese" not in body and "import freezetune" not in body
    local = tmp_path / "my models" / "bert"
    local.mkdir(parents=True)
    write_model_card(tmp_path, {}, {"model": str(local), "data": str(tmp_path)})
    header, body = read_card(tmp_path)
    assert "base_model" not in header and "model-index" not in header
    assert str(tmp_path) not in body and "No metrics.json" in body


def test_a_distilled_model_names_its_teachers_and_weight_and_others_show_no_weight(tmp_path):
    teachers = [tmp_path / "home" / "me" / f"seed{i}" for i in (0, 1)]
    for teacher in teachers:
        teacher.mkdir(parents=True)
    write_model_card(tmp_path, fake_metrics(LABELS), {**BUILTIN_RUN, "distill_from": [str(t) for t in teachers],
                                                      "distill_weight": 0.8})
    _, body = read_card(tmp_path)
    assert "Distilled from 2 model(s), whose averaged probabilities on the training texts were soft targets " \
           "(weight 0.8): seed0, seed1." in body
    assert "| `distill_weight` | 0.8 |" in body and str(tmp_path) not in body
    write_model_card(tmp_path, fake_metrics(LABELS), {**BUILTIN_RUN, "distill_from": [], "distill_weight": 0.5})
    _, body = read_card(tmp_path)
    assert "Distilled" not in body and "distill_weight" not in body


def test_label_names_cannot_inject_markdown_or_html(tmp_path):
    labels = ["<script>alert(1)</script>", "a|b", "*bold* _x_", "[click](http://evil.example)", "`code`", "line\nbreak"]
    write_model_card(tmp_path, fake_metrics(labels), {**BUILTIN_RUN, "data": "<img src=x onerror=alert(1)>"})
    header, body = read_card(tmp_path)  # the header still parses
    html = render(body)
    for tag in ("<script", "<img", "<a ", "<em>", "<strong>bold", "<code>code"):
        assert tag not in html, tag
    for table in re.findall(r"<table>(.*?)</table>", html, re.S):  # "a|b" split no cell: rows as wide as headers
        rows = re.findall(r"<tbody>.*?</tbody>", table, re.S)[0].split("</tr>")[:-1]
        assert {row.count("<td>") for row in rows} == {table.count("<th>")}
    plain = re.sub(r"<[^>]+>", "", html).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("&quot;", '"')
    for label in labels:
        assert " ".join(label.split()) in plain  # shown literally
    assert md("a\\b") == "a\\\\b"


@pytest.fixture(scope="module")
def trained(tiny_bert, tiny_csv_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "model"
    assert main(["train", "--model", str(tiny_bert), "--data", str(tiny_csv_dir), "--output-dir", str(out),
                 "--epochs", "1", "--lr", "5e-3", "--max-length", "16"]) == 0
    return out


def test_training_writes_the_card_and_its_pipeline_example_runs(trained, monkeypatch):
    from freezetune.inference.predict import Predictor

    header, body = read_card(trained)
    assert header["pipeline_tag"] == "text-classification" and "strategy-full" in header["tags"]
    assert body.lstrip().startswith("# model\n") and "partial" not in body  # named after OUT, not the staging folder
    assert folder_facts(trained)["evaluation"]["split"] == "test"
    code = re.search(r"```python\n(.*?)```", body, re.S).group(1).strip().splitlines()
    monkeypatch.chdir(trained.parent)  # the example names the folder; it runs beside it
    namespace = {}
    exec("\n".join(code[:-1]), namespace)
    scores = eval(code[-1].split("  #")[0], namespace)[0]
    expected = Predictor(str(trained), precision="fp32").predict(["这游戏太好玩了"])[0]
    best = max(scores, key=lambda s: s["score"])
    assert best["label"] == expected["label"] and best["score"] == pytest.approx(expected["probability"], abs=1e-5)


def test_the_card_describes_every_strategy_from_the_parsed_strategy():
    """The card's words come from the strategy itself (Strategy.describe), so every strategy has them, with its
    own numbers, and a combination describes each part once."""
    from freezetune.modelcard import describe_strategy
    from freezetune.strategies import REGISTRY

    for name in REGISTRY:
        spec = {"freeze": "freeze3", "top": "top3"}.get(name, name)
        assert describe_strategy(spec) and "see freezetune" not in describe_strategy(spec), spec
    assert "only the top 2 encoder layers" in describe_strategy("top2")
    assert "encoder layers 0..3 frozen (embeddings frozen too)" in describe_strategy("freeze4+emb")
    assert "the embeddings frozen" not in describe_strategy("freeze4+emb")  # said once, by freeze4
    lora = describe_strategy("freeze4+lora")
    assert "low-rank adapters" in lora and "the layers above and the head trained" not in lora
    assert describe_strategy("no-such-strategy") == "see freezetune's documentation"
