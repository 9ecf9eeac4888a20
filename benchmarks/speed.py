"""Training and prediction speed: the notebook pipeline and a tuned Trainer vs `freezetune train`, per strategy.

    python benchmarks/speed.py --quick            # a few minutes on 2 cores
    python benchmarks/speed.py                    # the full data, 3 epochs
    python benchmarks/speed.py --quick --ablation --repeats 3 --skip-reference --skip-tuned   # each shortcut off in turn

On the same model, data, max length, batch size, learning rate, epochs and seed it runs (a) the notebook's code
path (whole dataset tokenized with padding=True, the notebook's freezing loop, Trainer defaults), (t) the same
Trainer with the flags an informed user sets (bf16 where the CPU runs it natively, a padding collator, length
grouping, and exactly the strategy's parameters frozen, embeddings included), and (b) `freezetune.training.train`.
Each training runs alone in a fresh process, so peak memory (ru_maxrss) is that
run's and no cache is shared. Prediction speed is measured for pipeline("text-classification"), freezetune's
PyTorch Predictor and ONNX float32/int8. See benchmarks/README.md for what is measured and how FLOPs are counted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

# The strategies this benchmark compares with the notebook's freezing loop (any strategy name works for `train`).
STRATEGIES = ("full", "freeze6", "freeze6+emb", "head")
# --ablation: freezetune with one shortcut turned off (TrainConfig overrides), where the strategy uses it
ABLATIONS = {
    "fp32 (no bf16 autocast)": {"precision": "fp32"},
    "no length grouping": {"length_grouping": False},
    "no compact embeddings": {"compact_embeddings": False},
    "no prefix cache": {"prefix_cache": False},
}
QUICK_ROWS = {"train": 800, "validation": 300, "test": 300}


def in_fresh_process(fn, *args):
    """fn(*args) in a new interpreter (spawn): its own ru_maxrss, caches and threads."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def scores(labels, preds) -> dict:
    """The package's own metric code, so both pipelines are scored exactly as `train` scores."""
    from freezetune.metrics import summary_metrics

    return summary_metrics(labels, preds)


def _test_scores(predicted) -> dict:
    """Scores of `trainer.predict` output against its own label_ids: with length grouping the Trainer also groups
    the batches it predicts, so predictions come in another order than the dataset's rows."""
    return scores(predicted.label_ids, predicted.predictions.argmax(axis=-1))


# --------------------------------------------------------------------------- (a) the notebook's pipeline


def notebook_training_args(out: str, args: dict, **extra):
    """The notebook's TrainingArguments (evaluate and save every epoch, keep the best by accuracy) plus `extra`."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out, num_train_epochs=args["epochs"], per_device_train_batch_size=args["batch_size"],
        per_device_eval_batch_size=args["batch_size"], eval_strategy="epoch", logging_steps=50,
        save_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="eval_accuracy",
        report_to=[], learning_rate=args["lr"], seed=args["seed"], **extra,
    )


def run_reference(splits, model_name: str, frozen_layers: int, args: dict) -> dict:
    """The notebook's cells with its names, parameterised by model, data and the shared settings."""
    import torch
    from torch.utils.data import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, set_seed

    import freezetune.models.mean_pool  # noqa: F401  lets the Auto classes load the builtin model's folder
    from freezetune.models import resolve_model

    started = time.perf_counter()
    source = resolve_model(model_name)
    tokenizer = AutoTokenizer.from_pretrained(source)

    class BertDataset(Dataset):
        def __init__(self, texts, labels):
            self.encodings = tokenizer(texts, truncation=True, padding=True, max_length=args["max_length"])
            self.labels = torch.tensor(labels)

        def __getitem__(self, idx):
            item = {key: torch.tensor(val[idx]) for key, val in self.encodings.items()}
            item["labels"] = self.labels[idx]
            return item

        def __len__(self):
            return len(self.labels)

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        return scores(labels, logits.argmax(axis=-1))

    dataset = {name: BertDataset(frame["text"].tolist(), frame["label"].tolist())
               for name, frame in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))}
    set_seed(args["seed"])  # not in the notebook; the same head initialisation as freezetune's run
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(splits.label_names))
    for name, param in model.base_model.named_parameters():  # the notebook's loop (model.bert there)
        if name.startswith("encoder.layer.") and int(name.split(".")[2]) < frozen_layers:
            param.requires_grad = False
    with tempfile.TemporaryDirectory() as out:
        training_args = notebook_training_args(out, args)
        trainer = Trainer(model=model, args=training_args, train_dataset=dataset["train"],
                          eval_dataset=dataset["validation"], compute_metrics=compute_metrics)
        trainer.train()
        predicted = trainer.predict(dataset["test"])
    return {"seconds": time.perf_counter() - started, "epochs": args["epochs"], "peak_memory_mb": peak_memory_mb(),
            **_test_scores(predicted)}


