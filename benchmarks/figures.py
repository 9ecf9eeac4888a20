"""The pictures in docs/, drawn from the checked-in study results (no training).

    python benchmarks/figures.py            # writes docs/images/*.png

Each study folder under benchmarks/results/ holds the `results.csv` that `freezetune compare` wrote: one row
per run and epoch, the test metrics repeated on every row of a run, `best_epoch` marking the epoch it kept.
A point is the mean over seeds; the bars span one standard deviation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
METRICS = {"evaluation_accuracy": "test accuracy", "evaluation_macro_f1": "test macro-F1"}
SOURCE = "builtin:multilingual-e5-small (4-bit, not bert-base-chinese) on builtin:inews, 3 seeds, 2-core CPU"


def per_strategy(study: str) -> pd.DataFrame:
    """Mean and std over seeds of each strategy's kept epoch: test metrics, trainable parameters, seconds."""
    frame = pd.read_csv(RESULTS / study / "results.csv")
    kept = frame[frame["best_epoch"].astype(str) == "True"]
    columns = [*METRICS, "trainable_params", "train_seconds", "frozen_layers"]
    return kept.groupby("strategy")[columns].agg(["mean", "std"])


def frozen_layers_curve(out: Path) -> None:
    """Test accuracy and macro-F1 against the number of frozen bottom layers (the `sweep` study)."""
    table = per_strategy("sweep").sort_values(("frozen_layers", "mean"))
    layers = table[("frozen_layers", "mean")]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for metric, label in METRICS.items():
        ax.errorbar(layers, table[(metric, "mean")], yerr=table[(metric, "std")], marker="o", capsize=3, label=label)
    ax.set(xlabel="bottom encoder layers frozen (embeddings train)", ylabel="score", xticks=layers)
    ax.set_title("Freezing the lower layers", fontsize=11)
    _finish(fig, ax, out / "frozen_layers.png")


def strategies_against(axis: str, xlabel: str, out: Path) -> None:
    """Test accuracy and macro-F1 of every strategy and baseline against `axis` (one panel per metric)."""
    table = pd.concat([per_strategy("strategies"), per_strategy("lora").drop(index="full", errors="ignore")])
    fig, panels = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, (metric, label) in zip(panels, METRICS.items()):
        x, y = table[(axis, "mean")], table[(metric, "mean")]
        ax.errorbar(x, y, yerr=table[(metric, "std")], fmt="o", capsize=3)
        for name in table.index:
            ax.annotate(name, (x[name], y[name]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set(xscale="log", xlabel=xlabel, ylabel=label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Every strategy and baseline against {xlabel}", fontsize=11)
    _finish(fig, None, out / f"strategies_vs_{axis}.png")


def _finish(fig, ax, path: Path) -> None:
    if ax is not None:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.text(0.01, 0.005, SOURCE, fontsize=7, color="0.4")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    frozen_layers_curve(out)
    strategies_against("trainable_params", "trainable parameters", out)
    strategies_against("train_seconds", "training seconds (3 epochs)", out)


if __name__ == "__main__":
    main()
