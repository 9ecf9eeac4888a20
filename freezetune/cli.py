"""The `freezetune` command: a thin argparse layer over the Python API.

Bad input raises `UserError` anywhere below; here it becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from .config import DEFAULT_DATA, DEFAULT_MODEL, TrainConfig, check_distinct_columns
from .errors import Terminated, UserError
from .inference.backends import add_predictor_arguments
from .layout import is_main_process
from .logs import LOG_FORMAT
from .serve.options import add_serve_arguments

EXIT_USAGE = 2
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process killed by it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what `yes | head` reports for `yes`


def _add_data_arguments(parser: argparse.ArgumentParser, data_default: str | None = DEFAULT_DATA) -> None:
    parser.add_argument("--data", default=data_default, required=data_default is None,
                        help="modelscope:OWNER/NAME, hf:OWNER/NAME, a .csv/.tsv/.jsonl/.json/.parquet file, "
                        f"a folder of train/validation/test files, or builtin:NAME (default: {DEFAULT_DATA})")
    _add_column_arguments(parser)


def _add_column_arguments(parser: argparse.ArgumentParser, label: bool = True) -> None:
    """--text-column (and --label-column) for the commands that read data without a TrainOptions (data, eval,
    predict): the same flags, defaults and help as train's, taken from its fields."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for name in ("text_column", "label_column") if label else ("text_column",):
        parser.add_argument("--" + name.replace("_", "-"), default=fields[name].default,
                            help=fields[name].metadata["help"] + " (default: %(default)s)")


def _one_line_error(parser: argparse.ArgumentParser, message: str):
    """argparse's errors as a UserError: one line naming the problem, and where the fix is, exit code 2."""
    raise UserError(f"{message} (see {parser.prog} --help)")


class ArgumentParser(argparse.ArgumentParser):
    error = _one_line_error


def dataclass_parser(dataclass_type, prog: str, description: str):
    """The flags of a config dataclass (one per field, its help from the field's metadata), plus --config YAML."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        error = _one_line_error

    parser = Parser(dataclass_type, prog=prog, description=description)
    if "config" not in {f.name for f in dataclasses.fields(dataclass_type)}:
        parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of options (keys are the option names); "
                            "flags given on the command line override it")
    return parser


def parse_dataclass(dataclass_type, argv: list[str], prog: str, description: str):
    """Defaults < the --config YAML file < flags, into one `dataclass_type` (which checks its own values)."""
    from .configs import load_yaml

    parser = dataclass_parser(dataclass_type, prog, description)
    # A required option may come from the --config file: only the final parse, after the file is read, may miss it.
    required = [action for action in parser._actions if action.required]
    for action in required:
        action.required = False
    known, _ = parser.parse_known_args(argv)
    values = load_yaml(known.config, valid=[a.dest for a in parser._actions]) if known.config else {}
    parser.set_defaults(**values)
    for action in required:
        action.required = values.get(action.dest) in (None, "")
    fields = {f.name for f in dataclasses.fields(dataclass_type)}
    return dataclass_type(**{k: v for k, v in vars(parser.parse_args(argv)).items() if k in fields})


def cmd_train(args) -> None:
    config = parse_dataclass(TrainConfig, args.rest, "freezetune train", "fine-tune a model with one tuning strategy")
    splits = check_before_loading(config)
    from .metrics import format_report
    from .training import train

    metrics = train(config, splits)
    if not is_main_process():
        return  # the main process prints the report
    random_init = " - RANDOM INIT, not pretrained" if metrics["init"] == "random" else ""
    print(f"\n{metrics['evaluation_split']} report (best epoch {metrics['best_epoch']}){random_init}:")
    print(format_report(metrics["evaluation"], metrics["label_names"]))


def check_before_loading(config: TrainConfig):
    """The output folder and the data, checked (the data read) before torch and transformers are imported, which
    takes seconds: a refused run says so at once. `train` checks them again and is given the data, not re-reading it.
    With --resume the output folder is the checkpoint's to judge (training/resume.py)."""
    from .data import load_splits
    from .outputs import check_not_input, check_output_dir

    check_not_input(config.output_dir, config.input_paths)
    if not config.resume:
        check_output_dir(config.output_dir, config.overwrite)
    return load_splits(config.data, config.text_column, config.label_column, config.seed, config.validation_fraction)


