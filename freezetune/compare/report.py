"""The study's report: report.md, a self-contained report.html, results.csv/.json and the PNG plots.

Both documents are rendered from one list of blocks, so the markdown and the HTML never disagree. A study of
several models (`--models`) names each row by model and strategy (a `model` column; `MODEL/STRATEGY` in
sentences and plots) and adds a models-by-strategy table and paired tests between the models.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from freezetune.compare import plots
from freezetune.compare.grid import Run
from freezetune.compare.stats import mcnemar_exact, paired_bootstrap
from freezetune.compare.tables import (
    PER_CLASS,
    TRADEOFF_TOLERANCE,
    best_tradeoff,
    calibration_frame,
    class_counts_frame,
    ensemble_frame,
    keys,
    multi_model,
    per_run,
    recipes_frame,
    results_frame,
    row_key,
    summary_frame,
)
from freezetune.outputs import staged_files
from freezetune.posthoc.calibration import ECE_BINS

ALPHA = 0.05
BUILTIN_NOTE = (
    "Note: {model} is a small builtin model so the study runs offline; its numbers are not those of "
    "bert-base-chinese (run configs/seed-game-chat.yaml for the reference setting)."
)


def write_report(output_dir: Path, options, splits, results: list[tuple[Run, dict]], selection: dict | None = None,
                 models: dict | None = None) -> None:
    """Write every report file into `output_dir`; each file appears whole (written aside, then renamed).

    `models`: a multi-model study's models by their folder under runs/ ({slug: {model, type, layers, depth}}).
    """
    frame = results_frame(results)
    ensembles = ensemble_frame(results, splits.evaluation_split[1]["label"].to_numpy())
    summary = summary_frame(frame, splits.label_names).merge(ensembles, on=keys(frame), how="left")
    with staged_files(output_dir) as staging:  # written aside, then each renamed into place; no leftovers on error
        frame.to_csv(staging / "results.csv", index=False)
        (staging / "results.json").write_text(frame.to_json(orient="records", force_ascii=False, indent=2), encoding="utf-8")
        images = _plot(staging, frame, summary, splits, results, output_dir, options.metric, models or {})
        blocks = _blocks(options, splits, frame, summary, results, images, selection or {}, models or {})
        (staging / "report.md").write_text(to_markdown(blocks), encoding="utf-8")
        (staging / "report.html").write_text(to_html(blocks, staging), encoding="utf-8")


def _plot(folder: Path, frame, summary, splits, results, output_dir: Path, metric: str, models: dict
          ) -> list[tuple[str, str]]:
    """Draw the figures; returns (file name, caption) pairs in report order."""
    images = [(plots.learning_curves(_named(frame), folder / "learning_curves.png").name,
               "Learning curves: mean over seeds, band = +-1 std.")]
    transformer_runs = per_run(frame).dropna(subset=["freeze_embeddings"])
    if not transformer_runs.empty:
        depth = {slug: model["depth"] for slug, model in models.items()} if models else (
            _encoder_depth(results, output_dir) or int(transformer_runs["frozen_layers"].max(skipna=True) or 0) + 1)
        images.append((plots.frozen_layers(transformer_runs, depth, folder / "frozen_layers.png").name,
                       "Evaluation accuracy and macro-F1 against the number of frozen encoder layers (error bars: std over seeds)."))
    images.append((plots.f1_vs_params(_named(summary), folder / "f1_vs_params.png").name,
                   "Evaluation macro-F1 against trainable parameters (log scale)."))
    best = _name(summary.loc[summary[f"{metric}_mean"].idxmax()])
    matrices = [m["evaluation"]["confusion_matrix"] for run, m in results if _label(row_key(run)) == best]
    confusion = plots.confusion_matrix(np.sum(matrices, axis=0), splits.label_names,
                                       f"{best} (best by {metric}), summed over {len(matrices)} seed(s)",
                                       folder / "confusion_matrix.png")
    _, names_drawn = plots.label_texts(splits.label_names)
    key = "" if names_drawn else " Class ids: " + ", ".join(f"{i} = {n}" for i, n in enumerate(splits.label_names)) + "."
    images.append((confusion.name, f"Confusion matrix of the best strategy, {best}, on the "
                   f"{splits.evaluation_split[0]} split (rows true, columns predicted).{key}"))
    return images


def _encoder_depth(results, output_dir: Path) -> int | None:
    """Encoder layers of the model, from the config a transformer run saved (head freezes all of them)."""
    from transformers import AutoConfig

    for run, _ in results:
        if not run.strategy.is_baseline:
            try:
                config = AutoConfig.from_pretrained(run.folder(output_dir))
            except (OSError, ValueError):
                continue
            return getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", None)
    return None


def _recipe_text(options) -> str:
    """The loss, class weights and regularisers of the study's transformer runs, for the report's first paragraph."""
    if options.recipes:
        handling = f"loss and class weights set by each run's recipe (STRATEGY@RECIPE; recipes {', '.join(options.recipes)})"
    else:
        handling = f"loss {options.loss}, class weights {options.class_weights}"
    where = " where a recipe does not set it" if options.recipes else ""
    if options.rdrop:
        handling += f", R-Drop alpha {options.rdrop:g}{where}"
    if options.ema:
        handling += f", weights averaged (EMA {options.ema:g}){where}"
    if options.distill_from:
        handling += (f", distilled from {len(options.distill_from)} model(s) ({', '.join(options.distill_from)}) with "
                     f"weight {options.distill_weight:g}")
    return handling


def _pm(mean: float, std: float, digits: int = 4) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _label(key: tuple) -> str:
    """A row of the study (`tables.row_key`) in a sentence or a plot: `full`, or `MODEL/full` with several models."""
    return "/".join(part for part in key if part is not None)


def _name(row) -> str:
    """`_label` of a frame's row (a baseline's model is empty)."""
    model = row.get("model")
    return row["strategy"] if model is None or pd.isna(model) else f"{model}/{row['strategy']}"


def _named(frame):
    """`frame` with each row's strategy as `_name` says it, for the plots (one series per model and strategy)."""
    if "model" not in frame.columns:
        return frame
    model = frame["model"].fillna("").astype(str)
    return frame.assign(strategy=model.where(model == "", model + "/") + frame["strategy"])


