"""Where a training step's time goes: torch.profiler over a few steps of one strategy on the builtin model.

    python benchmarks/profile_step.py [--strategy full|freeze6+emb|lora|...] [--steps 20] [--precision auto|fp32|bf16]

Runs the same pieces `train` uses (compact word embeddings, its AdamW, autocast at the resolved precision; the
frozen-prefix cache is not involved: this profiles the layers that train) on real inews batches, and prints the
operators that take the most time.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse

import torch
from transformers import DataCollatorWithPadding

from freezetune import load_splits
from freezetune.models import load_classifier, load_tokenizer
from freezetune.precision import autocast, resolve_precision
from freezetune.strategies import TrainPlan, parameter_counts, parse_strategy, prepare
from freezetune.training.compact_embedding import compact_word_embeddings
from freezetune.training.run import make_optimizer, tokenize_frame

MODEL = "builtin:multilingual-e5-small"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", default="full", help="any training strategy, e.g. full, freeze6+emb, lora")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    precision = resolve_precision(args.precision, "cpu")

    splits = load_splits("builtin:inews")
    tokenizer = load_tokenizer(MODEL)
    model = load_classifier(MODEL, splits.label_names).train()
    strategy = parse_strategy(args.strategy)
    prepare(strategy, model, TrainPlan(epochs=1, steps_per_epoch=args.steps))
    counts = parameter_counts(model, strategy)
    features = tokenize_frame(tokenizer, splits.train, 30)
    collate = DataCollatorWithPadding(tokenizer)
    batches = [collate(features[i : i + args.batch_size]) for i in range(0, args.steps * args.batch_size, args.batch_size)]
    with compact_word_embeddings(model, features, weight_decay=0.0):
        optimizer, _ = make_optimizer(model, strategy, 5e-5, precision)  # train's AdamW (fused unless fp16)

        def step(batch):
            with autocast(precision, "cpu"):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        step(batches[0])  # warm-up
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for batch in batches[1:]:
                with torch.profiler.record_function("forward+backward+step"):
                    step(batch)
    print(f"strategy {strategy.spec()}: "
          f"{counts['trainable_params']:,} trainable parameters, {len(batches) - 1} steps of batch {args.batch_size}, {precision}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main()
