"""The `freezetune` command: a thin argparse layer over the Python API.

Bad input raises `UserError` anywhere below; here it becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .compare import add_compare_arguments, compare_from_args
from .config import CLASS_WEIGHTS, DEFAULT_DATA, DEFAULT_MODEL, PRECISIONS, TrainConfig
from .errors import UserError
from .serve.options import add_serve_arguments

EXIT_USAGE = 2
PRECISION_HELP = "matmul precision: auto (bf16 where the CPU/GPU runs it natively, else fp32), fp32, bf16, fp16 (GPU)"


def _add_data_arguments(parser: argparse.ArgumentParser, data_default: str | None = DEFAULT_DATA) -> None:
    parser.add_argument("--data", default=data_default, required=data_default is None,
                        help="modelscope:OWNER/NAME, hf:OWNER/NAME, a .csv/.tsv/.jsonl/.json/.parquet file, "
                        f"a folder of train/validation/test files, or builtin:NAME (default: {DEFAULT_DATA})")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--label-column", default="label")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The training flags, shared by `train` and `compare`."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"hub id (e.g. bert-base-chinese), local model folder, or {DEFAULT_MODEL} (default)")
    _add_data_arguments(parser)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--max-length", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metric", default="accuracy", help="validation metric that picks the best epoch: accuracy or macro_f1")
    parser.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after PATIENCE epochs without improvement")
    parser.add_argument("--class-weights", choices=CLASS_WEIGHTS, default="none",
                        help="balanced: weigh each class's loss by n / (classes * count), for imbalanced data")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--no-length-grouping", dest="length_grouping", action="store_false",
                        help="plain random batches instead of batches of similar length")
    parser.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                        help="run frozen bottom layers every step, with dropout, as the notebook does")
    parser.add_argument("--no-compact-embeddings", dest="compact_embeddings", action="store_false",
                        help="update the whole word-embedding matrix every step, not only the rows the data uses")
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="share of train held out when the data has no validation split")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def _train_config(args) -> TrainConfig:
    return TrainConfig(
        output_dir=args.output_dir, model=args.model, data=args.data, text_column=args.text_column,
        label_column=args.label_column, freeze=args.freeze, freeze_embeddings=args.freeze_embeddings,
        epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, lr=args.lr,
        max_length=args.max_length, seed=args.seed, metric=args.metric, class_weights=args.class_weights,
        early_stopping=args.early_stopping,
        validation_fraction=args.validation_fraction, precision=args.precision, length_grouping=args.length_grouping,
        prefix_cache=args.prefix_cache, compact_embeddings=args.compact_embeddings, overwrite=args.overwrite,
    )


def cmd_train(args) -> None:
    from .metrics import format_report
    from .training import train

    metrics = train(_train_config(args))
    print(f"\n{metrics['evaluation_split']} report (best epoch {metrics['best_epoch']}):")
    print(format_report(metrics["evaluation"], metrics["label_names"]))


def cmd_compare(args) -> None:
    out = compare_from_args(args)
    print(f"wrote {out / 'report.md'} and {out / 'report.html'}")


def cmd_tokenize(args) -> None:
    from .models import load_tokenizer

    if args.pair and len(args.text) != 2:
        raise UserError(f"--pair takes exactly two texts (A B), got {len(args.text)}")
    tokenizer = load_tokenizer(args.model)
    inputs = (args.text[0], args.text[1]) if args.pair else (args.text,)
    encoded = tokenizer(*inputs, padding=args.padding, truncation=True, max_length=args.max_length)
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
    from .data.sources import read_table

    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"--file {path} not found: pass an existing .csv/.tsv/.jsonl/.json/.parquet file")
    frame = read_table(path)
    if args.text_column not in frame.columns:
        raise UserError(f"{path} has no column '{args.text_column}'; columns are: {', '.join(map(str, frame.columns))} "
                        "(choose with --text-column)")
    texts = frame[args.text_column].fillna("").astype(str).tolist()
    return texts, frame


def _predictor(args):
    from .serve.backends import load_predictor

    return load_predictor(args.model, args.backend, args.int8, args.batch_size, args.precision)


def cmd_predict(args) -> None:
    output = Path(args.output) if args.output else None
    if output is not None:
        if output.suffix.lower() not in (".csv", ".jsonl"):
            raise UserError(f"--output {output}: use a .csv or .jsonl file name")
        if output.exists() and not args.overwrite:
            raise UserError(f"{output} already exists: choose another --output or pass --overwrite")
    texts, _ = _read_texts(args)
    results = _predictor(args).predict(texts)
    if output is None:
        for row in results:
            print(json.dumps(row, ensure_ascii=False) if args.json else f"{row['label']}\t{row['probability']:.4f}\t{row['text']}")
        return
    import pandas as pd

    from .outputs import write_text_atomic

    frame = pd.DataFrame(results)
    text = frame.to_csv(index=False) if output.suffix.lower() == ".csv" else frame.to_json(orient="records", lines=True, force_ascii=False)
    write_text_atomic(output, text)
    print(f"wrote {len(results)} predictions to {output}", file=sys.stderr)


def cmd_export(args) -> None:
    from .export import export_onnx

    out = export_onnx(args.model, args.output_dir, int8=args.int8, overwrite=args.overwrite)
    print(f"wrote {out}; predict with: freezetune predict --backend onnx --model {out}"
          + (" [--int8]" if args.int8 else ""), file=sys.stderr)


def cmd_serve(args) -> None:
    from .serve.run import serve_from_args

    serve_from_args(args)


def cmd_eval(args) -> None:
    from .metrics import format_report
    from .predict import evaluate

    report = evaluate(args.model, args.data, args.split, args.text_column, args.label_column, args.batch_size, args.precision)
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
    parser = argparse.ArgumentParser(prog="freezetune", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("tokenize", help="show how a tokenizer encodes texts (the notebook's first cell)")
    p.add_argument("text", nargs="+")
    p.add_argument("--pair", action="store_true", help="encode the two texts as one sentence pair")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--padding", choices=["longest", "max_length"], default="longest")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tokenize)

    p = commands.add_parser("train", help="fine-tune a model with one tuning strategy")
    add_train_arguments(p)
    p.add_argument("--freeze", default="none", help="none (full fine-tuning), N (freeze encoder layers 0..N-1) or head")
    p.add_argument("--freeze-embeddings", action="store_true", help="also freeze the embeddings")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("compare", help="the freezing study: strategies x seeds, baselines, report")
    add_compare_arguments(p)
    p.set_defaults(func=cmd_compare)

    p = commands.add_parser("predict", help="label texts with a trained model")
    p.add_argument("text", nargs="*")
    p.add_argument("--model", required=True, help="a folder written by `freezetune train` (or `export`, with --backend onnx)")
    p.add_argument("--file", help="a .csv/.tsv/.jsonl/.json/.parquet file of texts")
    p.add_argument("--text-column", default="sentence")
    p.add_argument("--output", help="write predictions to this .csv or .jsonl file")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true", help="print JSON lines")
    p.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                   help="onnx: run a folder written by `freezetune export` with ONNX Runtime")
    p.add_argument("--int8", action="store_true", help="with --backend onnx: the int8-quantized model")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=f"with --backend torch: {PRECISION_HELP}")
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
    p.add_argument("--split", choices=["train", "validation", "test"], help="default: test if the data has one, else validation")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", action="store_true")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.set_defaults(func=cmd_eval)

    p = commands.add_parser("data", help="list the builtin datasets or show one")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?")
    p.add_argument("--text-column", default="sentence")
    p.add_argument("--label-column", default="label")
    p.add_argument("--examples", type=int, default=5)
    p.set_defaults(func=cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"freezetune: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("freezetune: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    return 0