def _key_cells(row, frame) -> list:
    """The first cells of a table row: the row's strategy, after its model in a multi-model study (— for a baseline)."""
    return ["—" if pd.isna(row[k]) else row[k] for k in keys(frame)]


def _blocks(options, splits, frame, summary, results, images, selection: dict, models: dict) -> list[tuple]:
    eval_name, eval_frame = splits.evaluation_split
    labels = eval_frame["label"].to_numpy()
    blocks = [("h1", "freezetune compare: the freezing study"), *_about_blocks(options, splits, results, selection, models)]
    blocks += class_count_blocks(splits)
    if selection:
        blocks += _selection_blocks(selection, options.metric)

    recipes = recipes_frame(results)
    blocks += _summary_blocks(summary, eval_name)
    if models:
        blocks += model_table_blocks(summary, list(models), options.metric, eval_name)
    blocks.append(("p", tradeoff_sentence(recipes, eval_name)))
    blocks += _decision_blocks(recipes, eval_name)
    blocks += per_class_blocks(summary, splits.label_names, labels, eval_name)
    blocks += calibration_blocks(calibration_frame(results), eval_name)
    blocks += _significance_blocks(summary, results, labels, eval_name)
    if models:
        blocks += model_significance_blocks(results, labels, eval_name)

    blocks.append(("h2", "Plots"))
    blocks += [("img", name, caption) for name, caption in images]
    blocks += [("h2", "Per-epoch validation results (* = best epoch)"), ("table", [
        *keys(frame), "seed", "epoch", "training loss", "validation loss", "accuracy", "macro-F1"
    ], [[*_key_cells(r, frame), r["seed"], f"{r['epoch']}{' *' if r['best_epoch'] else ''}", _num(r["train_loss"]),
         _num(r["validation_loss"]), _num(r["validation_accuracy"]), _num(r["validation_macro_f1"])]
        for _, r in frame.iterrows()])]
    return blocks