def cmd_compare(args) -> None:
    from .compare import CompareOptions, compare

    if args.rest == ["--list-configs"]:
        from .configs import list_configs

        print("\n".join(list_configs()))
        return
    options = parse_dataclass(CompareOptions, args.rest, "freezetune compare",
                              "the tuning study: strategies x seeds, baselines, statistics, report")
    out = compare(options)
    print(f"wrote {out / 'report.md'} and {out / 'report.html'}")


def cmd_tokenize(args) -> None:
    from .models import load_tokenizer

    if args.pair and len(args.text) != 2:
        raise UserError(f"--pair takes exactly two texts (A B), got {len(args.text)}")
    if args.max_length is not None and args.max_length < 1:
        raise UserError(f"--max-length must be at least 1, got {args.max_length}")
    if args.json and args.dict:
        raise UserError("--json and --dict are two output formats: pass one of them")
    tokenizer = load_tokenizer(args.model)
    inputs = (args.text[0], args.text[1]) if args.pair else (args.text,)
    encoded = tokenizer(*inputs, padding=args.padding, truncation=True, max_length=args.max_length)
    if args.dict:  # exactly what the notebook's `print(tokenizer(...))` shows
        print(dict(encoded))
        return
    rows = [dict(encoded)] if args.pair else [{k: v[i] for k, v in encoded.items()} for i in range(len(args.text))]
    for row in rows:
        row["tokens"] = tokenizer.convert_ids_to_tokens(row["input_ids"])
    if args.json:
        print(json.dumps(rows if not args.pair else rows[0], ensure_ascii=False))
        return
    for text, row in zip([" | ".join(args.text)] if args.pair else args.text, rows):
        print(text)
        for key, value in row.items():
            print(f"  {key:<15} {value}")


def _read_texts(args) -> tuple[list[str], "object | None"]:
    if args.file is None:
        if not args.text:
            raise UserError("nothing to predict: pass TEXT arguments or --file F")
        return args.text, None
    from .data.sources import check_cells, read_table

    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"--file {path} not found: pass an existing .csv/.tsv/.jsonl/.json/.parquet file")
    frame = read_table(path)
    if args.text_column not in frame.columns:
        raise UserError(f"{path} has no column '{args.text_column}'; columns are: {', '.join(map(str, frame.columns))} "
                        "(choose with --text-column)")
    check_cells(frame, args.text_column, str(path))  # an object or a list is no text to predict
    texts = frame[args.text_column].fillna("").astype(str).tolist()
    return texts, frame


def _predictor(args):
    """One --model: its predictor; several: the ensemble averaging their probabilities."""
    if args.int8 and args.backend != "onnx":
        raise UserError("--int8 runs the quantized ONNX model: add --backend onnx (and --model an exported folder)")
    _check_model_sources(args.model, args.backend)
    members = [_model_predictor(args, model) for model in args.model]
    if len(members) == 1:
        return members[0]
    from .inference.ensemble import EnsemblePredictor

    return EnsemblePredictor(members, names=args.model)


def _check_model_sources(models: list[str], backend: str = "torch") -> None:
    """A --model that is no folder fails before PyTorch's loaders are imported (seconds); ONNX checks its own."""
    from .models import check_model_source

    if backend == "torch":
        for model in models:
            check_model_source(model)


def _model_predictor(args, model: str):
    from .inference.backends import load_predictor

    return load_predictor(model, args.backend, args.int8, args.batch_size, args.precision)


def _check_prediction_output(args) -> Path | None:
    """Refuse an --output that cannot take the predictions, before the model loads."""
    from .outputs import check_not_input, check_writable

    if not args.output:
        return None
    output = Path(args.output).expanduser()
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise UserError(f"--output {output}: use a .csv or .jsonl file name")
    if output.is_dir():
        raise UserError(f"--output {output} is a folder: choose a .csv or .jsonl file name")
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} already exists: choose another --output or pass --overwrite")
    for model in args.model:
        check_not_input(output, {"--file": args.file, "--model": model}, flag="--output")
    return check_writable(output, flag="--output")


