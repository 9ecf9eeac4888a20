"""The study's PNG figures. Each function writes one file.

Drawn through matplotlib's object API (`Figure`, which saves a PNG with the Agg renderer): no pyplot, no display
needed, and the program's backend and settings are left as they are (a notebook keeps its inline plots).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

# Families that can draw Chinese labels; matplotlib's bundled DejaVu cannot.
CJK_FAMILIES = (
    "Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "AR PL UMing CN",
)


def label_texts(label_names: list[str]) -> tuple[list[str], bool]:
    """Tick labels for class names: the names if a font can draw them, else their ids (returns names_drawn)."""
    if all(name.isascii() for name in label_names) or cjk_family() is not None:
        return list(label_names), True
    return [str(i) for i in range(len(label_names))], False


def cjk_family() -> str | None:
    """An installed font family that draws Chinese, or None."""
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((f for f in CJK_FAMILIES if f in installed), None)


def plain_text(text: str) -> str:
    """`text` drawn as written: matplotlib reads `$...$` as math (and fails on a lone `$`), so `$` is escaped."""
    return text.replace("$", r"\$")


def _save(fig, path: Path) -> Path:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def learning_curves(epochs: pd.DataFrame, path: Path) -> Path:
    """Per strategy, the mean over seeds of each curve by epoch, with a +-1 std band."""
    panels = [("train_loss", "training loss"), ("validation_loss", "validation loss"),
              ("validation_accuracy", "validation accuracy"), ("validation_macro_f1", "validation macro-F1")]
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    # One colour per strategy in every panel, even where a strategy has no curve (tfidf: no training loss).
    colours = {s: f"C{i % 10}" for i, s in enumerate(epochs["strategy"].unique())}
    for ax, (column, title) in zip(axes.flat, panels):
        for strategy, group in epochs.groupby("strategy", sort=False):
            stats = group.groupby("epoch")[column].agg(["mean", "std"]).dropna(subset=["mean"])
            std = stats["std"].fillna(0)
            ax.plot(stats.index, stats["mean"], marker="o", color=colours[strategy])
            ax.fill_between(stats.index, stats["mean"] - std, stats["mean"] + std, color=colours[strategy], alpha=0.2)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles = [Line2D([], [], color=c, marker="o") for c in colours.values()]
    fig.legend(handles, list(colours), loc="outside lower center", ncols=min(len(colours), 6), fontsize=9)
    return _save(fig, path)


def frozen_layers(runs: pd.DataFrame, depth: int | dict[str, int], path: Path) -> Path:
    """Evaluation accuracy and macro-F1 (mean +- std over seeds) against encoder layers frozen.

    `runs` has one row per transformer run with `frozen_layers` (None = head, drawn at `depth`) and
    `freeze_embeddings`; the two embedding settings are separate series. With several models `runs` has a
    `model` column and `depth` is each model's ({model: depth}): a series per model and embedding setting.
    """
    several = isinstance(depth, dict)
    runs = runs.assign(x=runs["frozen_layers"].fillna(runs["model"].map(depth) if several else depth).astype(int))
    series_keys = ["model", "freeze_embeddings"] if several else ["freeze_embeddings"]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharex=True)
    for ax, (column, title) in zip(axes, [("evaluation_accuracy", "accuracy"), ("evaluation_macro_f1", "macro-F1")]):
        for (*model, frozen_emb), series in runs.groupby(series_keys):
            stats = series.groupby(["x", "strategy"])[column].agg(["mean", "std"]).reset_index().sort_values("x")
            label = "embeddings frozen" if frozen_emb else "embeddings trainable"
            ax.errorbar(stats["x"], stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=4,
                        label=f"{plain_text(model[0])}: {label}" if model else label)
            # The x axis already names each freezeN point; only `head` (drawn at all layers) gets a label.
            for _, row in stats[stats["strategy"] == "head"].iterrows():
                ax.annotate("head", (row["x"], row["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_title(f"{title} vs frozen layers (head = all {'of each model' if several else depth})")
        ax.set_xlabel("encoder layers frozen")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def f1_vs_params(summary: pd.DataFrame, path: Path) -> Path:
    """Macro-F1 (mean +- std) against trainable parameters, log scale: what each parameter buys."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    # Neighbouring points are labelled on alternating sides so that their names do not overlap.
    offsets = [(5, 5), (5, -12), (-5, 5), (-5, -12)]
    ordered = summary.sort_values("trainable_params").reset_index(drop=True)
    for i, row in ordered.iterrows():
        ax.errorbar(row["trainable_params"], row["macro_f1_mean"], yerr=row["macro_f1_std"], marker="o", capsize=4)
        dx, dy = offsets[i % len(offsets)]
        ax.annotate(row["strategy"], (row["trainable_params"], row["macro_f1_mean"]), textcoords="offset points",
                    xytext=(dx, dy), fontsize=8, ha="left" if dx > 0 else "right")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("evaluation macro-F1")
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def confusion_matrix(matrix, label_names: list[str], title: str, path: Path) -> Path:
    """Row-normalised colours (recall per true class) with the raw counts written in each cell."""
    matrix = np.asarray(matrix)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ticks = [plain_text(tick) for tick in label_texts(label_names)[0]]  # class names come from the data
    family = None if all(name.isascii() for name in label_names) else cjk_family()
    # The Chinese font for this figure only (its texts are laid out and drawn inside the block).
    with matplotlib.rc_context({"font.sans-serif": [family, *matplotlib.rcParams["font.sans-serif"]]} if family else {}):
        return _confusion_figure(matrix, normalised, ticks, title, path)


def _confusion_figure(matrix, normalised, ticks: list[str], title: str, path: Path) -> Path:
    size = 2.5 + 0.6 * len(ticks)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of true class")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(ticks)), ticks, rotation=45 if len(ticks) > 6 else 0)
    ax.set_yticks(range(len(ticks)), ticks)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(plain_text(title))
    return _save(fig, path)
