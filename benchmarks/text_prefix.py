"""Does e5's `query: ` prefix help fine-tuning? Plain titles against prefixed ones, same seeds, same code.

    python benchmarks/text_prefix.py [--strategy full] [--seeds 0,1,2] [--prefix "query: "]

multilingual-e5 was pretrained with `query: ` / `passage: ` prefixes; OFFLINE.md leaves open whether one
helps fine-tuning. Both arms train from CSV copies of the cleaned builtin:inews splits, so they share the label
order and, per seed, the head's initialisation and the batch order. The prefixed arm's max length is longer by
the prefix's tokens, so both arms read the same text. Every run fits the macro-F1 decision rule on validation
and also records argmax (one training, both rules). Runs go to runs/text-prefix/ (a finished run is kept when
the script runs again); the summary to benchmarks/results/text-prefix/. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from machine import describe_machine

from freezetune import load_splits
from freezetune.config import TrainConfig
from freezetune.data import LABEL, TEXT
from freezetune.models import load_tokenizer
from freezetune.training import train

ROOT = Path(__file__).resolve().parent.parent
MODEL, DATA, MAX_LENGTH = "builtin:multilingual-e5-small", "builtin:inews", 30
MINORITY = "positive"


def write_data(folder: Path, prefix: str) -> None:
    """The cleaned splits as train/validation/test CSVs, each text with `prefix` in front."""
    splits = load_splits(DATA)
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("train", splits.train), ("validation", splits.validation), ("test", splits.test)):
        rows = frame.assign(sentence=prefix + frame[TEXT], label=[splits.label_names[i] for i in frame[LABEL]])
        rows[["sentence", "label"]].to_csv(folder / f"{name}.csv", index=False)


def prefix_tokens(prefix: str) -> int:
    """How many tokens the prefix adds to a title (3 for `query: ` with the e5 tokenizer)."""
    tokenizer = load_tokenizer(MODEL)
    title = "今天天气很好"
    return len(tokenizer(prefix + title)["input_ids"]) - len(tokenizer(title)["input_ids"])


def scores(metrics: dict) -> dict:
    """Test accuracy and macro-F1 under both decision rules, and the minority class's F1 under the served one."""
    argmax = metrics["details"]["decision"]["alternatives"]["argmax"]
    return {"accuracy": metrics["evaluation"]["accuracy"], "macro_f1": metrics["evaluation"]["macro_f1"],
            f"{MINORITY}_f1": metrics["evaluation"]["per_class"][MINORITY]["f1"],
            "argmax_accuracy": argmax["accuracy"], "argmax_macro_f1": argmax["macro_f1"],
            "train_seconds": metrics["train_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="full")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--prefix", default="query: ")
    parser.add_argument("--work", default=str(ROOT / "runs" / "text-prefix"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "text-prefix"))
    args = parser.parse_args()
    work, seeds = Path(args.work), [int(s) for s in args.seeds.split(",")]
    arms = {"plain": ("", MAX_LENGTH), "prefixed": (args.prefix, MAX_LENGTH + prefix_tokens(args.prefix))}
    started, rows = time.perf_counter(), []
    for arm, (prefix, max_length) in arms.items():
        data = work / "data" / arm
        if not (data / "test.csv").is_file():
            write_data(data, prefix)
        for seed in seeds:
            out = work / f"{args.strategy}-{arm}-seed{seed}"
            if not (out / "metrics.json").is_file():
                train(TrainConfig(model=MODEL, data=str(data), strategy=args.strategy, seed=seed, max_length=max_length,
                                  decision="macro_f1", output_dir=str(out)))
            metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            rows.append({"arm": arm, "seed": seed, "max_length": max_length, **scores(metrics)})
    write_summary(Path(args.results), rows, args, (time.perf_counter() - started) / 60)


def write_summary(results: Path, rows: list[dict], args, minutes: float) -> None:
    columns = ["accuracy", "macro_f1", f"{MINORITY}_f1", "argmax_accuracy", "argmax_macro_f1", "train_seconds"]
    lines = [f"# `{args.prefix}` prefix vs plain titles ({args.strategy}, builtin model, builtin:inews test split)", "",
             "Served rule: macro-F1 offsets fitted on validation; argmax columns: the same runs without them.", "",
             "| arm | seed | max length | " + " | ".join(columns) + " |", "|---|---|---|" + "---:|" * len(columns)]
    lines += [f"| {r['arm']} | {r['seed']} | {r['max_length']} | " + " | ".join(f"{r[c]:.4f}" if c != "train_seconds"
              else f"{r[c]:.0f}" for c in columns) + " |" for r in rows]
    lines += ["", "| arm | " + " | ".join(f"{c} (mean ± std)" for c in columns[:-1]) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        values = {c: np.array([r[c] for r in rows if r["arm"] == arm]) for c in columns}
        lines.append(f"| {arm} | " + " | ".join(f"{values[c].mean():.4f} ± {values[c].std(ddof=1) if len(values[c]) > 1 else 0:.4f}"
                                                 for c in columns[:-1]) + " |")
    command = "python " + " ".join(["benchmarks/text_prefix.py", *sys.argv[1:]])
    lines += ["", f"Command: `{command}` ({minutes:.1f} minutes; finished runs kept from earlier invocations are not "
              "re-timed).", "", f"Machine: {describe_machine()}"]
    results.mkdir(parents=True, exist_ok=True)
    (results / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (results / "summary.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