# --------------------------------------------------------------------------- (t) the tuned Trainer


def run_tuned_trainer(splits, model_name: str, strategy: str, args: dict) -> dict:
    """The notebook's Trainer as an informed user runs it: rows tokenized unpadded and padded per batch
    (DataCollatorWithPadding), length-grouped batches, bf16 autocast where native, and the strategy's exact
    frozen set (the bottom layers, plus the embeddings where the strategy freezes them; everything but the head
    for `head`). Evaluation, checkpointing and best-model selection as in the notebook."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, set_seed

    import freezetune.models.mean_pool  # noqa: F401  lets the Auto classes load the builtin model's folder
    from freezetune.models import resolve_model
    from freezetune.precision import cpu_has_native_bf16

    started = time.perf_counter()
    source = resolve_model(model_name)
    tokenizer = AutoTokenizer.from_pretrained(source)

    def rows(frame):
        encodings = tokenizer(frame["text"].tolist(), truncation=True, max_length=args["max_length"])
        return [{**{k: v[i] for k, v in encodings.items()}, "labels": label} for i, label in enumerate(frame["label"])]

    def compute_metrics(eval_pred):
        logits, labels = eval_pred
        return scores(labels, logits.argmax(axis=-1))

    dataset = {name: rows(getattr(splits, name)) for name in ("train", "validation", "test")}
    set_seed(args["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(splits.label_names))
    layers, embeddings = _tuned_frozen_set(strategy, model.config.num_hidden_layers)
    for name, param in model.base_model.named_parameters():
        in_layer = name.startswith("encoder.layer.") and int(name.split(".")[2]) < layers
        if in_layer or (embeddings and name.startswith("embeddings.")) or strategy == "head":
            param.requires_grad = False
    bf16 = cpu_has_native_bf16()
    with tempfile.TemporaryDirectory() as out:
        training_args = notebook_training_args(  # plus the informed user's flags
            out, args, bf16=bf16, use_cpu=not torch.cuda.is_available(), train_sampling_strategy="group_by_length")
        trainer = Trainer(model=model, args=training_args, train_dataset=dataset["train"],
                          eval_dataset=dataset["validation"], compute_metrics=compute_metrics,
                          data_collator=DataCollatorWithPadding(tokenizer))
        trainer.train()
        predicted = trainer.predict(dataset["test"])
    return {"seconds": time.perf_counter() - started, "epochs": args["epochs"], "peak_memory_mb": peak_memory_mb(),
            "precision": "bf16" if bf16 else "fp32", **_test_scores(predicted)}


def _tuned_frozen_set(strategy: str, layers: int) -> tuple[int, bool]:
    """(bottom layers frozen, embeddings frozen) of a STRATEGIES name, for a plain requires_grad loop."""
    return {"full": (0, False), "freeze6": (6, False), "freeze6+emb": (6, True), "head": (layers, True)}[strategy]


# --------------------------------------------------------------------------- (b) freezetune


def run_freezetune(splits, model_name: str, strategy: str, args: dict, output_dir: str, overrides: dict) -> dict:
    from freezetune import TrainConfig
    from freezetune.training import train

    config = TrainConfig(
        output_dir=output_dir, model=model_name, data=args["data"], strategy=strategy,
        epochs=args["epochs"], batch_size=args["batch_size"], eval_batch_size=args["batch_size"], lr=args["lr"],
        max_length=args["max_length"], seed=args["seed"], overwrite=True, **overrides,
    )
    started = time.perf_counter()
    metrics = train(config, splits=splits)
    return {"seconds": time.perf_counter() - started, "epochs": len(metrics["epochs"]), "peak_memory_mb": peak_memory_mb(),
            "train_seconds": metrics["train_seconds"], "precision": metrics["precision"],
            "cached_layers": metrics["cached_layers"], **{m: metrics["evaluation"][m] for m in ("accuracy", "macro_f1")}}


# --------------------------------------------------------------------------- prediction


def run_predict(model_dir: str, splits, batch_size: int, work_dir: str) -> list[dict]:
    """Samples/s and accuracy on the test texts for each way of predicting with the same trained model."""
    from transformers import pipeline

    import freezetune.models.mean_pool  # noqa: F401  lets pipeline() load a builtin-model folder
    from freezetune.inference.export import export_onnx
    from freezetune.inference.onnx_predict import OnnxPredictor
    from freezetune.inference.predict import Predictor, trained_max_length

    texts, labels = splits.test["text"].tolist(), splits.test["label"].tolist()
    exported = str(export_onnx(model_dir, str(Path(work_dir) / "onnx"), int8=True, overwrite=True))
    reference = pipeline("text-classification", model=model_dir)
    label_ids = {name: i for i, name in enumerate(splits.label_names)}
    kwargs = {"batch_size": batch_size, "truncation": True, "max_length": trained_max_length(model_dir)}
    auto = Predictor(model_dir, batch_size)  # bf16 where native (the default), else fp32: then one row
    backends = {
        "pipeline (reference)": lambda t: [label_ids[r["label"]] for r in reference(t, **kwargs)],
        "freezetune torch fp32": Predictor(model_dir, batch_size, precision="fp32").probabilities,
        f"freezetune torch {auto.precision}": auto.probabilities,
        "onnx fp32": OnnxPredictor(exported, batch_size).probabilities,
        "onnx int8": OnnxPredictor(exported, batch_size, int8=True).probabilities,
    }
    rows, predictions = [], {}
    for name, predict in backends.items():
        predict(texts[:batch_size])  # warm-up: lazy initialisation, thread pools
        started = time.perf_counter()
        out = np.asarray(predict(texts))
        seconds = time.perf_counter() - started
        predictions[name] = out.argmax(axis=-1) if out.ndim == 2 else out
        rows.append({"backend": name, "samples_per_second": len(texts) / seconds, **scores(labels, predictions[name])})
    for row in rows:  # how often each backend gives the float32 model's label (ONNX int8 parity on real data)
        row["agreement_with_torch"] = float(np.mean(predictions[row["backend"]] == predictions["freezetune torch fp32"]))
    return rows


# --------------------------------------------------------------------------- FLOPs and the machine


def matmul_peak_flops(dtype: str = "float32", device: str = "cpu", repeats: int = 5) -> float:
    """This machine's matmul FLOP/s in `dtype` on `device`: the best of a few n x n products (n = 2048 on a CPU,
    8192 on a GPU, where a smaller one does not fill the chip)."""
    import torch

    n = 8192 if device == "cuda" else 2048
    a, b = (torch.randn(n, n, dtype=getattr(torch, dtype), device=device) for _ in range(2))
    torch.matmul(a, b)
    best = min(_timed(lambda: torch.matmul(a, b), device) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn, device: str = "cpu") -> float:
    """Seconds `fn` takes, waiting for a GPU's queued work on both sides."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def token_stats(tokenizer, frame, max_length: int) -> dict:
    """Token counts of a split: real lengths (freezetune pads per length-grouped batch) and the
    whole-split padded length (the notebook pads everything to the longest row)."""
    lengths = np.array([len(ids) for ids in tokenizer(frame["text"].tolist(), truncation=True, max_length=max_length)["input_ids"]])
    return {"rows": len(lengths), "tokens": int(lengths.sum()), "squares": int((lengths**2).sum()), "padded_length": int(lengths.max())}