def _about_blocks(options, splits, results, selection: dict, models: dict) -> list[tuple]:
    """The study's setting in a paragraph (its models, each with its folder, in a multi-model study) and notes."""
    eval_name = splits.evaluation_split[0]
    sizes = f"train {len(splits.train)}, validation {len(splits.validation)}" + (
        f", test {len(splits.test)}" if splits.test is not None else "")
    precision = ", ".join(sorted({m["precision"] for _, m in results if m.get("precision")})) or options.precision
    if models:
        what = f"Models: {', '.join(models)} (below; each model's runs are under runs/NAME/, the baselines ran once)"
        chosen = "chosen per model and strategy on validation (below)"
    else:
        what, chosen = f"Model: {options.model}", "chosen per strategy on validation (below)"
    about = (f"{what}. Data: {options.data} ({sizes}; classes {', '.join(splits.label_names)}). "
             f"Final numbers are on the {eval_name} split with each run's best epoch by validation {options.metric}. "
             f"Transformer runs: {options.epochs} epochs, batch size {options.batch_size}, "
             f"learning rate {chosen if selection else options.lr}, "
             f"max length {options.max_length}, precision {precision}, {_recipe_text(options)}, "
             f"decision rule {options.decision}, calibration {options.calibration}. "
             f"Seeds: {', '.join(map(str, options.seeds))}.")
    names = [model["model"] for model in models.values()] if models else [options.model]
    blocks = [("p", about), *(("p", BUILTIN_NOTE.format(model=name)) for name in names if name.startswith("builtin:")),
              *(("p", f"Data note: {note}") for note in splits.notes)]
    if models:
        blocks += [("h2", "Models"), ("table", ["name", "model", "type", "layers"], [
            [slug, model["model"], model["type"], model["layers"]] for slug, model in models.items()])]
    return blocks


def class_count_blocks(splits) -> list[tuple]:
    """Examples per class in every split, with each class's share: how imbalanced the data is."""
    counts = class_counts_frame(splits)
    shares = counts / counts.sum()
    return [("h2", "Classes (examples per split)"), ("table", ["class", *counts.columns], [
        [name, *(f"{counts.at[name, split]} ({shares.at[name, split]:.1%})" for split in counts.columns)]
        for name in counts.index])]


def _summary_blocks(summary, eval_name: str) -> list[tuple]:
    """Mean ± std over seeds beside the seed ensemble (the seeds' probabilities averaged)."""
    ensemble = lambda r, metric: (  # noqa: E731
        "—" if r["ensemble_members"] < 2 or pd.isna(r[f"ensemble_{metric}"]) else f"{r[f'ensemble_{metric}']:.4f}")
    note = (f"Seed ensemble: the {eval_name} accuracy and macro-F1 of the mean of the seeds' class probabilities, "
            "what keeping every seed's model gives (freezetune predict with several --model); — where a strategy "
            "has one seed, or a run recorded no probabilities.")
    return [("h2", f"Summary on the {eval_name} split (mean ± std over seeds)"), ("table", [
        *keys(summary), "seeds", "accuracy", "macro-F1", "seed ensemble accuracy", "seed ensemble macro-F1",
        "trainable params", "train time (s)", "samples/s", "peak memory (MB)"
    ], [[*_key_cells(r, summary), r["seeds"], _pm(r["accuracy_mean"], r["accuracy_std"]), _pm(r["macro_f1_mean"], r["macro_f1_std"]),
         ensemble(r, "accuracy"), ensemble(r, "macro_f1"),
         f"{r['trainable_params']:,}", _pm(r["train_seconds_mean"], r["train_seconds_std"], 1),
         _pm(r["train_samples_per_second_mean"], r["train_samples_per_second_std"], 1),
         _pm(r["peak_memory_mb_mean"], r["peak_memory_mb_std"], 0)] for _, r in summary.iterrows()]), ("p", note)]


