"""Training throughput and model FLOP utilisation (MFU) at a model's own shape, on this machine's CPU or GPU.

    python benchmarks/mfu.py                                   # bert-base-chinese, random init, CPU, full and freeze6
    python benchmarks/mfu.py --levers                          # each lever of the training step in turn
    python benchmarks/mfu.py --device cuda --levers            # the same on a GPU

The default is the notebook's shape: `bert-base-chinese` (12 layers, hidden 768, built from its config with random
weights, which works offline: only the shipped vocabulary is needed), max length 30, batch 16, real
`builtin:inews` titles in length-grouped batches (the Trainer's sampler). A step is what `freezetune train` runs:
forward and loss under the run's autocast, backward, gradient clipping at 1.0, the optimizer step, with the
parameters the strategy trains and the optimizer `freezetune train` builds (`training.run.make_optimizer`).

MFU is the model's FLOPs per second over the machine's measured bf16 (or fp32) matmul peak. Model FLOPs count
the real tokens of each batch (padding is waste, not work) with the formula of speed.py (`layer_flops`): a
trained layer 3x its forward, a frozen layer the backward must cross to reach the trainable embeddings 2x, a
frozen layer below everything that trains 1x. That fits full, freezeN, topN (whole layers train); LoRA or BitFit
layers are counted as trained, which overstates their MFU. The prefix cache is not used here: for the default
strategies (full, freeze6: the embeddings train) `train` has none either.

`--levers` measures each way to make the step faster, one at a time, against what `train` does today:
the optimizer's implementation (for-loop, foreach, fused), the attention kernel (eager, sdpa), `torch.compile`,
padding batches to a multiple of 8, and the compact word embeddings; and what the weights' average (`--ema`)
adds to it. Then the optimizer step alone for each AdamW kernel and the average's update alone, taking turns
(rounds), which shows their share of the step without the step's noise.
Rows of one run differ by up to ~10% between identical settings on a shared 2-core VM: read a lever's row as a
gain only beyond that. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import layer_flops, matmul_peak_flops, sync  # noqa: E402  the benchmarks' one FLOP formula and peak

DEFAULT_MODEL = "bert-base-chinese"


# Variant.optimizer -> make_optimizer's kernel arguments ({}: what `train` chooses)
OPTIMIZERS = {"default": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


@dataclass(frozen=True)
class Variant:
    """One way of running the training step; `baseline()` is what `freezetune train` does."""

    name: str
    optimizer: str = "default"  # a key of OPTIMIZERS
    attention: str = "sdpa"
    compile: bool = False
    pad_multiple: int | None = None
    compact_embeddings: bool = True
    ema: float = 0.0  # --ema: the weights' average updated after each optimizer step


def variants(levers: bool) -> list[Variant]:
    base = Variant("freezetune train")
    if not levers:
        return [base]
    return [base,
            replace(base, name="optimizer for-loop", optimizer="for-loop"),
            replace(base, name="optimizer foreach", optimizer="foreach"),
            replace(base, name="optimizer fused", optimizer="fused"),
            replace(base, name="eager attention", attention="eager"),
            replace(base, name="pad to multiple of 8", pad_multiple=8),
            replace(base, name="no compact embeddings", compact_embeddings=False),
            replace(base, name="weight average (--ema)", ema=0.995),
            replace(base, name="torch.compile", compile=True, pad_multiple=8)]


# --------------------------------------------------------------------------- the machine's peak


# --------------------------------------------------------------------------- data and model


def length_grouped_batches(features: list[dict], batch_size: int, steps: int, seed: int) -> list[list[dict]]:
    """`steps` batches of features in the order the Trainer's length-grouped sampler gives them."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    generator = torch.Generator().manual_seed(seed)
    sampler = LengthGroupedSampler(batch_size, lengths=[len(f["input_ids"]) for f in features], generator=generator)
    order = list(sampler)
    batches = [[features[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    batches = [b for b in batches if len(b) == batch_size]
    return (batches * (steps // len(batches) + 1))[:steps]


def build(args, strategy_name: str, variant: Variant):
    from freezetune.models import load_classifier
    from freezetune.strategies import TrainPlan, parse_strategy, prepare

    torch.manual_seed(args.seed)
    model = load_classifier(args.model, ["a", "b", "c"], init=args.init)
    model.config._attn_implementation = variant.attention  # the attention kernel every layer dispatches to
    model.to(args.device).train()
    strategy = parse_strategy(strategy_name)
    prepare(strategy, model, TrainPlan(epochs=1, steps_per_epoch=args.steps))
    return model, strategy


def step_flops(config, batch: list[dict], frozen_layers: int, embeddings_train: bool) -> float:
    """Model FLOPs of one training step over the batch's real tokens."""
    lengths = [len(f["input_ids"]) for f in batch]
    forward = layer_flops(config, sum(lengths), sum(n * n for n in lengths))
    layers = config.num_hidden_layers
    return forward * (3 * (layers - frozen_layers) + (2 if embeddings_train else 1) * frozen_layers)


def _frozen_bottom(model) -> int:
    """Bottom encoder layers with no trainable parameter."""
    from freezetune.models.anatomy import anatomy

    n = 0
    for block in anatomy(model).blocks:
        if any(p.requires_grad for p in block.parameters()):
            break
        n += 1
    return n


# --------------------------------------------------------------------------- the measurement


def measure(args, strategy_name: str, variant: Variant, features: list[dict], tokenizer, peak: float) -> dict:
    from transformers import DataCollatorWithPadding

    from freezetune.precision import autocast
    from freezetune.training.compact_embedding import compact_word_embeddings
    from freezetune.training.ema import WeightAverage
    from freezetune.training.run import make_optimizer

    model, strategy = build(args, strategy_name, variant)
    collate = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=variant.pad_multiple)
    batches = length_grouped_batches(features, args.batch_size, args.warmup + args.steps, args.seed)
    tensors = [{k: v.to(args.device) for k, v in collate(b).items()} for b in batches]
    compact = compact_word_embeddings(model, features, 0.0) if variant.compact_embeddings else contextlib.nullcontext()
    with compact:
        optimizer, params = make_optimizer(model, strategy, args.lr, args.precision, **OPTIMIZERS[variant.optimizer])
        forward = torch.compile(model, dynamic=True) if variant.compile else model
        average = WeightAverage(variant.ema, params) if variant.ema else None
        if average:
            average.on_train_begin(None, None, None)

        def step(batch):
            with autocast(args.precision, args.device):
                loss = forward(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # the Trainer's max_grad_norm
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if average:
                average.on_step_end(None, None, None)

        for batch in tensors[: args.warmup]:
            step(batch)
        seconds = []
        for batch in tensors[args.warmup :]:
            sync(args.device)
            started = time.perf_counter()
            step(batch)
            sync(args.device)
            seconds.append(time.perf_counter() - started)
    embeddings_train = any(p.requires_grad for p in model.base_model.embeddings.parameters())
    frozen = _frozen_bottom(model)
    flops = [step_flops(model.config, b, frozen, embeddings_train) for b in batches[args.warmup :]]
    total_seconds, total_flops = sum(seconds), sum(flops)
    real = sum(len(f["input_ids"]) for b in batches[args.warmup :] for f in b)
    padded = sum(t["input_ids"].numel() for t in tensors[args.warmup :])
    return {"strategy": strategy.spec(), "variant": variant.name, "optimizer": variant.optimizer,
            "attention": variant.attention, "compile": variant.compile, "pad_multiple": variant.pad_multiple,
            "compact_embeddings": variant.compact_embeddings, "steps": len(seconds),
            "median_step_ms": 1000 * statistics.median(seconds),
            "samples_per_second": args.batch_size * len(seconds) / total_seconds,
            "model_tflops_per_second": total_flops / total_seconds / 1e12, "mfu": total_flops / total_seconds / peak,
            "padding_share": 1 - real / padded}


def optimizer_step_ms(args, strategy_name: str, features: list[dict], rounds: int = 20) -> dict:
    """Median ms of one AdamW step alone per kernel over the strategy's trained parameters (random gradients),
    and of one update of the weights' average (--ema), taking turns so that a slower or faster stretch of the
    machine hits them all alike."""
    from freezetune.training.compact_embedding import compact_word_embeddings
    from freezetune.training.ema import WeightAverage
    from freezetune.training.run import make_optimizer

    model, strategy = build(args, strategy_name, Variant("optimizer"))
    with compact_word_embeddings(model, features, 0.0):
        kernels = {name: kw for name, kw in OPTIMIZERS.items() if kw}
        optimizers = {name: make_optimizer(model, strategy, args.lr, args.precision, **kw)[0] for name, kw in kernels.items()}
        params = [p for group in next(iter(optimizers.values())).param_groups for p in group["params"]]
        for p in params:
            p.grad = torch.randn_like(p)
        average = WeightAverage(0.995, params)
        average.on_train_begin(None, None, None)
        updates = {**{name: optimizer.step for name, optimizer in optimizers.items()},
                   "ema": lambda: average.on_step_end(None, None, None)}
        times = {name: [] for name in updates}
        for _ in range(rounds):
            for name, update in updates.items():
                sync(args.device)
                started = time.perf_counter()
                update()
                sync(args.device)
                times[name].append(time.perf_counter() - started)
    return {"strategy": strategy.spec(), "trained_params": sum(p.numel() for p in params),
            **{name: 1000 * statistics.median(t[2:]) for name, t in times.items()}}


def run(args) -> dict:
    from freezetune import load_splits
    from freezetune.models import load_tokenizer
    from freezetune.precision import resolve_precision
    from freezetune.training.run import tokenize_frame

    args.precision = resolve_precision(args.precision, args.device)
    peak = matmul_peak_flops({"bf16": "bfloat16", "fp16": "float16"}.get(args.precision, "float32"), args.device)
    tokenizer = load_tokenizer(args.model)
    features = tokenize_frame(tokenizer, load_splits(args.data).train, args.max_length)
    rows = []
    for strategy in args.strategies.split(","):
        for variant in variants(args.levers):
            row = measure(args, strategy, variant, features, tokenizer, peak)
            print(f"{row['strategy']:>8} | {row['variant']:<24} | {row['median_step_ms']:8.1f} ms/step | "
                  f"{row['samples_per_second']:7.1f} samples/s | {row['model_tflops_per_second'] * 1000:8.1f} GFLOP/s | "
                  f"MFU {row['mfu']:.1%}", flush=True)
            rows.append(row)
    optimizer_steps = [optimizer_step_ms(args, s, features) for s in args.strategies.split(",")] if args.levers else []
    return {"machine": machine(args.device), "peak_tflops": peak / 1e12, "optimizer_steps": optimizer_steps, "settings": {
        k: getattr(args, k) for k in ("model", "init", "data", "device", "precision", "max_length", "batch_size", "lr",
                                       "steps", "warmup", "seed")}, "rows": rows}


def machine(device: str) -> str:
    from machine import describe_machine

    return describe_machine() + (f"; measured on {device}")


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Training step at {s['model']} shape ({s['init']} init), {s['device']}, {s['precision']}", "",
             f"{result['machine']}. Max length {s['max_length']}, batch {s['batch_size']}, {s['steps']} timed steps after "
             f"{s['warmup']} warm-up steps, real `{s['data']}` titles in length-grouped batches. Matmul peak "
             f"({s['precision']}, measured): {result['peak_tflops'] * 1000:.1f} GFLOP/s. MFU: model FLOPs of the real "
             "tokens per second over that peak.", "",
             "| strategy | variant | ms/step (median) | samples/s | model GFLOP/s | MFU | padding |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['strategy']} | {r['variant']} | {r['median_step_ms']:.1f} | {r['samples_per_second']:.1f} | "
                     f"{r['model_tflops_per_second'] * 1000:.1f} | {r['mfu']:.1%} | {r['padding_share']:.1%} |")
    if result.get("optimizer_steps"):
        lines += ["", "The AdamW step alone per kernel, and one update of the weights' average (`--ema`), taking turns "
                  "(median ms over rounds, random gradients):", "",
                  "| strategy | trained parameters | for-loop | foreach | fused | average (--ema) |", "|---|---|---|---|---|---|"]
        lines += [f"| {o['strategy']} | {o['trained_params']:,} | {o['for-loop']:.1f} | {o['foreach']:.1f} | {o['fused']:.1f} | "
                  f"{o['ema']:.1f} |" for o in result["optimizer_steps"]]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--init", default="random", choices=("random", "pretrained"))
    parser.add_argument("--data", default="builtin:inews")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--strategies", default="full,freeze6")
    parser.add_argument("--max-length", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (torch.compile compiles here)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--levers", action="store_true", help="each lever of the step in turn")
    parser.add_argument("--output", help="write OUTPUT.md and OUTPUT.json")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    result = run(args)
    text = markdown(result)
    print(text)
    if args.output:
        Path(f"{args.output}.md").write_text(text, encoding="utf-8")
        Path(f"{args.output}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