def layer_flops(config, tokens: int, squares: int) -> float:
    """Forward FLOPs of one encoder layer over `tokens` tokens (`squares` = sum of sequence length squared):
    2 * (4h^2 + 2h*ffn) per token for the projections and FFN, plus 4h * T per token for attention."""
    h, ffn = config.hidden_size, config.intermediate_size
    return 2 * (4 * h * h + 2 * h * ffn) * tokens + 4 * h * squares


def run_flops(config, stats: dict, frozen_layers: int, embeddings_trainable: bool, padded: bool, epochs: int,
              cached: bool = False) -> float:
    """Training FLOPs of a run: trained layers fwd+bwd (3x fwd); frozen layers fwd (1x), or 2x when the
    backward pass must go through them to reach trainable embeddings; plus the forward of each evaluation."""
    def split_flops(split):
        s = stats[split]
        if padded:
            return layer_flops(config, s["rows"] * s["padded_length"], s["rows"] * s["padded_length"] ** 2)
        return layer_flops(config, s["tokens"], s["squares"])

    layers = config.num_hidden_layers
    frozen = min(frozen_layers, layers)
    if cached:  # freezetune's prefix cache: the frozen layers run forward once, over train and validation
        top = layers - frozen
        once = frozen * (split_flops("train") + split_flops("validation"))
        return once + epochs * (3 * top * split_flops("train") + top * split_flops("validation")) + layers * split_flops("test")
    train_multiplier = 3 * (layers - frozen) + (2 if embeddings_trainable else 1) * frozen
    evaluation = layers * (epochs * split_flops("validation") + split_flops("test"))
    return epochs * train_multiplier * split_flops("train") + evaluation


