"""Imbalanced data in the study: both decision rules from one training, seed ensembles, class counts, per-class and
calibration tables, and the trade-off sentence. Numbers are checked against independent computations."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from freezetune.compare import CompareOptions, compare
from freezetune.compare.report import tradeoff_sentence
from freezetune.compare.tables import best_tradeoff
from freezetune.metrics import classification_report

STRATEGIES = ["full", "tfidf", "lstm"]
SEEDS = [0, 1]


# The module's tests share module fixtures that take seconds: one worker runs them all, so they are built once.
pytestmark = pytest.mark.xdist_group("compare_imbalance")


@pytest.fixture(scope="module")
def study(tiny_bert, tiny_csv_dir, tmp_path_factory):
    """A 3-strategy x 2-seed study trained with --decision macro_f1 (the served rule is not argmax)."""
    options = CompareOptions(
        output_dir=str(tmp_path_factory.mktemp("imbalance") / "out"), model=str(tiny_bert), data=str(tiny_csv_dir),
        strategies=STRATEGIES, seeds=SEEDS, epochs=3, batch_size=8, max_length=16, lr=5e-3,
        decision="macro_f1", precision="fp32",  # a learning rate the tiny random BERT learns something at
    )
    return compare(options)


def _metrics(out, strategy, seed) -> dict:
    return json.loads((out / "runs" / f"{strategy}-seed{seed}" / "metrics.json").read_text(encoding="utf-8"))


def _test_labels(tiny_csv_dir, label_names) -> np.ndarray:
    return pd.read_csv(tiny_csv_dir / "test.csv")["label"].map(label_names.index).to_numpy()


def test_every_run_records_its_evaluation_probabilities(study, tiny_csv_dir):
    for strategy in STRATEGIES:
        for seed in SEEDS:
            metrics = _metrics(study, strategy, seed)
            probabilities = np.asarray(metrics["evaluation_probabilities"])
            assert probabilities.shape == (len(_test_labels(tiny_csv_dir, metrics["label_names"])), 3)
            assert np.allclose(probabilities.sum(axis=1), 1, atol=5e-4)  # 3 classes rounded to 4 decimals
            # They are what the run predicts with: the argmax is its prediction, up to a tie made by rounding.
            top = probabilities.argmax(axis=1)
            predictions = np.asarray(metrics["evaluation_predictions"])
            rows = np.arange(len(top))
            assert np.all((top == predictions) | (probabilities[rows, top] == probabilities[rows, predictions]))


def test_seed_ensemble_equals_averaging_the_recorded_probabilities(study, tiny_csv_dir):
    report = (study / "report.md").read_text(encoding="utf-8")
    for strategy in STRATEGIES:
        runs = [_metrics(study, strategy, seed) for seed in SEEDS]
        labels = _test_labels(tiny_csv_dir, runs[0]["label_names"])
        mean = np.mean([np.asarray(m["evaluation_probabilities"]) for m in runs], axis=0)
        accuracy = accuracy_score(labels, mean.argmax(axis=1))
        macro_f1 = f1_score(labels, mean.argmax(axis=1), average="macro")
        row = next(line for line in report.splitlines() if line.startswith(f"| {strategy} | 2 |"))
        assert f"| {accuracy:.4f} | {macro_f1:.4f} |" in row


def test_both_decision_rules_come_from_one_training(study, tiny_csv_dir):
    """argmax's report is recomputed from each saved model: its logits minus the folded offsets are the
    temperature-scaled logits, whose argmax is the argmax rule."""
    from freezetune.inference.predict import Predictor

    texts = pd.read_csv(tiny_csv_dir / "test.csv")["sentence"].tolist()
    rules_differ = []
    for seed in SEEDS:
        metrics = _metrics(study, "full", seed)
        decision = metrics["details"]["decision"]
        assert decision["rule"] == "macro_f1"
        assert set(decision["alternatives"]) == {"argmax", "macro_f1"}
        assert decision["alternatives"]["macro_f1"] == metrics["evaluation"]  # the served rule: the run's own report
        logits = Predictor(str(study / "runs" / f"full-seed{seed}"), precision="fp32").logits(texts)
        scaled = logits - np.asarray(decision["logit_offsets"])
        labels = _test_labels(tiny_csv_dir, metrics["label_names"])
        assert decision["alternatives"]["argmax"] == classification_report(labels, scaled.argmax(axis=1), metrics["label_names"])
        rules_differ.append(decision["alternatives"]["argmax"] != metrics["evaluation"])
    assert any(rules_differ), "the rules agree on every run: this test would not tell them apart"
    # Baselines have one rule (argmax), so the decision table lists the transformer strategy only.
    report = (study / "report.md").read_text(encoding="utf-8")
    assert "| full | argmax |" in report and "| full | macro_f1 * |" in report and "| tfidf | argmax" not in report


def test_report_has_the_imbalance_sections(study, tiny_csv_dir):
    report = (study / "report.md").read_text(encoding="utf-8")
    html = (study / "report.html").read_text(encoding="utf-8")
    for heading in ("Classes (examples per split)", "Decision rule on the test split",
                    "Per-class precision, recall and F1 on the test split", "Calibration on the test split",
                    "Best trade-off: "):
        assert heading in report and heading in html
    # Class counts: the test split's, from the CSV.
    test = pd.read_csv(tiny_csv_dir / "test.csv")["label"].value_counts()
    for name, count in test.items():
        assert any(line.startswith(f"| {name} | ") and line.endswith(f" {count} ({count / test.sum():.1%}) |")
                   for line in report.splitlines())
    # Calibration: full's mean ECE before scaling over its seeds.
    ece = np.mean([_metrics(study, "full", s)["details"]["calibration"]["test"]["before"]["ece"] for s in SEEDS])
    assert any(line.startswith("| full | 2 |") and f"| {ece:.4f} |" in line for line in report.splitlines())
    # Per-class rows: every strategy x class, with the class's test support.
    for strategy in STRATEGIES:
        for name, count in test.items():
            assert f"| {strategy} | {name} | {count} |" in report


def _recipes(rows) -> pd.DataFrame:
    return pd.DataFrame([{"strategy": s, "decision": d, "served": d == "argmax", "seeds": 3, "accuracy_mean": a,
                          "accuracy_std": 0.0, "macro_f1_mean": f, "macro_f1_std": 0.0} for s, d, a, f in rows])


def test_tradeoff_picks_the_best_macro_f1_within_one_accuracy_point():
    recipes = _recipes([
        ("full", "argmax", 0.900, 0.700),
        ("full", "macro_f1", 0.8905, 0.760),   # 0.95 points below the best: in, and the best macro-F1 in
        ("freeze6", "argmax", 0.895, 0.720),
        ("full", "macro_f1", 0.880, 0.800),    # the best macro-F1 overall, but 2 points less accurate: out
        ("tfidf", "argmax", 0.890, 0.750),     # exactly 1 point below: in
    ])
    most_accurate, chosen = best_tradeoff(recipes)
    assert (most_accurate["strategy"], most_accurate["decision"]) == ("full", "argmax")
    assert (chosen["strategy"], chosen["decision"]) == ("full", "macro_f1")
    sentence = tradeoff_sentence(recipes, "test")
    assert sentence.startswith("Best trade-off: full with the macro_f1 decision rule has the best mean test macro-F1 (0.7600")
    assert "(0.9000, full with the argmax decision rule)" in sentence
    # Exactly one point below counts as within it.
    recipes.loc[4, "macro_f1_mean"] = 0.79
    assert best_tradeoff(recipes)[1]["strategy"] == "tfidf"


def test_tradeoff_when_the_most_accurate_recipe_also_has_the_best_macro_f1():
    recipes = _recipes([("full", "argmax", 0.90, 0.80), ("full", "argmax", 0.70, 0.90)])
    assert tradeoff_sentence(recipes, "test").startswith(
        "Best trade-off: full with the argmax decision rule has both the best mean test accuracy (0.9000)")


# --------------------------------------------------------------------------- recipes: strategy x imbalance recipe


def test_recipes_cross_each_transformer_strategy_and_set_its_runs_loss(tiny_bert, tiny_csv_dir, tmp_path):
    options = CompareOptions(
        output_dir=str(tmp_path / "out"), model=str(tiny_bert), data=str(tiny_csv_dir), strategies=["head", "tfidf"],
        recipes=["ce", "focal:gamma=2+balanced", "focal", "ce+rdrop=1"], seeds=[0], epochs=1, batch_size=8,
        max_length=16, precision="fp32", class_weights="balanced",  # a recipe, not the study's flags, sets its runs' weighting
        rdrop=0.5,  # ... but R-Drop only where it says so
    )
    out = compare(options)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    # focal:gamma=2 is focal's default: one recipe, named canonically; the baseline runs once, unaffected
    assert runs == ["head@ce+rdrop=1-seed0", "head@ce-seed0", "head@focal+balanced-seed0", "head@focal-seed0", "tfidf-seed0"]
    for name, loss, weighted, rdrop in (("head@ce", "ce", False, 0.5), ("head@focal", "focal", False, 0.5),
                                        ("head@focal+balanced", "focal", True, 0.5), ("head@ce+rdrop=1", "ce", False, 1.0)):
        metrics = _metrics(out, name, 0)
        assert metrics["details"]["loss"] == loss
        assert (metrics["class_weights"] is not None) == weighted
        assert json.loads((out / "runs" / f"{name}-seed0" / "run_config.json").read_text())["rdrop"] == rdrop
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "| head@focal+balanced |" in report and "recipes ce, focal:gamma=2+balanced, focal, ce+rdrop=1" in report
    assert "R-Drop alpha 0.5 where a recipe does not set it" in report


@pytest.mark.parametrize("recipe", ["hinge", "ce+weighted", "focal:gamma=-1", "ce+rdrop=-1", "ce+rdrop",
                                    "ce+balanced+balanced", "ce+rdrop=1+rdrop=2"])
def test_bad_recipes_fail_before_any_run(recipe, tmp_path):
    from freezetune.errors import UserError

    with pytest.raises(UserError, match="recipe|loss"):
        CompareOptions(output_dir=str(tmp_path / "out"), recipes=["ce", recipe])
    assert not (tmp_path / "out").exists()