def cmd_predict(args) -> None:
    from .outputs import one_line

    output = _check_prediction_output(args)
    texts, _ = _read_texts(args)
    results = _predictor(args).predict(texts)
    if output is None:  # one line per text: a text's own line breaks and tabs escaped (JSON escapes its own)
        for row in results:
            print(json.dumps(row, ensure_ascii=False) if args.json
                  else f"{one_line(row['label'])}\t{row['probability']:.4f}\t{one_line(row['text'])}")
        return
    import pandas as pd

    from .outputs import spreadsheet_safe, write_text_atomic

    frame = pd.DataFrame(results)
    if output.suffix.lower() == ".csv":  # texts and labels that a spreadsheet would run as formulas get a '
        safe = {column: frame[column].map(spreadsheet_safe) for column in ("text", "label")}
        text = frame.assign(**safe).to_csv(index=False)
    else:
        text = frame.to_json(orient="records", lines=True, force_ascii=False)
    output.parent.mkdir(parents=True, exist_ok=True)  # as train does for --output-dir (checked writable first)
    write_text_atomic(output, text)
    print(f"wrote {len(results)} predictions to {output}", file=sys.stderr)


def cmd_export(args) -> None:
    from .inference.export import export_onnx

    out = export_onnx(args.model, args.output_dir, int8=args.int8, overwrite=args.overwrite)
    print(f"wrote {out}; predict with: freezetune predict --backend onnx --model {out}"
          + (" [--int8]" if args.int8 else ""), file=sys.stderr)


def cmd_serve(args) -> None:
    _check_model_sources([args.model], args.backend)
    from .serve.run import serve_from_args

    serve_from_args(args)


def cmd_eval(args) -> None:
    check_distinct_columns(args.text_column, args.label_column)  # the flags first, then the files they name
    _check_model_sources([args.model])
    from .inference.predict import evaluate
    from .metrics import format_report

    report = evaluate(args.model, args.data, args.split, args.text_column, args.label_column, args.batch_size, args.precision)
    for note in report["data_notes"]:
        print(f"note: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return
    print(f"{args.data} {report['split']} ({report['rows']} rows):")
    print(format_report(report, list(report["per_class"])))


def cmd_data(args) -> None:
    from .data import load_splits
    from .data.builtin import BUILTIN_DATASETS

    if args.action == "list":
        for name in sorted(BUILTIN_DATASETS):
            print(f"builtin:{name}")
        return
    if not args.name:
        raise UserError("data show needs a NAME: e.g. freezetune data show builtin:inews")
    if args.examples < 0:  # pandas' head(-N) would print every row but the last N
        raise UserError(f"--examples must be at least 0, got {args.examples}")
    spec = args.name if ":" in args.name or Path(args.name).exists() else f"builtin:{args.name}"
    splits = load_splits(spec, args.text_column, args.label_column)
    for note in splits.notes:
        print(f"note: {note}")
    print(f"{spec}: classes {splits.label_names}")
    for split, frame in (("train", splits.train), ("validation", splits.validation), ("test", splits.test)):
        if frame is None:
            continue
        counts = frame["label"].value_counts().sort_index()
        print(f"  {split:<11}{len(frame):>7} rows  " + "  ".join(f"{splits.label_names[i]}: {n}" for i, n in counts.items()))
    print("examples:")
    for _, row in splits.train.head(args.examples).iterrows():
        print(f"  [{splits.label_names[row['label']]}] {row['text']}")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="freezetune", description=__doc__.splitlines()[0])
    # Taken out of the command line by main before parsing (see _take_verbose); declared here for --help.
    parser.add_argument(VERBOSE_FLAG, action="store_true",
                        help="also show the libraries' own messages and progress bars (transformers' loading report, "
                        "the Trainer's log dicts); any command, before or after its name: `freezetune train --verbose "
                        "...`. A run's train.log keeps the libraries' messages either way")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    p = commands.add_parser("tokenize", help="show how a tokenizer encodes texts (the notebook's first cell)")
    p.add_argument("text", nargs="+")
    p.add_argument("--pair", action="store_true", help="encode the two texts as one sentence pair")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--padding", choices=["longest", "max_length"], default="longest")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dict", action="store_true", help="print one Python dict of ids, as the notebook's print(tokenizer(...))")
    p.set_defaults(func=cmd_tokenize)

    # train and compare parse their own flags, generated from their config dataclasses (see parse_dataclass),
    # so building this parser needs no torch or transformers: `freezetune --help` stays fast.
    for name, func, help_text in (("train", cmd_train, "fine-tune a model with one tuning strategy (train --help: flags)"),
                                  ("compare", cmd_compare, "the tuning study: strategies x seeds, baselines, report "
                                   "(compare --help: flags; compare --list-configs: packaged study configs)")):
        p = commands.add_parser(name, help=help_text, add_help=False)
        p.set_defaults(func=func, takes_rest=True)

    p = commands.add_parser("predict", help="label texts with a trained model")
    p.add_argument("text", nargs="*")
    p.add_argument("--model", required=True, action="append",
                   help="a folder written by `freezetune train` (or `export`, with --backend onnx); "
                   "repeat it (--model A --model B) to average the models' probabilities (a seed ensemble)")
    p.add_argument("--file", help="a .csv/.tsv/.jsonl/.json/.parquet file of texts")
    _add_column_arguments(p, label=False)
    p.add_argument("--output", help="write predictions to this .csv or .jsonl file")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON lines")
    add_predictor_arguments(p)
    p.set_defaults(func=cmd_predict)

    p = commands.add_parser("export", help="export a trained model to ONNX for fast CPU inference")
    p.add_argument("--model", required=True, help="a folder written by `freezetune train`")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx (dynamic int8 quantization)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("serve", help="serve a trained model over HTTP: POST /predict, GET /info, a page at /")
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("eval", help="evaluate a trained model on a labelled dataset")
    p.add_argument("--model", required=True)
    _add_data_arguments(p, data_default=None)
    p.add_argument("--split", choices=["train", "validation", "test"],
                   help="default: test if the data has one, else validation; a single file is evaluated whole")
    p.add_argument("--json", action="store_true")
    add_predictor_arguments(p, backend=False)
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser("data", help="list the builtin datasets or show one")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?")
    _add_column_arguments(p)
    p.add_argument("--examples", type=int, default=5)
    p.set_defaults(func=cmd_data)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of each message (it may be replaced, e.g. by tests), above
    a progress bar being drawn there rather than through it."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass

    def emit(self, record: logging.LogRecord) -> None:
        from .logs import write_stderr

        try:
            write_stderr(self.format(record))
        except Exception:
            self.handleError(record)