def machine(peaks: dict) -> dict:
    import onnxruntime
    import torch
    import transformers

    from freezetune.precision import cpu_has_native_bf16

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), platform.processor())
    return {"cpu": model, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "native_bf16": cpu_has_native_bf16(), "torch": torch.__version__, "transformers": transformers.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat(), **{f"matmul_peak_gflops_{k}": v / 1e9 for k, v in peaks.items()}}


# --------------------------------------------------------------------------- the run and its report


def load_data(args):
    from freezetune import load_splits

    splits = load_splits(args.data, args.text_column, args.label_column, args.seed)
    if args.quick:
        sample = lambda frame, n: frame.sample(min(n, len(frame)), random_state=args.seed)  # noqa: E731
        splits.train, splits.validation = sample(splits.train, QUICK_ROWS["train"]), sample(splits.validation, QUICK_ROWS["validation"])
        splits.test = sample(splits.test if splits.test is not None else splits.validation, QUICK_ROWS["test"])
    elif splits.test is None:
        splits.test = splits.validation
    return splits


def reference_layers(strategy: str, layers: int) -> int:
    """The notebook's freezing loop that each strategy is compared against: freeze6 (embeddings trainable)
    for both freeze6 variants, all layers for head, none for full."""
    return {"full": 0, "freeze6": 6, "freeze6+emb": 6, "head": layers}[strategy]


def ablations(embeddings_frozen: bool) -> dict:
    """The shortcuts this strategy uses, each to be turned off once: compact embeddings only train where the
    embeddings do, the prefix cache only exists where they are frozen."""
    skip = "no compact embeddings" if embeddings_frozen else "no prefix cache"
    return {name: overrides for name, overrides in ABLATIONS.items() if name != skip}


