"""Merge the one-seed studies of benchmarks/gpu_recipes.sh and summarise the imbalance levers.

    python benchmarks/gpu_recipes_report.py RESULTS_DIR

For each study NAME, the runs of RESULTS_DIR/per-seed/NAME-seedS/ are gathered into RESULTS_DIR/NAME/, and
`freezetune compare --resume` writes its report there (every run is finished, so nothing trains). Then
RESULTS_DIR/summary.md (and .json) puts the studies side by side: the validation macro-F1 that chooses among
them (never the test split), and on test the accuracy, macro-F1, the rarest class's F1 and the ECE before
and after temperature scaling, each a mean ± std over seeds, and the mean over disjoint 3-seed ensembles
(the seeds' served probabilities averaged, what `freezetune predict --model A --model B --model C` gives).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np

from freezetune.compare import CompareOptions, compare

OPTIONS_FILE, METRICS_FILE = "compare.json", "metrics.json"
TARGETS = {"macro_f1": 0.75, "accuracy": 0.79, "rare_f1": 0.58}  # the project's targets (the rare class: inews' positive)


def merge(results: Path) -> dict[str, list[Path]]:
    """RESULTS_DIR/NAME/runs/ from the finished per-seed studies; returns each study's finished run folders."""
    studies: dict[str, list[Path]] = {}
    for seed_dir in sorted((results / "per-seed").iterdir()):
        match = re.fullmatch(r"(.+)-seed(\d+)", seed_dir.name)
        if not match or not seed_dir.is_dir():
            continue
        for run in (seed_dir / "runs").glob("*"):
            if (run / METRICS_FILE).is_file():
                target = results / match[1] / "runs" / run.name
                if target.exists() and (target / METRICS_FILE).stat().st_mtime < (run / METRICS_FILE).stat().st_mtime:
                    shutil.rmtree(target)  # the run was done again since it was copied
                if not target.exists():
                    shutil.copytree(run, target)
                studies.setdefault(match[1], []).append(target)
    return studies


def write_study_report(results: Path, name: str, runs: list[Path]) -> None:
    """The study's report over its finished seeds, by `compare --resume`: no run is left to train, as long as each
    seed's study finished every one of its strategy x recipe runs (the studies here have one each)."""
    template = next((results / "per-seed").glob(f"{name}-seed*/{OPTIONS_FILE}"))
    options = json.loads(template.read_text(encoding="utf-8"))
    seeds = sorted({_seed(run) for run in runs})
    options.update(output_dir=str(results / name), seeds=[str(s) for s in seeds], resume=True, overwrite=False)
    study = results / name / OPTIONS_FILE
    if not study.is_file():
        study.write_text(json.dumps({**options, "resume": False}, indent=2), encoding="utf-8")
    fields = {f.name for f in dataclasses.fields(CompareOptions)}
    compare(CompareOptions(**{k: v for k, v in options.items() if k in fields}))


def summarise(name: str, runs: list[Path], labels: np.ndarray) -> dict:
    """One study's row; `labels`: the evaluation split's label ids. `rare`: its rarest class (inews: positive)."""
    runs = sorted(runs, key=_seed)
    metrics = [json.loads((run / METRICS_FILE).read_text(encoding="utf-8")) for run in runs]
    seeds = [_seed(run) for run in runs]
    rare_id = int(np.argmin(np.bincount(labels)))
    rare = metrics[0]["label_names"][rare_id]

    def stat(values) -> tuple[float, float]:
        return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0

    calibration = [m["details"]["calibration"][m["evaluation_split"]] for m in metrics]
    row = {
        "study": name, "seeds": seeds,
        "validation_macro_f1": stat([m["validation"]["macro_f1"] for m in metrics]),
        "accuracy": stat([m["evaluation"]["accuracy"] for m in metrics]),
        "macro_f1": stat([m["evaluation"]["macro_f1"] for m in metrics]),
        "rare_class": rare,
        "rare_f1": stat([m["evaluation"]["per_class"][rare]["f1"] for m in metrics]),
        "argmax_macro_f1": stat([m["details"]["decision"]["alternatives"]["argmax"]["macro_f1"] for m in metrics]),
        "ece_before": stat([c["before"]["ece"] for c in calibration]),
        "ece_after": stat([c["after_temperature"]["ece"] for c in calibration]),
        "ece_lowered": sum(c["after_temperature"]["ece"] < c["before"]["ece"] for c in calibration),
        "train_seconds": stat([m["train_seconds"] for m in metrics]),
        "precision": sorted({m["precision"] for m in metrics}),
    }
    # Disjoint ensembles of 3 seeds (0-2, 3-5, ...), only the complete ones: the mean over them, like the per-seed mean.
    groups: dict[int, list[dict]] = {}
    for seed, m in zip(seeds, metrics):
        groups.setdefault(seed // 3, []).append(m)
    ensembles = []
    for members in (g for g in groups.values() if len(g) == 3):
        probabilities = np.mean([np.asarray(m["evaluation_probabilities"]) for m in members], axis=0)
        ensembles.append(_scores(labels, probabilities.argmax(axis=1), rare_id))
    if ensembles:
        row["ensembles"] = len(ensembles)
        for key in ("accuracy", "macro_f1", "rare_f1"):
            row[f"ensemble_{key}"] = stat([e[key] for e in ensembles])
    return row


def _seed(run: Path) -> int:
    return int(re.search(r"-seed(\d+)$", run.name)[1])


def evaluation_labels(results: Path) -> np.ndarray:
    """The label ids of the studies' evaluation split, loaded as compare loads it."""
    from freezetune.compare.study import SPLIT_SEED
    from freezetune.data import load_splits

    o = json.loads(next((results / "per-seed").glob(f"*/{OPTIONS_FILE}")).read_text(encoding="utf-8"))
    splits = load_splits(o["data"], o["text_column"], o["label_column"], SPLIT_SEED, o["validation_fraction"])
    return np.asarray(splits.evaluation_split[1]["label"])


def _scores(labels: np.ndarray, predictions: np.ndarray, rare: int) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": accuracy_score(labels, predictions), "macro_f1": f1_score(labels, predictions, average="macro"),
            "rare_f1": f1_score(labels == rare, predictions == rare)}


