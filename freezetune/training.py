"""Fine-tune one model with one tuning strategy: the path every transformer run takes.

It extends nothing it does not need to: the HF `Trainer` brings the loop, checkpointing, mixed precision
and multi-GPU (launch with `torchrun` or `accelerate launch`). What is ours is the data, the freezing,
the metrics and an output folder that appears whole or not at all.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .data import LABEL, TEXT, Splits, load_splits
from .errors import UserError
from .metrics import SELECTION_METRICS, classification_report, summary_metrics
from .models import load_classifier, load_tokenizer
from .outputs import check_output_dir, staged_output_dir, write_json_atomic
from .tuning import apply_strategy, parse_strategy

METRICS_FILE, RUN_CONFIG_FILE, LOG_FILE = "metrics.json", "run_config.json", "train.log"


class RunLog:
    """Lines shown to the user as the run goes and kept for `train.log`."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, message: str) -> None:
        print(f"[freezetune] {message}", file=sys.stderr, flush=True)
        self.lines.append(message)


def validate_config(config: TrainConfig) -> None:
    if config.metric not in SELECTION_METRICS:
        raise UserError(f"--metric {config.metric!r} is not valid: use one of {', '.join(SELECTION_METRICS)}")
    for name in ("epochs", "batch_size", "eval_batch_size", "max_length"):
        if getattr(config, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    if not config.lr > 0:
        raise UserError(f"--lr must be positive, got {config.lr}")
    if config.early_stopping is not None and config.early_stopping < 1:
        raise UserError(f"--early-stopping must be at least 1 epoch, got {config.early_stopping}")
    parse_strategy(config.freeze, config.freeze_embeddings)


def tokenize_frame(tokenizer, frame, max_length: int):
    """A `datasets.Dataset` of unpadded token ids: the collator pads each batch to its own longest row."""
    import datasets

    dataset = datasets.Dataset.from_dict({TEXT: frame[TEXT].tolist(), "labels": frame[LABEL].tolist()})
    return dataset.map(
        lambda batch: tokenizer(batch[TEXT], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=[TEXT],
        desc="tokenizing",
    )


def _compute_metrics(eval_pred):
    logits, labels = eval_pred
    return summary_metrics(labels, np.asarray(logits).argmax(axis=-1))


def _epoch_rows(log_history: list[dict]) -> list[dict]:
    """One row per epoch from the Trainer's log: its epoch-level train loss and evaluation metrics."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        epoch = int(math.ceil(entry["epoch"] - 1e-6))
        row = rows.setdefault(epoch, {"epoch": epoch, "train_loss": None})
        if "loss" in entry:
            row["train_loss"] = entry["loss"]
        if "eval_loss" in entry:
            row.update(eval_loss=entry["eval_loss"], **{m: entry[f"eval_{m}"] for m in ("accuracy", "macro_f1", "weighted_f1")})
    return [row for _, row in sorted(rows.items()) if "eval_loss" in row]


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def train(config: TrainConfig, splits: Splits | None = None) -> dict:
    """Fine-tune `config.model` on `config.data`; write the model and reports to `config.output_dir`.

    Returns the contents of metrics.json. `splits` may be passed to reuse data already loaded (compare does).
    """
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

    validate_config(config)
    check_output_dir(config.output_dir, config.overwrite)  # fail before any slow work
    log = RunLog()
    if splits is None:
        splits = load_splits(config.data, config.text_column, config.label_column, config.seed, config.validation_fraction)
    for note in splits.notes:
        log(note)
    log(f"data: train {len(splits.train)}, validation {len(splits.validation)}"
        + (f", test {len(splits.test)}" if splits.test is not None else "") + f"; classes {splits.label_names}")

    strategy = parse_strategy(config.freeze, config.freeze_embeddings)
    set_seed(config.seed)  # before the model is built: the new head's initial weights depend on it
    tokenizer = load_tokenizer(config.model)
    model = load_classifier(config.model, splits.label_names)
    counts = apply_strategy(model, strategy)
    log(f"model {config.model}, strategy {strategy.name}: {counts['trainable_params']:,} trainable of "
        f"{counts['total_params']:,} parameters ({counts['trainable_params'] / counts['total_params']:.1%})")

    train_ds = tokenize_frame(tokenizer, splits.train, config.max_length)
    validation_ds = tokenize_frame(tokenizer, splits.validation, config.max_length)
    evaluation_name, evaluation_frame = splits.evaluation_split

    with staged_output_dir(config.output_dir, config.overwrite) as stage:
        args = TrainingArguments(
            output_dir=str(stage / "checkpoints"),
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            per_device_eval_batch_size=config.eval_batch_size,
            learning_rate=config.lr,
            seed=config.seed,
            eval_strategy="epoch",
            save_strategy="epoch",
            logging_strategy="epoch",  # so each logged train loss is that epoch's mean
            save_only_model=True,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model=config.metric,
            greater_is_better=True,
            # Batches of similar length waste less compute on padding (shuffled within mega-batches).
            train_sampling_strategy="group_by_length",
            dataloader_pin_memory=torch.cuda.is_available(),
            report_to=[],
        )
        callbacks = [EarlyStoppingCallback(config.early_stopping)] if config.early_stopping else []
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=validation_ds,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=_compute_metrics,
            callbacks=callbacks,
        )
        started = time.perf_counter()
        train_output = trainer.train()
        train_seconds = time.perf_counter() - started

        epochs = _epoch_rows(trainer.state.log_history)
        best = max(epochs, key=lambda row: row[config.metric])
        for row in epochs:
            log(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, validation loss {row['eval_loss']:.4f}, "
                f"accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f}" + ("  <- best" if row is best else ""))

        validation_preds = trainer.predict(validation_ds).predictions.argmax(axis=-1)
        if evaluation_name == "validation":
            evaluation_preds = validation_preds
        else:
            evaluation_preds = trainer.predict(tokenize_frame(tokenizer, evaluation_frame, config.max_length)).predictions.argmax(axis=-1)
        metrics = {
            "epochs": epochs,
            "best_epoch": best["epoch"],
            "selection_metric": config.metric,
            "label_names": splits.label_names,
            "validation": classification_report(splits.validation[LABEL], validation_preds, splits.label_names),
            "evaluation_split": evaluation_name,
            "evaluation": classification_report(evaluation_frame[LABEL], evaluation_preds, splits.label_names),
            "evaluation_predictions": evaluation_preds.tolist(),
            "strategy": strategy.name,
            **counts,
            "train_seconds": train_seconds,
            "train_samples_per_second": train_output.metrics.get("train_samples_per_second"),
            "peak_memory_mb": _peak_memory_mb(),
            "data_notes": splits.notes,
        }
        log(f"best epoch {best['epoch']} by validation {config.metric}; {evaluation_name}: "
            f"accuracy {metrics['evaluation']['accuracy']:.4f}, macro-F1 {metrics['evaluation']['macro_f1']:.4f}; "
            f"trained in {train_seconds:.1f}s")

        shutil.rmtree(stage / "checkpoints")
        trainer.save_model(str(stage))  # the best model (loaded at end) and the tokenizer, HF format
        write_json_atomic(stage / METRICS_FILE, metrics)
        write_json_atomic(stage / RUN_CONFIG_FILE, {**config.to_dict(), "strategy": strategy.name, "output_dir": str(Path(config.output_dir))})
        (stage / LOG_FILE).write_text(
            "\n".join(log.lines + ["", "trainer log history:"] + [json.dumps(e) for e in trainer.state.log_history]) + "\n",
            encoding="utf-8",
        )
    log(f"wrote {config.output_dir}")
    return metrics