VERBOSE_FLAG = "--verbose"


def _take_verbose(argv: list[str]) -> tuple[list[str], bool]:
    """`--verbose` anywhere before a `--` (before or after the command: train and compare parse their own flags)."""
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [arg for arg in argv[:end] if arg != VERBOSE_FLAG] + argv[end:]
    return kept, len(kept) != len(argv)


def _log_to_stderr() -> None:
    """Progress lines of the `freezetune` logger on stderr, as `[freezetune] message` (the CLI's voice)."""
    logger = logging.getLogger("freezetune")
    if not is_main_process():  # torchrun / accelerate: one voice, the main process's
        logger.setLevel(logging.WARNING)
        return
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _raise_terminated(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    _log_to_stderr()
    # SIGTERM unwinds like Ctrl-C (staging and scratch folders removed); only the main thread may set it.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    try:
        argv, verbose = _take_verbose(list(sys.argv[1:] if argv is None else argv))
        parser = build_parser()
        args, rest = parser.parse_known_args(argv)
        if getattr(args, "takes_rest", False):
            args.rest = rest
        elif rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if args.command != "data":  # the one command that needs no transformers (importing it takes a second)
            from .logs import show_library_output

            show_library_output(verbose)
        args.func(args)
        sys.stdout.flush()  # now, not at exit: a reader gone away is the BrokenPipeError below, not a message at exit
    except BrokenPipeError:  # the reader of stdout stopped (`predict ... | head`): stop quietly, as Unix tools do
        with contextlib.suppress(OSError, ValueError):  # nothing more reaches it, not even Python's flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except UserError as exc:
        print(f"freezetune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("freezetune: terminated (SIGTERM); no partial output was kept", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("freezetune: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
