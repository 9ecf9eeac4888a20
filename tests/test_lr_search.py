"""The one learning-rate search: its rule and records, `train --lr auto` and `compare --lr-grid` sharing it, and
no import circle between training/run.py and training/lr_search.py."""

import ast
import json
from pathlib import Path

import pytest

from freezetune.compare import CompareOptions, compare
from freezetune.training import lr_search, train
from freezetune.training.lr_search import Search, Trial, search

from .conftest import tiny_config

TRAINING = Path(lr_search.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """The modules a file imports anywhere (function-level imports too), relative ones by their last part."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.rsplit(".", 1)[-1] for name in names}


def test_run_never_imports_the_search():
    """lr_search sits above run.py: it imports run, run does not import it (no circle)."""
    assert "run" in imported_modules(TRAINING / "lr_search.py")
    assert "lr_search" not in imported_modules(TRAINING / "run.py")


def trial(lr: float, accuracy: float, seconds: float = 1.0) -> Trial:
    return Trial(lr, {"validation": {"accuracy": accuracy, "macro_f1": 1 - accuracy}, "train_seconds": seconds})


def test_the_best_by_validation_and_ties_to_the_smaller_rate():
    assert Search((trial(1e-4, 0.5), trial(1e-3, 0.7), trial(1e-2, 0.6)), "accuracy").best.lr == 1e-3
    assert Search((trial(1e-3, 0.7), trial(1e-4, 0.7)), "accuracy").best.lr == 1e-4
    assert Search((trial(1e-4, 0.5), trial(1e-3, 0.7)), "macro_f1").best.lr == 1e-4  # ranked by the metric asked


def test_the_records_of_train_and_of_compare():
    result = Search((trial(1e-4, 0.5, 2.0), trial(1e-3, 0.7, 3.0), trial(1e-2, 0.6, 5.0)), "accuracy")
    assert result.record() == [{"lr": 1e-4, "validation_accuracy": 0.5, "train_seconds": 2.0},
                               {"lr": 1e-3, "validation_accuracy": 0.7, "train_seconds": 3.0},
                               {"lr": 1e-2, "validation_accuracy": 0.6, "train_seconds": 5.0}]
    assert result.selection(seed=4) == {"chosen_lr": 1e-3, "seed": 4,
                                        "candidates": {"0.0001": 0.5, "0.001": 0.7, "0.01": 0.6},
                                        "extra_train_seconds": 7.0}  # the two candidates not kept


def test_search_runs_each_candidate_once_in_order():
    asked = []

    def run(lr):
        asked.append(lr)
        return trial(lr, {1e-4: 0.2, 1e-3: 0.9}[lr]).metrics

    assert search([1e-4, 1e-3], "accuracy", run, "head").best.lr == 1e-3
    assert asked == [1e-4, 1e-3]


def test_compare_chooses_as_train_lr_auto_does(tiny_bert, tiny_csv_dir, tmp_path, monkeypatch):
    """compare --lr-grid and train --lr auto rank the same candidate runs the same way (one rule, one record):
    the data has its own validation split, so the study's seed-0 runs are train's candidates."""
    from freezetune.strategies import HeadOnly

    grid = (1e-5, 0.5)
    monkeypatch.setattr(HeadOnly, "lr_grid", grid)
    settings = {"model": str(tiny_bert), "data": str(tiny_csv_dir), "epochs": 2, "batch_size": 4, "max_length": 16}
    out = compare(CompareOptions(output_dir=str(tmp_path / "study"), strategies=["head"], seeds=[0, 1],
                                 lr_grid="auto", **settings))
    selection = json.loads((out / "lr_selection.json").read_text())["head"]
    metrics = train(tiny_config(tiny_bert, tiny_csv_dir, tmp_path / "run", strategy="head", lr="auto", **settings))
    scores = {t["lr"]: t["validation_accuracy"] for t in metrics["lr_search"]}
    assert selection["candidates"] == {f"{lr:g}": scores[lr] for lr in grid}
    assert selection["chosen_lr"] == metrics["lr"] == max(grid, key=lambda lr: (scores[lr], -lr))
    assert len(set(scores.values())) > 1  # the grid matters on this data, so the choice is tested
    seed0 = json.loads((out / "runs" / f"head-lr{selection['chosen_lr']:g}-seed0" / "metrics.json").read_text())
    seed1 = json.loads((out / "runs" / f"head-lr{selection['chosen_lr']:g}-seed1" / "metrics.json").read_text())
    other = json.loads((out / "runs" / f"head-lr{({*grid} - {selection['chosen_lr']}).pop():g}-seed0"
                                      / "metrics.json").read_text())
    assert selection["extra_train_seconds"] == pytest.approx(other["train_seconds"])
    assert seed0["lr"] == seed1["lr"] == selection["chosen_lr"]