def _pm(value: tuple[float, float]) -> str:
    return f"{value[0]:.4f} ± {value[1]:.4f}"


def write_summary(results: Path, rows: list[dict]) -> None:
    rows = sorted(rows, key=lambda r: -r["validation_macro_f1"][0])
    rare = rows[0]["rare_class"]
    header = ["study", "seeds", "validation macro-F1", "test accuracy", "test macro-F1", f"{rare} F1",
              "argmax macro-F1", f"3-seed ensembles: accuracy / macro-F1 / {rare} F1", "test ECE before → after T",
              "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ensemble = (f"{r['ensemble_accuracy'][0]:.4f} / {r['ensemble_macro_f1'][0]:.4f} / {r['ensemble_rare_f1'][0]:.4f}"
                    f" (mean of {r['ensembles']})") if "ensembles" in r else "—"
        lines.append("| " + " | ".join([
            r["study"], ",".join(map(str, r["seeds"])), _pm(r["validation_macro_f1"]), _pm(r["accuracy"]),
            _pm(r["macro_f1"]), _pm(r["rare_f1"]), _pm(r["argmax_macro_f1"]), ensemble,
            f"{r['ece_before'][0]:.4f} → {r['ece_after'][0]:.4f} (lower in {r['ece_lowered']}/{len(r['seeds'])})",
            f"{r['train_seconds'][0]:.0f}"]) + " |")
    chosen = rows[0]
    meets = {key: chosen[key][0] >= target for key, target in TARGETS.items()}
    text = [
        "# The imbalance levers on a GPU: full fine-tuning of the builtin model on builtin:inews",
        "",
        "Command: `bash benchmarks/gpu_recipes.sh RESULTS_DIR` (studies in `benchmarks/gpu_recipes.txt`), then "
        "`python benchmarks/gpu_recipes_report.py RESULTS_DIR`. Each study's own report is in its folder.",
        "",
        "Every study: served decision rule macro_f1 (offsets fitted on validation), temperature calibration, best "
        "epoch by validation macro-F1 unless the name says `acc`. Sorted by validation macro-F1, which is what "
        "chooses a recipe; the test columns are for reading, not for choosing.",
        "",
        *lines,
        "",
        f"Chosen on validation: **{chosen['study']}**: test accuracy {chosen['accuracy'][0]:.4f}, macro-F1 "
        f"{chosen['macro_f1'][0]:.4f}, {rare} F1 {chosen['rare_f1'][0]:.4f} (the targets: macro-F1 >= "
        f"{TARGETS['macro_f1']} at accuracy >= {TARGETS['accuracy']}, {rare} F1 >= {TARGETS['rare_f1']}; "
        + ", ".join(f"{k} {'met' if ok else 'not met'}" for k, ok in meets.items()) + ").",
    ]
    (results / "summary.md").write_text("\n".join(text) + "\n", encoding="utf-8")
    (results / "summary.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--no-reports", action="store_true", help="only the summary, not each study's report")
    args = parser.parse_args()
    studies = merge(args.results)
    labels = evaluation_labels(args.results)
    rows = []
    for name, runs in sorted(studies.items()):
        if not args.no_reports:
            write_study_report(args.results, name, runs)
        rows.append(summarise(name, runs, labels))
    write_summary(args.results, rows)
    print((args.results / "summary.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