def model_table_blocks(summary, models: list[str], metric: str, eval_name: str) -> list[tuple]:
    """The models side by side: a row per transformer strategy, a column per model (`models`: their folders)."""
    on_models = summary[summary["model"].notna()]
    by_cell = {(r["strategy"], r["model"]): r for _, r in on_models.iterrows()}
    rows = []
    for strategy in dict.fromkeys(on_models["strategy"]):
        present = [by_cell[strategy, model] for model in models if (strategy, model) in by_cell]
        best = max(present, key=lambda r: r[f"{metric}_mean"])["model"]  # ties: the first model
        rows.append([strategy, *(_model_cell(by_cell.get((strategy, model)), model == best) for model in models)])
    note = (f"Each cell: {eval_name} accuracy / macro-F1 (mean over seeds) · trainable parameters · training time "
            f"(mean seconds per run); * marks the best model for the strategy by mean {metric}; — where the strategy "
            "did not run on the model (a sweep point past its depth). Paired tests between the models are below.")
    return [("h2", f"Models by strategy on the {eval_name} split"), ("table", ["strategy", *models], rows), ("p", note)]


def _model_cell(row, best: bool) -> str:
    if row is None:
        return "—"
    return (f"{row['accuracy_mean']:.4f} / {row['macro_f1_mean']:.4f} · {_short_count(row['trainable_params'])} "
            f"params · {row['train_seconds_mean']:.1f} s{' *' if best else ''}")


def _short_count(n) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{int(n)}"


def _recipe(row) -> str:
    return f"{_name(row)} with the {row['decision']} decision rule"


def tradeoff_sentence(recipes, eval_name: str, tolerance: float = TRADEOFF_TOLERANCE) -> str:
    """One sentence naming the recipe (strategy and decision rule) with the best mean macro-F1 among those
    whose mean accuracy is within `tolerance` of the best mean accuracy."""
    most_accurate, chosen = best_tradeoff(recipes, tolerance)
    points = f"{tolerance * 100:g} accuracy point{'' if tolerance * 100 == 1 else 's'}"
    if chosen.name == most_accurate.name:
        return (f"Best trade-off: {_recipe(chosen)} has both the best mean {eval_name} accuracy "
                f"({chosen['accuracy_mean']:.4f}) and the best mean macro-F1 ({chosen['macro_f1_mean']:.4f}) among "
                f"the recipes within {points} of it.")
    return (f"Best trade-off: {_recipe(chosen)} has the best mean {eval_name} macro-F1 ({chosen['macro_f1_mean']:.4f}, "
            f"accuracy {chosen['accuracy_mean']:.4f}) among the recipes within {points} of the best mean accuracy "
            f"({most_accurate['accuracy_mean']:.4f}, {_recipe(most_accurate)}).")


def _decision_blocks(recipes, eval_name: str) -> list[tuple]:
    """Each strategy under every decision rule, from the same runs (only where runs recorded more than one)."""
    several = recipes.groupby(keys(recipes), sort=False, dropna=False)["decision"].transform("size") > 1
    if not several.any():
        return []
    return [("h2", f"Decision rule on the {eval_name} split (same runs, mean ± std over seeds)"), ("p", (
        "Each run's logits scored with argmax and with per-class offsets fitted on validation to maximise macro-F1 "
        "(--decision macro_f1), both after temperature scaling (with --calibration temperature); * marks the rule "
        "the saved models apply.")),
        ("table", [*keys(recipes), "decision rule", "accuracy", "macro-F1"], [
            [*_key_cells(r, recipes), f"{r['decision']}{' *' if r['served'] else ''}", _pm(r["accuracy_mean"], r["accuracy_std"]),
             _pm(r["macro_f1_mean"], r["macro_f1_std"])] for _, r in recipes[several].iterrows()])]


def per_class_blocks(summary, label_names: list[str], labels: np.ndarray, eval_name: str) -> list[tuple]:
    """Precision, recall and F1 of every class for every strategy: where a minority class is lost."""
    support = np.bincount(labels, minlength=len(label_names))
    return [("h2", f"Per-class precision, recall and F1 on the {eval_name} split (mean ± std over seeds)"), ("table", [
        *keys(summary), "class", "support", "precision", "recall", "F1"
    ], [[*_key_cells(r, summary), name, int(support[i]), *(_pm(r[f"{m}[{name}]_mean"], r[f"{m}[{name}]_std"]) for m in PER_CLASS)]
        for _, r in summary.iterrows() for i, name in enumerate(label_names)])]