def repeated(repeats: int, fn, *args) -> dict:
    """`repeats` runs of fn, each in a fresh process: the run with the median wall time, all times listed."""
    runs = sorted((in_fresh_process(fn, *args) for _ in range(repeats)), key=lambda run: run["seconds"])
    return {**runs[(len(runs) - 1) // 2], "seconds_of_repeats": [run["seconds"] for run in runs]}


def benchmark(args) -> dict:
    from transformers import AutoConfig

    import freezetune.models.mean_pool  # noqa: F401  registers the builtin model's config type
    from freezetune.models import load_tokenizer, resolve_model
    from freezetune.strategies import HeadOnly, parse_strategy

    splits = load_data(args)
    config = AutoConfig.from_pretrained(resolve_model(args.model))
    tokenizer = load_tokenizer(args.model)
    stats = {name: token_stats(tokenizer, getattr(splits, name), args.max_length) for name in ("train", "validation", "test")}
    peaks = {"fp32": matmul_peak_flops("float32"), "bf16": matmul_peak_flops("bfloat16")}
    shared = {k: getattr(args, k) for k in ("data", "epochs", "batch_size", "lr", "max_length", "seed")}
    print(f"[speed] train {len(splits.train)}, validation {len(splits.validation)}, test {len(splits.test)} rows; "
          f"matmul peak fp32 {peaks['fp32'] / 1e9:.1f}, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s; {args.repeats} run(s) each",
          file=sys.stderr)

    def with_flops(run, frozen, embeddings_trainable, padded):
        run["flops"] = run_flops(config, stats, frozen, embeddings_trainable, padded, run["epochs"], run.get("cached_layers", 0) > 0)
        return run

    references, rows, ablation_rows = {}, [], []
    with tempfile.TemporaryDirectory() as work:
        for strategy in args.strategies:
            parsed = parse_strategy(strategy)
            frozen = config.num_hidden_layers if isinstance(parsed, HeadOnly) else parsed.frozen_bottom()
            embeddings_frozen = isinstance(parsed, HeadOnly) or "emb" in parsed.spec().split("+")
            frozen_ref = reference_layers(strategy, config.num_hidden_layers)
            if not args.skip_reference and frozen_ref not in references:
                print(f"[speed] (a) reference, {frozen_ref} layers frozen", file=sys.stderr)
                run = repeated(args.repeats, run_reference, splits, args.model, frozen_ref, shared)
                references[frozen_ref] = with_flops(run, frozen_ref, embeddings_trainable=True, padded=True)
            tuned = None
            if not args.skip_tuned:
                print(f"[speed] (t) tuned Trainer, {strategy}", file=sys.stderr)
                tuned = with_flops(repeated(args.repeats, run_tuned_trainer, splits, args.model, strategy, shared),
                                   frozen, not embeddings_frozen, padded=False)
            print(f"[speed] (b) freezetune {strategy}", file=sys.stderr)
            run = repeated(args.repeats, run_freezetune, splits, args.model, strategy, shared, str(Path(work) / strategy), {})
            rows.append({"strategy": strategy, "reference_frozen_layers": frozen_ref, "reference": references.get(frozen_ref),
                         "tuned": tuned, "freezetune": with_flops(run, frozen, not embeddings_frozen, padded=False)})
            for name, overrides in (ablations(embeddings_frozen) if args.ablation else {}).items():
                print(f"[speed] (b) freezetune {strategy}, {name}", file=sys.stderr)
                variant = repeated(args.repeats, run_freezetune, splits, args.model, strategy, shared,
                                   str(Path(work) / "ablation"), overrides)
                ablation_rows.append({"strategy": strategy, "variant": name, "overrides": overrides,
                                      "freezetune": with_flops(variant, frozen, not embeddings_frozen, padded=False)})
        for row in rows + ablation_rows:
            for run in (row.get("reference"), row.get("tuned"), row["freezetune"]):
                if run:
                    run.update(_rates(run, len(splits.train), peaks))
        predicted = next((r["strategy"] for r in rows if r["strategy"] in ("full", "head")), rows[0]["strategy"])
        print(f"[speed] prediction with the freezetune {predicted} model", file=sys.stderr)
        predict = in_fresh_process(run_predict, str(Path(work) / predicted), splits, args.predict_batch_size, work)
    return {"machine": machine(peaks), "settings": {**shared, "model": args.model, "quick": args.quick, "repeats": args.repeats,
            "rows": {k: v["rows"] for k, v in stats.items()}, "predict_batch_size": args.predict_batch_size},
            "token_stats": stats, "training": rows, "ablation": ablation_rows, "predict_model": predicted, "predict": predict}


def _rates(run: dict, train_rows: int, peaks: dict) -> dict:
    """Per-epoch time, throughput, and FLOP/s as a share of the peak of the precision the run computed in."""
    peak = peaks[run.get("precision", "fp32")]
    return {"seconds_per_epoch": run["seconds"] / run["epochs"], "train_samples_per_second": train_rows * run["epochs"] / run["seconds"],
            "gflops_per_second": run["flops"] / run["seconds"] / 1e9, "fraction_of_peak": run["flops"] / run["seconds"] / peak}


def _ratio(run: dict, reference: dict | None) -> str:
    return f"{run['train_samples_per_second'] / reference['train_samples_per_second']:.2f}x" if reference else ""


def _run_cells(run: dict, *ratios: str) -> str:
    return (f"{run['seconds_per_epoch']:.1f} | {run['train_samples_per_second']:.1f} | {' | '.join(ratios)} | "
            f"{run.get('precision', 'fp32')} | "
            f"{run['accuracy']:.4f} | {run['macro_f1']:.4f} | {run['peak_memory_mb']:.0f} | {run['gflops_per_second']:.1f} | "
            f"{run['fraction_of_peak']:.1%} |")


def markdown(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    median = f"median of {s['repeats']} runs" if s["repeats"] > 1 else "one run"
    lines = [
        f"# freezetune speed benchmark ({'quick' if s['quick'] else 'full'}, {m['date']})", "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} ({m['torch_threads']} threads), "
        f"transformers {m['transformers']}, onnxruntime {m['onnxruntime']}, Python {m['python']}; "
        f"matmul peak float32 {m['matmul_peak_gflops_fp32']:.1f}, bfloat16 {m['matmul_peak_gflops_bf16']:.1f} GFLOP/s "
        f"(native bf16: {'yes' if m['native_bf16'] else 'no'}).", "",
        f"Model `{s['model']}`, data `{s['data']}` (train/validation/test rows {s['rows']['train']}/{s['rows']['validation']}/"
        f"{s['rows']['test']}), max length {s['max_length']}, batch size {s['batch_size']}, lr {s['lr']}, "
        f"epochs {s['epochs']}, seed {s['seed']}. Times: {median}. Accuracy and macro-F1 on test, best epoch by "
        "validation accuracy. \"of peak\": of the matmul peak of the run's precision.", "",
        "## Training: (a) the notebook's pipeline, (t) a tuned Trainer, (b) freezetune", "",
        "Speed-ups are whole runs (command to saved model and test score) as train samples/s ratios.", "",
        "| strategy | run | s/epoch | train samples/s | (b)/(a) | (b)/(t) | precision | accuracy | macro-F1 | peak MB "
        "| GFLOP/s | of peak |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["training"]:
        ref, tuned, ft = row["reference"], row.get("tuned"), row["freezetune"]
        if ref:
            lines.append(f"| {row['strategy']} | (a) notebook, {row['reference_frozen_layers']} layers frozen | {_run_cells(ref, '', '')}")
        if tuned:
            lines.append(f"| {row['strategy']} | (t) tuned Trainer | {_run_cells(tuned, '', '')}")
        lines.append(f"| {row['strategy']} | (b) freezetune | {_run_cells(ft, _ratio(ft, ref), _ratio(ft, tuned))}")
    if result["ablation"]:
        whole = {row["strategy"]: row["freezetune"] for row in result["training"]}
        lines += ["", "## Ablation: freezetune with one shortcut turned off", "",
                  "| strategy | turned off | s/epoch | train samples/s | all on is faster by | precision | accuracy | macro-F1 |",
                  "|---|---|---:|---:|---:|---|---:|---:|"]
        for row in result["ablation"]:
            run, base = row["freezetune"], whole[row["strategy"]]
            lines.append(f"| {row['strategy']} | {row['variant']} | {run['seconds_per_epoch']:.1f} | "
                         f"{run['train_samples_per_second']:.1f} | "
                         f"{base['train_samples_per_second'] / run['train_samples_per_second']:.2f}x | {run['precision']} | "
                         f"{run['accuracy']:.4f} | {run['macro_f1']:.4f} |")
    lines += ["", f"## Prediction (test texts, the freezetune `{result['predict_model']}` model, batch size {s['predict_batch_size']})", "",
              "| backend | samples/s | accuracy | macro-F1 | same label as torch fp32 |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['backend']} | {r['samples_per_second']:.1f} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
              f"{r['agreement_with_torch']:.1%} |" for r in result["predict"]]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="builtin:multilingual-e5-small")
    p.add_argument("--data", default="builtin:inews")
    p.add_argument("--text-column", default="sentence")
    p.add_argument("--label-column", default="label")
    p.add_argument("--epochs", type=int, help="default: 3, or 1 with --quick")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--predict-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--max-length", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated, of: {', '.join(STRATEGIES)}")
    p.add_argument("--quick", action="store_true", help=f"subsample to {QUICK_ROWS} rows, 1 epoch")
    p.add_argument("--skip-reference", action="store_true", help="skip the notebook pipeline (a)")
    p.add_argument("--skip-tuned", action="store_true", help="skip the tuned Trainer (t)")
    p.add_argument("--ablation", action="store_true", help="also run freezetune with each shortcut turned off in turn")
    p.add_argument("--repeats", type=int, default=1, help="runs of each training; the median time is reported")
    p.add_argument("--output", help="results path without suffix (default benchmarks/results/speed-<quick|full>-<date>)")
    args = p.parse_args(argv)
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown or not args.strategies:
        p.error(f"--strategies: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(STRATEGIES)}")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.epochs = args.epochs or (1 if args.quick else 3)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    stem = Path(args.output or Path(__file__).parent / "results" / f"speed-{'quick' if args.quick else 'full'}-{datetime.date.today()}")
    result = benchmark(args)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    report = markdown(result)
    stem.with_suffix(".md").write_text(report, encoding="utf-8")
    print(report)
    print(f"wrote {stem}.md and {stem}.json", file=sys.stderr)


if __name__ == "__main__":
    main()
