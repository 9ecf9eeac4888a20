"""Fine-tune one model with one tuning strategy: the path every transformer run takes.

It extends nothing it does not need to: the HF `Trainer` brings the loop, mixed precision and multi-GPU
(launch with `torchrun` or `accelerate launch`). What is ours is the data, the freezing and the exact
shortcuts it allows (prefix_cache, compact_embedding), the metrics, the best epoch kept in memory, and an
output folder that appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import tempfile
import time

import numpy as np
import torch
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, set_seed

from .compact_embedding import compact_word_embeddings
from .config import CLASS_WEIGHTS, TrainConfig
from .data import LABEL, TEXT, Splits, load_splits
from .errors import UserError
from .imbalance import class_weights, weighted_cross_entropy
from .inference import TorchClassifier
from .measure import peak_memory_mb
from .metrics import SELECTION_METRICS, classification_report, summary_metrics
from .modelcard import write_model_card
from .models import load_classifier, load_tokenizer
from .outputs import check_output_dir, staged_output_dir, write_json_atomic
from .precision import resolve_precision
from .prefix_cache import CachedPrefixDataset, cached_layers, collate_cached, encode_prefix, top_only
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
    resolve_precision(config.precision, _device_type())
    if config.class_weights not in CLASS_WEIGHTS:
        raise UserError(f"--class-weights {config.class_weights!r} is not valid: use one of {', '.join(CLASS_WEIGHTS)}")


def tokenize_frame(tokenizer, frame, max_length: int) -> list[dict]:
    """Unpadded token ids per example: the collator pads each batch only to its own longest row."""
    encoded = tokenizer(frame[TEXT].tolist(), truncation=True, max_length=max_length)
    return [{**{key: values[i] for key, values in encoded.items()}, "labels": int(label)}
            for i, label in enumerate(frame[LABEL])]


class BestEpochCallback(TrainerCallback):
    """Keeps the best epoch's weights in memory and stops after `patience` epochs without improvement.

    Only trainable parameters change, so they are all we copy: cheaper than the Trainer's checkpoint
    files, and it works while the model is cut down to its trainable top (see prefix_cache).
    """

    def __init__(self, metric: str, patience: int | None):
        self.metric, self.patience = metric, patience
        self.best_score, self.snapshot, self.stale = None, {}, 0

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        score = metrics[f"eval_{self.metric}"]
        if self.best_score is None or score > self.best_score:
            self.best_score, self.stale = score, 0
            self.snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        else:
            self.stale += 1
            control.should_training_stop = bool(self.patience and self.stale >= self.patience)

    @torch.no_grad()
    def restore_best(self, model) -> None:
        for name, param in model.named_parameters():
            if name in self.snapshot:
                param.copy_(self.snapshot[name])


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


def _device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def training_arguments(config: TrainConfig, precision: str, scratch_dir: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=scratch_dir,  # nothing is saved there: save_strategy="no"
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.lr,
        weight_decay=0.0,  # the Trainer's default, stated: compact_word_embeddings relies on it
        seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=_device_type() == "cpu",  # the Trainer allows bf16 without a GPU only when told it is on the CPU
        eval_strategy="epoch",
        logging_strategy="epoch",  # so each logged train loss is that epoch's mean
        save_strategy="no",  # BestEpochCallback keeps the best weights in memory instead
        # Batches of similar length waste less compute on padding (shuffled within mega-batches).
        train_sampling_strategy="group_by_length" if config.length_grouping else "random",
        dataloader_pin_memory=torch.cuda.is_available(),
        # Our examples hold exactly what the model takes (cached ones: `inputs_embeds`, which a model's
        # forward signature may only accept through **kwargs, so the Trainer would drop it).
        remove_unused_columns=False,
        report_to=[],
    )


def fit(model, tokenizer, strategy, config, precision, args, train_features, validation_features, best_epoch, log,
        loss_weights) -> tuple[Trainer, int]:
    """Train with the Trainer on the cheapest path `config` allows; returns the trainer and the number of cached layers.

    On return the model is whole again and holds the best epoch's weights.
    """
    with contextlib.ExitStack() as fast_paths:
        if config.compact_embeddings:
            fast_paths.enter_context(compact_word_embeddings(model, train_features, args.weight_decay))
        train_set, validation_set, collator = train_features, validation_features, DataCollatorWithPadding(tokenizer)
        n_cached = cached_layers(model, strategy) if config.prefix_cache else None
        if n_cached:
            log(f"embeddings and layers 0..{n_cached - 1} are frozen: computing their output once")
            train_set, validation_set = (
                CachedPrefixDataset(f, encode_prefix(model, f, n_cached, args.per_device_eval_batch_size, precision))
                for f in (train_features, validation_features)
            )
            collator = collate_cached
            fast_paths.enter_context(top_only(model, n_cached))
        trainer = Trainer(
            model=model, args=args, train_dataset=train_set, eval_dataset=validation_set,
            processing_class=tokenizer, data_collator=collator, compute_metrics=_compute_metrics,
            callbacks=[best_epoch],
            compute_loss_func=None if loss_weights is None else weighted_cross_entropy(loss_weights),
        )
        trainer.train()
        best_epoch.restore_best(model)
    return trainer, n_cached or 0


def train(config: TrainConfig, splits: Splits | None = None) -> dict:
    """Fine-tune `config.model` on `config.data`; write the model and reports to `config.output_dir`.

    Returns the contents of metrics.json. `splits` may be passed to reuse data already loaded (compare does).
    Under torchrun/accelerate every process trains; only the main one writes the output folder.
    """
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
    precision = resolve_precision(config.precision, _device_type())
    set_seed(config.seed)  # before the model is built: the new head's initial weights depend on it
    tokenizer = load_tokenizer(config.model)
    model = load_classifier(config.model, splits.label_names)
    counts = apply_strategy(model, strategy)
    log(f"model {config.model}, strategy {strategy.name}: {counts['trainable_params']:,} trainable of "
        f"{counts['total_params']:,} parameters ({counts['trainable_params'] / counts['total_params']:.1%}); "
        f"precision {precision}")

    loss_weights = class_weights(config.class_weights, splits.train[LABEL], len(splits.label_names))
    if loss_weights is not None:
        log("class weights (loss): " + ", ".join(f"{n} {w:.2f}" for n, w in zip(splits.label_names, loss_weights.tolist())))
    train_features = tokenize_frame(tokenizer, splits.train, config.max_length)
    validation_features = tokenize_frame(tokenizer, splits.validation, config.max_length)
    best_epoch = BestEpochCallback(config.metric, config.early_stopping)
    scratch = tempfile.mkdtemp(prefix="freezetune-trainer-")
    try:
        args = training_arguments(config, precision, scratch)
        started = time.perf_counter()
        with peak_memory_mb() as peak:
            trainer, n_cached = fit(model, tokenizer, strategy, config, precision, args, train_features, validation_features,
                                    best_epoch, log, loss_weights)
        train_seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    epochs = _epoch_rows(trainer.state.log_history)
    best = max(epochs, key=lambda row: row[config.metric])
    for row in epochs:
        log(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, validation loss {row['eval_loss']:.4f}, "
            f"accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f}" + ("  <- best" if row is best else ""))

    # Final predictions with the whole model, as any user of the saved folder gets them. (Not
    # `trainer.predict`: with length grouping the Trainer also shuffles evaluation batches.)
    evaluation_name, evaluation_frame = splits.evaluation_split
    classifier = TorchClassifier(model, tokenizer, config.eval_batch_size, config.max_length, precision)
    validation_preds = classifier.probabilities(splits.validation[TEXT].tolist()).argmax(axis=-1)
    evaluation_preds = validation_preds if evaluation_name == "validation" else \
        classifier.probabilities(evaluation_frame[TEXT].tolist()).argmax(axis=-1)
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
        "cached_layers": n_cached,
        "precision": precision,
        "class_weights": None if loss_weights is None else loss_weights.tolist(),
        "train_seconds": train_seconds,
        "train_samples_per_second": len(train_features) * len(epochs) / train_seconds,
        "peak_memory_mb": peak[0],
        "data_notes": splits.notes,
    }
    log(f"best epoch {best['epoch']} by validation {config.metric}; {evaluation_name}: "
        f"accuracy {metrics['evaluation']['accuracy']:.4f}, macro-F1 {metrics['evaluation']['macro_f1']:.4f}; "
        f"trained in {train_seconds:.1f}s")
    if args.should_save:  # the main process (the only one without torchrun)
        _write_output(config, strategy.name, trainer, metrics, log)
    return metrics


def _write_output(config: TrainConfig, strategy_name: str, trainer: Trainer, metrics: dict, log: RunLog) -> None:
    with staged_output_dir(config.output_dir, config.overwrite) as stage:
        trainer.save_model(str(stage))  # the best epoch's model and the tokenizer, HF format
        write_json_atomic(stage / METRICS_FILE, metrics)
        write_json_atomic(stage / RUN_CONFIG_FILE, {**config.to_dict(), "strategy": strategy_name})
        write_model_card(stage, metrics, {**config.to_dict(), "strategy": strategy_name})  # README.md
        history = [json.dumps(entry) for entry in trainer.state.log_history]
        (stage / LOG_FILE).write_text("\n".join(log.lines + ["", "trainer log history:", *history]) + "\n", encoding="utf-8")
    log(f"wrote {config.output_dir}")
