"""Paired significance between two studies: the same runs (strategy@recipe, seed) in each, on the same test titles.

A study's report compares its strategies with each other; an A/B of a training option (`--ema`, `--distill-from`)
is two studies run with the same seeds. This scores the second against the first with the report's own tests:
the paired bootstrap of the seed-mean accuracy and macro-F1, and the exact McNemar test per seed.

    python benchmarks/paired_studies.py runs/cpu-balanced-ema runs/cpu-balanced-ema-distill
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from freezetune.compare.stats import mcnemar_exact, paired_bootstrap
from freezetune.compare.study import SPLIT_SEED
from freezetune.data import LABEL, load_splits


def run_predictions(study: Path) -> dict[str, np.ndarray]:
    """{run folder name: its evaluation predictions} for every finished run of a study."""
    return {m.parent.name: np.asarray(json.loads(m.read_text())["evaluation_predictions"])
            for m in sorted((study / "runs").glob("*/metrics.json"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="study folder A (what the difference is measured from)")
    parser.add_argument("other", type=Path, help="study folder B, run with the same data and seeds")
    args = parser.parse_args()
    options = json.loads((args.reference / "compare.json").read_text())
    splits = load_splits(options["data"], options["text_column"], options["label_column"], SPLIT_SEED,
                         options["validation_fraction"])
    split, frame = splits.evaluation_split
    labels = frame[LABEL].to_numpy()
    reference, other = run_predictions(args.reference), run_predictions(args.other)
    common = sorted(set(reference) & set(other))
    if not common:
        raise SystemExit(f"no run of {args.reference} is also in {args.other}")
    a, b = np.stack([reference[r] for r in common]), np.stack([other[r] for r in common])  # (runs, rows)
    print(f"{args.other.name} against {args.reference.name} on {split} ({len(labels)} rows), runs: {', '.join(common)}")
    for metric in ("macro_f1", "accuracy"):
        delta, p = paired_bootstrap(labels, a, b, metric)
        print(f"{metric}: {delta * 100:+.2f} points of the seed mean, paired bootstrap p = {p:.3f}")
    print("McNemar per run: " + ", ".join(f"{r} p = {mcnemar_exact(a[i] == labels, b[i] == labels):.3f}"
                                         for i, r in enumerate(common)))


if __name__ == "__main__":
    main()
