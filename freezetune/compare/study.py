"""`compare`: run every strategy x seed (on every model of --models) on the same splits, resumably, then report.

The phases: check the options and the grid, load the data, check every model against its strategies, prepare the
output folder, choose each (model, strategy)'s learning rate on validation (with `--lr-grid`), run the grid,
report.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

from freezetune.compare.executors import open_executor
from freezetune.compare.grid import Cell, Run, StudyStrategy, cells, grid, parse_strategies, study_models, with_recipes
from freezetune.compare.options import CompareOptions
from freezetune.config import build_options, field_defaults
from freezetune.errors import UserError
from freezetune.layout import METRICS_FILE, MODELS_FILE, OPTIONS_FILE
from freezetune.logs import cli_voice, progress_bar
from freezetune.outputs import check_not_input, check_writable, output_lock, write_json_atomic

# The validation split, when one must be made, is held out with this seed for every run: the split is
# part of the study, the seeds vary only the training.
SPLIT_SEED = 0
log = logging.getLogger("freezetune")


def compare(options: CompareOptions | None = None, **keywords) -> Path:
    """Run the study into `options.output_dir` and return that folder (report.md, report.html, runs/, ...).

    `options`: a `CompareOptions`; keywords are its fields, the CLI's options (`seeds=[0, 1]`), over `options` or
    the defaults (see freezetune/api.py). `freezetune.study` returns the same folder as a `display.StudyFolder`,
    which Jupyter shows as the study's comparison table.

    Everything that can be checked is checked before an existing folder is touched: the options (they check
    themselves), the strategy names, the output location, the data, and that the model loads.
    """
    options = build_options(CompareOptions, options, keywords, "compare")
    with cli_voice():  # progress lines and bars as the CLI shows them
        return _run_study(options)


def _run_study(options: CompareOptions) -> Path:
    """`compare`'s phases, on checked options."""
    from freezetune.data import load_splits

    strategies = with_recipes(parse_strategies(options.strategies), options.recipes)  # bad names fail before any work
    out = _check_output_location(options)
    splits = load_splits(options.data, options.text_column, options.label_column, SPLIT_SEED, options.validation_fraction)
    # Only now the libraries that take seconds to import: a study refused above says so at once.
    from freezetune.compare.report import write_report
    from freezetune.training.distill import check_teachers

    models, described = {}, {}
    if any(not strategy.is_baseline for strategy in strategies):
        strategies, models, described = _check_models(options, splits.label_names)
        check_teachers(options.distill_from, splits.label_names)  # before any run, baselines included
    rows = cells(strategies, models)
    with output_lock(out), open_executor(options) as executor:  # before the folder is touched: Ray may be unreachable
        _prepare_output(out, options, described)
        lrs, selection = choose_learning_rates(rows, options, splits, out, executor)
        runs = grid(rows, options.seeds, lrs)
        run_all(runs, splits, options, out, executor)
        order = {row: i for i, row in enumerate(rows)}
        by_row = sorted(runs, key=lambda run: order[run.model, run.strategy])  # the report's table order
        results = [(run, _read_result(run.folder(out) / METRICS_FILE, splits)) for run in by_row]
        write_report(out, options, splits, results, selection, described)
    return out


def run_all(runs: list[Run], splits, options: CompareOptions, out: Path, executor, desc: str = "compare") -> None:
    """Run the unfinished runs with `executor` (see executors.py); each writes its metrics.json last and
    atomically, so an interrupted or failed run simply stays unfinished and `--resume` runs it again."""
    todo = [run for run in runs if not run.finished(out)]
    # The study's bar is the one shown: each run's own training bar stays hidden inside it (logs.progress_bar).
    with progress_bar(total=len(runs), initial=len(runs) - len(todo), unit="run", desc=desc) as bar:
        executor.run(todo, splits, options, out, bar)


def choose_learning_rates(rows: list[Cell], options: CompareOptions, splits, out: Path, executor):
    """With `--lr-grid`: each (model, strategy) at each candidate lr on the first seed, the best by validation kept.

    Returns {(model, strategy name): chosen lr} and, per row (`full`, or `MODEL/full` with several models, whose
    entries also name the model), the candidates' validation scores and the selection's cost (training seconds of
    the candidates not kept: the chosen one is the first seed's run of the study).
    """
    if options.lr_grid is None:
        return {}, {}
    from freezetune.training.lr_search import search

    seed = options.seeds[0]
    searched = [(model, s) for model, s in rows if not s.is_baseline]
    candidates = {(model, s.name): _candidates(s, options.lr_grid) for model, s in searched}
    # All candidates through the executor at once (Ray runs them side by side); `search` then ranks the finished runs.
    run_all([Run(s, seed, lr, model) for model, s in searched for lr in candidates[model, s.name]], splits, options,
            out, executor, desc="lr search")
    lrs, selection = {}, {}
    for model, strategy in searched:
        def finished(lr: float, strategy=strategy, model=model) -> dict:
            return json.loads((Run(strategy, seed, lr, model).folder(out) / METRICS_FILE).read_text(encoding="utf-8"))

        name = strategy.name if model is None else f"{model.slug}/{strategy.name}"
        result = search(candidates[model, strategy.name], options.metric, finished, name)
        lrs[model, strategy.name] = result.best.lr
        selection[name] = result.selection(seed) if model is None else {"model": model.slug, **result.selection(seed)}
    write_json_atomic(out / "lr_selection.json", selection)
    return lrs, selection


def _candidates(strategy: StudyStrategy, lr_grid: str) -> list[float]:
    if lr_grid == "auto":
        return list(strategy.lr_grid)
    return [float(v) for v in lr_grid.split(",")]