def calibration_blocks(calibration, eval_name: str) -> list[tuple]:
    """ECE and Brier score before post-hoc fitting and as served (transformer runs; none: no section)."""
    if calibration.empty:
        return []
    return [("h2", f"Calibration on the {eval_name} split (mean over seeds)"), ("p", (
        f"Top-label expected calibration error ({ECE_BINS} bins) and multi-class Brier score of the probabilities, before "
        "and as served: after dividing the logits by a temperature fitted on validation, and adding the decision rule's "
        "offsets where it has them, with the temperature fitted again on those logits (lower is better for both).")),
        ("table", [*keys(calibration), "seeds", "temperature", "ECE before", "ECE served", "Brier before", "Brier served"], [
            [*_key_cells(r, calibration), int(r["seeds"]), f"{r['temperature']:.3f}", *(f"{r[c]:.4f}" for c in (
                "ece_before", "ece_served", "brier_before", "brier_served"))] for _, r in calibration.iterrows()])]


def _selection_blocks(selection: dict, metric: str) -> list[tuple]:
    """The learning rate chosen for each strategy, the candidates' validation scores, and what choosing cost."""
    cost = sum(s["extra_train_seconds"] for s in selection.values())
    seed = next(iter(selection.values()))["seed"]
    # With several models an entry is `MODEL/STRATEGY` and names its model, which gets a column of its own.
    models = ["model"] if "model" in next(iter(selection.values())) else []
    return [("h2", "Learning rate per strategy (chosen on validation)"), ("p", (
        f"Each strategy trained at each candidate learning rate on seed {seed}; the best validation {metric} was kept "
        f"and all seeds ran at it (its seed-{seed} run is the search's). The test split played no part. Choosing "
        f"cost {cost:.0f} s of extra training in all.")), ("table", [
        *models, "strategy", f"candidates (validation {metric})", "chosen lr", "extra train time (s)"
    ], [[*(s[m] for m in models), name.rpartition("/")[2],
         ", ".join(f"{lr}: {score:.4f}" for lr, score in s["candidates"].items()), f"{s['chosen_lr']:g}",
         f"{s['extra_train_seconds']:.0f}"] for name, s in selection.items()])]


def _num(value) -> str:
    return "—" if pd.isna(value) else f"{value:.4f}"


def _significance_blocks(summary, results, labels: np.ndarray, eval_name: str) -> list[tuple]:
    """Every row against the reference strategy (full, if the study has it), on its own model if it has one."""
    reference = "full" if "full" in set(summary["strategy"]) else summary["strategy"].iloc[0]
    where = " on each model (a baseline: on the first model)" if "model" in summary.columns else ""
    return [("h2", f"Significance against {reference}{where}"), ("p", (
        f"Differences are in points (x100) on the same {eval_name} examples, seed-matched. p-values: paired "
        f"bootstrap (2000 resamples of the examples, the same draw for every seed) and, per seed, the exact "
        f"McNemar test; significant means bootstrap p < {ALPHA}.")),
        *(("p", line) for line in significance_lines(results, labels, reference))]


def significance_lines(results, labels: np.ndarray, reference: str) -> list[str]:
    """One sentence per row, e.g. 'freeze6 vs full: -1.3 accuracy points (p = 0.040), ...'; with several models
    against `reference` on the row's model ('m1/freeze6 vs m1/full: ...'), a baseline's against the first model's."""
    predictions = _predictions(results)
    first = next((run.model.slug for run, _ in results if run.model is not None), None)
    lines = []
    for key, by_seed in predictions.items():
        against = (reference,) if len(key) == 1 else (key[0] or first, reference)
        if key == against:
            continue
        if against not in predictions:
            lines.append(f"{_label(key)} vs {_label(against)}: no such run, not compared.")
            continue
        lines.append(_paired_line(f"{_label(key)} vs {_label(against)}", by_seed, predictions[against], labels))
    return lines


