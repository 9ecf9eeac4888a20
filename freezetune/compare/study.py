"""`compare`: run every strategy x seed on the same splits, resumably, then write the report."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from tqdm.auto import tqdm

from freezetune.compare.grid import METRICS_FILE, Run, execute, grid, parse_strategies, parse_strategy, train_config
from freezetune.compare.options import CompareOptions
from freezetune.compare.report import write_report
from freezetune.errors import UserError
from freezetune.outputs import check_not_input, check_writable, output_lock, write_json_atomic

OPTIONS_FILE = "compare.json"
# The validation split, when one must be made, is held out with this seed for every run: the split is
# part of the study, the seeds vary only the training.
SPLIT_SEED = 0


def compare(options: CompareOptions) -> Path:
    """Run the study into `options.output_dir` and return that folder (report.md, report.html, runs/, ...).

    Everything that can be checked is checked before an existing folder is touched: the options, the
    output location, the data, and that the model loads.
    """
    out = _check_output_location(options)
    strategies = parse_strategies(options.strategies)  # a bad name fails before any work
    runs = grid(strategies, options.seeds)
    _check_options(options, strategies, out)

    from freezetune.data import load_splits

    splits = load_splits(options.data, options.text_column, options.label_column, SPLIT_SEED, options.validation_fraction)
    if any(strategy.freezing is not None for strategy in strategies):
        _check_model_loads(options.model)
    with output_lock(out):
        _prepare_output(out, options)
        todo = [run for run in runs if not run.finished(out)]
        # Each run writes its metrics.json last and atomically, so an interrupted run simply stays in `todo`.
        with tqdm(total=len(runs), initial=len(runs) - len(todo), unit="run", desc="compare") as bar:
            for run in todo:
                bar.set_postfix_str(run.name)
                execute(run, splits, options, out)
                bar.update()
        by_strategy = sorted(runs, key=lambda run: strategies.index(run.strategy))  # the report's table order
        results = [(run, _read_result(run.folder(out) / METRICS_FILE, splits)) for run in by_strategy]
        write_report(out, options, splits, results)
    return out


def _check_output_location(options: CompareOptions) -> Path:
    """The study folder, if it can be written and would not swallow the model or the data."""
    if not options.output_dir:
        raise UserError("compare needs --output-dir (or output_dir in the --config file)")
    check_not_input(options.output_dir, {"--model": options.model, "--data": options.data})
    return check_writable(options.output_dir)


def _check_options(options: CompareOptions, strategies, out: Path) -> None:
    """The options every run shares, checked as `train` checks them (epochs, batch sizes, lr, precision, ...)."""
    from freezetune.training import validate_config

    validate_config(train_config(Run(parse_strategy("full"), options.seeds[0]), options, out))
    if any(strategy.name == "lstm" for strategy in strategies) and not options.lstm_lr > 0:
        raise UserError(f"--lstm-lr must be positive, got {options.lstm_lr}")


def _check_model_loads(model: str) -> None:
    """The tokenizer and config of the transformer runs' model load (cheap: no weights)."""
    from freezetune.models import load_model_config, load_tokenizer

    load_tokenizer(model)
    load_model_config(model)


def _prepare_output(out: Path, options: CompareOptions) -> None:
    """Refuse to mix studies: an existing folder must hold a study, and needs --resume (same settings) or --overwrite."""
    record = out / OPTIONS_FILE
    if out.exists() and any(out.iterdir()):
        if not record.is_file() and (options.resume or options.overwrite):
            raise UserError(f"{out} holds no study (no {OPTIONS_FILE}), so there is nothing to resume or replace: "
                            "choose another --output-dir")
        if options.resume:
            previous = json.loads(record.read_text(encoding="utf-8"))
            # An option missing from the record (a study from an older version) counts as changed.
            changed = [k for k, v in options.run_defining().items() if previous.get(k) != v]
            if changed:
                raise UserError(f"cannot --resume {out}: its runs used different {', '.join(changed)}; "
                                "use the same options or another --output-dir")
        elif options.overwrite:
            shutil.rmtree(out / "runs", ignore_errors=True)
        else:
            raise UserError(f"output directory {out} already exists: pass --resume to continue it, "
                            "--overwrite to replace its runs, or choose another --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, dataclasses.asdict(options))


def _read_result(path: Path, splits) -> dict:
    metrics = json.loads(path.read_text(encoding="utf-8"))
    if metrics["label_names"] != list(splits.label_names) or len(metrics["evaluation_predictions"]) != len(splits.evaluation_split[1]):
        raise UserError(f"{path} was computed on different data than the study's: rerun with --overwrite")
    return metrics