def _check_output_location(options: CompareOptions) -> Path:
    """The study folder, if it can be written and would not swallow the model or the data."""
    if not options.output_dir:
        raise UserError("compare needs --output-dir (or output_dir in the --config file)")
    check_not_input(options.output_dir, options.input_paths)
    out = check_writable(options.output_dir)
    _refuse_mixing(out, options)
    return out


def _check_models(options: CompareOptions, label_names: list[str]):
    """Every model checked against the strategies before any run (`_check_against_model`), a failing one named.

    Returns the study's strategies, {model: its strategies} (empty for a one-model study: no model level) and
    what each model is, by its folder under runs/ ({slug: {model, type, layers, depth}}; empty for one model).
    """
    if not options.models:
        return _check_against_model(options, label_names), {}, {}
    models, described = {}, {}
    for model in study_models(options.models):
        try:
            body = _anatomy(model.model, label_names)
            models[model] = _fitting_strategies(options, body)
        except UserError as exc:
            raise UserError(f"--models {model.model}: {exc}") from None
        described[model.slug] = {"model": model.model, "type": body.model_type, "layers": body.describe_depth(),
                                 "depth": body.depth}
    return with_recipes(parse_strategies(options.strategies), options.recipes), models, described


def _check_against_model(options: CompareOptions, label_names: list[str], model: str | None = None
                         ) -> list[StudyStrategy]:
    """The study's strategies, checked against the model (default: --model) before any run: its tokenizer and
    config load (cheap: no weights), the default sweep stops at its depth, and every strategy fits it (freezeN,
    topN, LoRA targets)."""
    return _fitting_strategies(options, _anatomy(model or options.model, label_names))


def _anatomy(model: str, label_names: list[str]):
    """The model's anatomy from its config, its module tree built on the meta device; its tokenizer must load too."""
    from freezetune.models import load_config, load_tokenizer
    from freezetune.models.anatomy import anatomy, skeleton

    load_tokenizer(model)
    return anatomy(skeleton(load_config(model, num_labels=len(label_names))))


def _fitting_strategies(options: CompareOptions, body) -> list[StudyStrategy]:
    """The study's strategies for a model of this anatomy (the default sweep stops at its depth), each checked."""
    from freezetune.posthoc.fold import check_offsets_fit
    from freezetune.strategies import check_fits, parse_strategy

    strategies = with_recipes(parse_strategies(options.strategies, body.depth), options.recipes)
    for strategy in strategies:
        if not strategy.is_baseline:
            check_fits(parse_strategy(strategy.training_strategy), body)
    if options.fits_offsets:  # folded into the head's bias, which a decoder's head lacks
        check_offsets_fit(body.final_linear, f"model type '{body.model_type}'")
    return strategies


def _prepare_output(out: Path, options: CompareOptions, described: dict | None = None) -> None:
    """The study folder made (or its runs removed, with --overwrite), with the study's options and models recorded."""
    _refuse_mixing(out, options)  # again, under the lock: the folder may have changed since the first check
    if out.exists() and any(out.iterdir()) and options.overwrite and not options.resume:
        shutil.rmtree(out / "runs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / OPTIONS_FILE, dataclasses.asdict(options))
    if described:
        write_json_atomic(out / MODELS_FILE, described)
    else:  # an --overwrite of a multi-model study by a one-model one: no stale map of folders
        (out / MODELS_FILE).unlink(missing_ok=True)


def _refuse_mixing(out: Path, options: CompareOptions) -> None:
    """Refuse to mix studies: an existing folder must hold a study, and needs --resume (same settings) or --overwrite."""
    record = out / OPTIONS_FILE
    if out.exists() and any(out.iterdir()):
        if not record.is_file() and (options.resume or options.overwrite):
            raise UserError(f"{out} holds no study (no {OPTIONS_FILE}), so there is nothing to resume or replace: "
                            "choose another --output-dir")
        if options.resume:
            # An option missing from the record (a study from an older version) counts as its default.
            previous = {**field_defaults(CompareOptions), **json.loads(record.read_text(encoding="utf-8"))}
            changed = [k for k, v in options.run_defining().items() if previous.get(k) != v]
            if {"model", "models"} & set(changed) and (previous["models"] or options.models):
                _check_models_grow(out, previous["models"] or [previous["model"]], options.models or [options.model])
                changed = [k for k in changed if k not in ("model", "models")]
            if changed:
                raise UserError(f"cannot --resume {out}: its runs used different {', '.join(changed)}; "
                                "use the same options or another --output-dir")
        elif not options.overwrite:
            raise UserError(f"output directory {out} already exists: pass --resume to continue it, "
                            "--overwrite to replace its runs, or choose another --output-dir")


def _check_models_grow(out: Path, before: list[str], now: list[str]) -> None:
    """--resume may add models after a study's own (their runs are new folders); it may not reorder, replace or drop
    them, since a model's folder name depends on the models before it (bert, bert-2), nor turn a one-model study
    (runs/STRATEGY-seedN) into one of several (runs/MODEL/STRATEGY-seedN)."""
    if len(before) > 1 and now[:len(before)] == before:
        return
    how = ("its runs are one model's (runs/STRATEGY-seedN), and a study of several keeps each model's runs in its own "
           "folder" if len(before) == 1 else "--resume can add models after its own, not reorder, replace or drop them")
    raise UserError(f"cannot --resume {out} with --models {','.join(now)}: the study's models are {','.join(before)}; "
                    f"{how}: use another --output-dir")


def _read_result(path: Path, splits) -> dict:
    metrics = json.loads(path.read_text(encoding="utf-8"))
    if metrics["label_names"] != list(splits.label_names) or len(metrics["evaluation_predictions"]) != len(splits.evaluation_split[1]):
        raise UserError(f"{path} was computed on different data than the study's: rerun with --overwrite")
    return metrics