def model_significance_blocks(results, labels: np.ndarray, eval_name: str) -> list[tuple]:
    """Each model against the first one on every strategy they share (paired: same examples, same seeds)."""
    lines = model_lines(results, labels)
    if not lines:
        return []
    return [("h2", "Models compared on the same strategy"), ("p", (
        f"Each model against the first model that ran the strategy, on the same {eval_name} examples, seed-matched: "
        f"differences in points (x100), paired bootstrap p-values and, per seed, the exact McNemar test, as above; "
        f"significant means bootstrap p < {ALPHA}.")), *(("p", line) for line in lines)]


def model_lines(results, labels: np.ndarray) -> list[str]:
    """One sentence per strategy and model after the first, e.g. 'm2 vs m1 on full: +1.2 accuracy points ...'."""
    by_strategy: dict[str, dict[str, dict]] = {}
    for key, by_seed in _predictions(results).items():
        if len(key) == 2 and key[0] is not None:
            by_strategy.setdefault(key[1], {})[key[0]] = by_seed
    lines = []
    for strategy, models in by_strategy.items():
        (first, theirs), *others = models.items()
        lines += [_paired_line(f"{model} vs {first} on {strategy}", ours, theirs, labels) for model, ours in others]
    return lines


def _predictions(results) -> dict[tuple, dict[int, np.ndarray]]:
    """Each row's (`tables.row_key`) evaluation predictions by seed."""
    predictions: dict[tuple, dict[int, np.ndarray]] = {}
    several = multi_model(results)
    for run, metrics in results:
        predictions.setdefault(row_key(run, several), {})[run.seed] = np.asarray(metrics["evaluation_predictions"])
    return predictions


def _paired_line(title: str, ours: dict[int, np.ndarray], theirs: dict[int, np.ndarray], labels: np.ndarray) -> str:
    """`title: DIFF accuracy points (p); DIFF macro-F1 points (p); McNemar p (seed s), ...` on the seeds both have."""
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        return f"{title}: no seed in common, not compared."
    ours_, theirs_ = np.stack([ours[s] for s in seeds]), np.stack([theirs[s] for s in seeds])
    parts = []
    for metric, name in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
        delta, p = paired_bootstrap(labels, theirs_, ours_, metric)
        parts.append(f"{delta * 100:+.1f} {name} points ({_p(p)}{', significant' if p < ALPHA else ''})")
    mcnemar = ", ".join(f"{_p(mcnemar_exact(theirs_[i] == labels, ours_[i] == labels))} (seed {s})"
                        for i, s in enumerate(seeds))
    return f"{title}: {'; '.join(parts)}; McNemar {mcnemar}."


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def to_markdown(blocks) -> str:
    """Markdown with every text HTML-escaped: markdown renderers pass raw HTML through, and class names,
    data notes and paths come from the user's data (a label `<img onerror=...>` must stay text)."""
    esc = lambda v: html.escape(str(v), quote=False)  # noqa: E731
    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            out.append(("# " if kind == "h1" else "## ") + esc(rest[0]))
        elif kind == "p":
            out.append(esc(rest[0]))
        elif kind == "img":
            out.append(f"![{esc(rest[1])}]({rest[0]})\n\n*{esc(rest[1])}*")
        else:
            header, rows = rest
            cell = lambda v: esc(v).replace("|", "\\|")  # noqa: E731
            out.append("\n".join(["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
                                 + ["| " + " | ".join(map(cell, row)) + " |" for row in rows]))
    return "\n\n".join(out) + "\n"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block}
figure{margin:1.5em 0}figcaption{color:#555;font-size:14px}"""


def to_html(blocks, image_folder: Path) -> str:
    """One self-contained page: the PNGs are embedded as base64 data URIs."""
    esc = html.escape
    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "img":
            data = base64.b64encode((image_folder / rest[0]).read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{esc(rest[1])}">'
                        f"<figcaption>{esc(rest[1])}</figcaption></figure>")
        else:
            header, rows = rest
            head = "".join(f"<th>{esc(str(h))}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>freezetune compare</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
