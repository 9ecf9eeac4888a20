"""Fine-tune one model with one tuning strategy: the path every transformer run takes.

`train_one` reads as its phases: `prepare` (every check, the data, the model, the strategy), `fit` (the HF
Trainer on the cheapest exact path the strategy allows), `evaluate` (final predictions with the whole
model, as a user of the saved folder gets them) and `write` (an output folder that appears whole or not at
all). The Trainer brings the loop, mixed precision and multi-device runs (`torchrun`, `accelerate launch`);
what is ours is the data, the strategy, the exact shortcuts (prefix_cache, compact_embedding), the metrics
and the best epoch kept in memory. `--lr auto` is a search over such runs (lr_search.py, above this module).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.special import softmax
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, set_seed

from ..config import TrainConfig
from ..data import LABEL, TEXT, Splits, load_splits
from ..errors import UserError
from ..inference.classifier import TorchClassifier
from ..layout import LOG_FILE, METRICS_FILE, RELIABILITY_FILE, RUN_CONFIG_FILE
from ..logs import captured, captured_lines
from ..losses import class_prior, class_weights, make_loss, parse_loss
from ..measure import peak_memory_mb
from ..metrics import classification_report, summary_metrics
from ..modelcard import write_model_card
from ..models import carry_licence_files, describe_model, load_classifier, load_tokenizer, match_tokenizer
from ..models.anatomy import anatomy
from ..outputs import check_not_input, check_output_dir, scratch_dir, staged_output_dir, write_json_atomic
from ..posthoc.calibration import reliability_diagram
from ..posthoc.decision import reports_by_rule
from ..posthoc.fit import PostHoc, fit_post_hoc
from ..posthoc.fold import check_foldable, fold_into_classifier
from ..precision import device_type, resolve_precision
from ..results import RunResult, rounded_probabilities
from ..strategies import Strategy, TrainPlan, check_fits, parameter_counts, parse_strategy
from ..strategies import prepare as prepare_strategy
from . import tracking
from .compact_embedding import compact_word_embeddings
from .distill import DistillTrainer, add_soft_targets, check_teachers
from .distributed import output_lock_on_main, refuse_unfollowable, world_size
from .ema import WeightAverage
from .prefix_cache import CachedPrefixDataset, cached_layers, collate_cached, encode_prefix, top_only
from .progress import training_progress
from .rdrop import RDropTrainer
from .resume import Checkpoints, data_fingerprint

log = logging.getLogger("freezetune")


@dataclass
class Run:
    """Everything `prepare` sets up; the later phases read it."""

    config: TrainConfig
    splits: Splits
    strategy: Strategy
    tokenizer: object
    model: torch.nn.Module
    precision: str
    train_features: list[dict]
    validation_features: list[dict]
    params: list[torch.nn.Parameter]
    """The parameters the optimizer updates (those that train at some point of the run)."""
    plan: TrainPlan
    loss_weights: torch.Tensor | None
    loss: object | None
    """A `Trainer(compute_loss_func=...)`, or None for the model's own cross-entropy."""
    log_lines: list[str] = field(default_factory=list)
    scratch: Path | None = None
    post_hoc: PostHoc | None = None
    checkpoints: Checkpoints | None = None
    """The epoch-end checkpoints beside the output folder, for `--resume` (see resume.py)."""

    def say(self, message: str) -> None:
        """A line for the user now and for train.log later."""
        log.info(message)
        self.log_lines.append(message)


@dataclass
class Fitted:
    trainer: Trainer
    cached_layers: int
    train_seconds: float
    peak_memory_mb: float
    epochs: list[dict]
    tracker: tracking.RunTracker | None = None
    """With --report-to: the tracker the run reports to."""


def train_one(config: TrainConfig, splits: Splits | None = None) -> dict:
    """One run at the learning rate `config.lr` (a number: `lr_search.train` chooses one for `--lr auto`).

    Returns the contents of metrics.json. `splits` may be passed to reuse data already loaded. Under torchrun or
    accelerate every process trains; only the main one writes the output folder.
    """
    if config.lr == "auto":
        raise ValueError("train_one trains at one learning rate: freezetune.training.train chooses it for lr='auto'")
    check_not_input(config.output_dir, config.input_paths)
    # The lock: a second run into the same folder is refused, naming this one. Scratch space for a strategy's
    # extra files; a killed run's is removed by the next run. The checkpoints for --resume live beside OUT.
    # Under torchrun / accelerate only the main process, the one that writes, holds the lock. The libraries'
    # messages (shown only with --verbose) are captured for train.log.
    with (output_lock_on_main(config.output_dir), scratch_dir("freezetune-trainer-") as scratch, captured(),
          tracking.quiet(config.report_to)):
        run = prepare(config, splits)
        run.scratch = scratch
        fitted = fit(run)
        result = evaluate(run, fitted)
        if fitted.trainer.args.should_save:  # the main process (the only one without torchrun)
            if fitted.tracker is not None:  # before write: TensorBoard's files go into OUT with the rest
                fitted.tracker.log_final(result.to_dict(), fitted.trainer.state.global_step)
            write(run, fitted, result)
            run.checkpoints.remove()
    return result.to_dict()


# --- phase 1: prepare ----------------------------------------------------------------------------------------

def prepare(config: TrainConfig, splits: Splits | None = None) -> Run:
    """All checks and set-up before the slow work: output folder, data, tokenizer, model, strategy, features."""
    checkpoints = Checkpoints.open(config)  # --resume: what it needs; without: an unfinished run is not lost
    check_output_dir(config.output_dir, config.overwrite)
    tracking.check_store(config.report_to)  # the tracker's package was checked with the options
    device = device_type()
    precision = resolve_precision(config.precision, device)
    if splits is None:
        splits = load_splits(config.data, config.text_column, config.label_column, config.seed, config.validation_fraction)
    strategy = parse_strategy(config.strategy)
    check_teachers(config.distill_from, splits.label_names)
    set_seed(config.seed)  # before the model is built: the new head's initial weights depend on it
    tokenizer = load_tokenizer(config.model)
    model = load_classifier(config.model, splits.label_names, init=config.init)
    match_tokenizer(model, tokenizer, config.model)  # a padding token (GPT-2, Llama have none) before the collator pads
    check_fits(strategy, anatomy(model))  # freeze4 on a 2-layer model fails now, before tokenizing or distilling
    _check_max_length(config.max_length, model)
    if config.folds_into_classifier:
        check_foldable(model, offsets=config.fits_offsets)  # a head we cannot fold into fails now, not after training
    train_features = tokenize_frame(tokenizer, splits.train, config.max_length)
    if config.distill_from:
        add_soft_targets(train_features, splits.train[TEXT].tolist(), config.distill_from, precision, config.eval_batch_size)
    # Optimizer steps, as the Trainer counts them: an epoch's batches, then every --gradient-accumulation-steps of them.
    batches = math.ceil(len(train_features) / config.batch_size)
    plan = TrainPlan(epochs=config.epochs, steps_per_epoch=math.ceil(batches / config.gradient_accumulation_steps))
    params = prepare_strategy(strategy, model, plan)
    refuse_unfollowable(strategy.spec(), strategy.later_trainable(model))  # several processes: no unfreezing mid-run
    n_classes = len(splits.label_names)
    weights = class_weights(config.class_weights, splits.train[LABEL], n_classes)
    # The model's own loss is exactly that, but it is each batch's mean: accumulated batches need the loss normalised
    # over all their rows (the Trainer's num_items_in_batch), which our losses are.
    plain = config.loss == "ce" and weights is None and config.gradient_accumulation_steps == 1
    loss = None if plain else make_loss(parse_loss(config.loss), weights, class_prior(splits.train[LABEL], n_classes))
    run = Run(config, splits, strategy, tokenizer, model, precision, train_features,
              tokenize_frame(tokenizer, splits.validation, config.max_length), params, plan, weights, loss,
              checkpoints=checkpoints)
    for note in splits.notes:
        run.say(note)
    run.say(f"data: train {len(splits.train)}, validation {len(splits.validation)}"
            + (f", test {len(splits.test)}" if splits.test is not None else "") + f"; classes {splits.label_names}")
    counts = parameter_counts(model, strategy)
    run.say(f"model {describe_model(config.model, config.init)}, strategy {strategy.spec()}: {counts['trainable_params']:,} trainable of "
            f"{counts['total_params']:,} parameters ({counts['trainable_params'] / counts['total_params']:.1%}); "
            + (f"{note}; " if (note := strategy.note(model)) else "")  # e.g. which stack freezeN reaches
            + f"lr {config.lr:g}{schedule_note(config)}; precision {precision}"
            + (f"; R-Drop alpha {config.rdrop:g}" if config.rdrop else "")
            + (f"; weights averaged (EMA {config.ema:g})" if config.ema else "")
            + (f"; distilled from {len(config.distill_from)} model(s) (weight {config.distill_weight:g})" if config.distill_from else ""))
    accumulation = config.gradient_accumulation_steps
    if world_size() > 1 or accumulation > 1:  # torchrun / accelerate: only the main process speaks, so it says for all
        where = f"training on {world_size()} processes" if world_size() > 1 else "training"
        per_step = f", {accumulation} batches per optimizer step" if accumulation > 1 else ""
        run.say(f"{where}{per_step}: global batch {world_size() * config.batch_size * accumulation}")
    if (note := truncation_note(tokenizer, splits.train[TEXT].tolist(), config.max_length)) is not None:
        run.say(note)
    if run.loss_weights is not None:
        run.say("class weights (loss): " + ", ".join(f"{n} {w:.2f}" for n, w in zip(splits.label_names, run.loss_weights.tolist())))
    return run


def schedule_note(config: TrainConfig) -> str:
    """The Trainer's options that differ from their defaults, for the run's first line (empty when none does)."""
    notes = [f"{config.lr_scheduler_type} schedule"] if config.lr_scheduler_type != "linear" else []
    if config.warmup_steps or config.warmup_ratio:
        notes.append(f"warm-up {config.warmup_steps} steps" if config.warmup_steps
                     else f"warm-up {100 * config.warmup_ratio:g}% of the steps")
    if config.weight_decay:
        notes.append(f"weight decay {config.weight_decay:g}")
    if config.max_grad_norm != 1.0:
        notes.append(f"gradients clipped at norm {config.max_grad_norm:g}" if config.max_grad_norm
                     else "no gradient clipping")
    return "".join(f", {note}" for note in notes)


def _check_max_length(max_length: int, model) -> None:
    """Refuse a --max-length beyond the model's positions up front (it would crash mid-training otherwise)."""
    limit = getattr(model.config, "max_position_embeddings", None)
    if model.config.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit = limit - model.config.pad_token_id - 1 if limit else limit  # their positions start after the pad id
    if limit and max_length > limit:
        raise UserError(f"--max-length {max_length} is more than the model's {limit} positions: use at most {limit}")


def truncation_note(tokenizer, texts: list[str], max_length: int) -> str | None:
    """One line saying how many training texts --max-length cuts, and what length would keep nearly all whole.

    The notebook's 30 tokens suit game chat; on other data (or another tokenizer) it may silently cut the end of
    many texts, which is where a headline's verdict often is. None when nothing is cut.
    """
    # A second pass over the training texts, untruncated: a fast tokenizer does inews's 5,218 titles in about 0.3 s,
    # and the truncated ids cannot tell a text of exactly max_length tokens from a longer one.
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"]])
    cut = int((lengths > max_length).sum())
    if not cut:
        return None
    keeps_99 = int(np.ceil(np.quantile(lengths, 0.99)))
    suggested = keeps_99 if keeps_99 > max_length else int(lengths.max())  # already 99% whole: then all of them
    return (f"{cut} of {len(lengths)} training texts ({cut / len(lengths):.1%}) are longer than --max-length {max_length} "
            f"tokens and are truncated (longest {lengths.max()}); --max-length {suggested} "
            f"would keep {np.mean(lengths <= suggested):.1%} whole")


def tokenize_frame(tokenizer, frame, max_length: int) -> list[dict]:
    """Unpadded token ids per example: the collator pads each batch only to its own longest row."""
    encoded = tokenizer(frame[TEXT].tolist(), truncation=True, max_length=max_length)
    return [{**{key: values[i] for key, values in encoded.items()}, "labels": int(label)}
            for i, label in enumerate(frame[LABEL])]


# --- phase 2: fit --------------------------------------------------------------------------------------------

def fit(run: Run) -> Fitted:
    """Train with the Trainer on the cheapest exact path; on return the model is whole and holds the best epoch."""
    config = run.config
    best_epoch = BestEpochCallback(config.metric, config.early_stopping, run.params)
    # After best_epoch, which snapshots the weights each epoch is evaluated with: with --ema, their average.
    states = {"best": best_epoch, **({"ema": WeightAverage(config.ema, run.params)} if config.ema else {})}
    args = training_arguments(config, run.precision, str(run.checkpoints.folder))
    started = time.perf_counter()
    fingerprint = data_fingerprint(run.splits.label_names, run.train_features, run.validation_features)
    resume_from = run.checkpoints.start(fingerprint, args.should_save, run.say)
    # On the training device before the fast paths: they keep parts of the model outside it while it trains (the
    # full word-embedding matrix, the cached bottom layers), which the Trainer's own move would leave behind.
    run.model.to(args.device)
    with peak_memory_mb() as peak, contextlib.ExitStack() as fast_paths:
        train_set, validation_set, collator = run.train_features, run.validation_features, DataCollatorWithPadding(run.tokenizer)
        if config.compact_embeddings:
            fast_paths.enter_context(compact_word_embeddings(run.model, run.train_features, args.weight_decay, run.say))
        optimizer = _optimizer(run)  # after compaction (its parameter replaces the embedding's), before the cut
        n_cached = cached_layers(run.model, run.strategy, run.say) if config.prefix_cache else 0
        if n_cached:
            run.say(f"embeddings and layers 0..{n_cached - 1} never train: computing their output once")
            train_set, validation_set = (
                CachedPrefixDataset(f, encode_prefix(run.model, f, n_cached, config.eval_batch_size, run.precision))
                for f in (run.train_features, run.validation_features))
            collator = partial(collate_cached, pad_token_id=run.model.config.pad_token_id)  # last-token pooling
            fast_paths.enter_context(top_only(run.model, n_cached))
        trainer = _trainer_class(config)(
            model=run.model, args=args, train_dataset=train_set, eval_dataset=validation_set,
            processing_class=run.tokenizer, data_collator=collator, compute_metrics=_metrics_with_loss(run.loss),
            preprocess_logits_for_metrics=_logits_only,
            callbacks=[*states.values(), StopOnNonFiniteLoss(), *run.strategy.callbacks(run.model, run.plan),
                       run.checkpoints.callback(states)],  # after them: it saves their states
            optimizers=(optimizer, None),
            compute_loss_func=run.loss,
        )
        tracker = tracking.RunTracker.attach(trainer, config)
        with training_progress(trainer):  # one bar, not the Trainer's bars and printed log dicts
            run.checkpoints.train(trainer, states, resume_from)  # trainer.train(), or continued from a checkpoint
        best_epoch.restore_best()
    seconds = time.perf_counter() - started + run.checkpoints.seconds_before
    return Fitted(trainer, n_cached, seconds, peak[0], _epoch_rows(trainer.state.log_history), tracker)


def _trainer_class(config: TrainConfig):
    """The HF Trainer, or with --rdrop / --distill-from the same Trainer with their training loss.

    Both together: R-Drop's Trainer comes first in the class order, so it doubles every row (soft targets too)
    and adds its KL to the loss that distillation computes over the doubled batch.
    """
    extras = []  # (a Trainer subclass, its keyword arguments)
    if config.rdrop:
        extras.append((RDropTrainer, {"rdrop_alpha": config.rdrop}))
    if config.distill_from:
        extras.append((DistillTrainer, {"distill_weight": config.distill_weight}))
    if not extras:
        return Trainer
    classes = tuple(cls for cls, _ in extras)
    name = "".join(cls.__name__.removesuffix("Trainer") for cls in classes) + "Trainer"  # e.g. RDropDistillTrainer
    trainer = classes[0] if len(classes) == 1 else type(name, classes, {})
    return partial(trainer, **{key: value for _, kwargs in extras for key, value in kwargs.items()})


def _optimizer(run: Run) -> torch.optim.Optimizer:
    optimizer, params = make_optimizer(run.model, run.strategy, run.config.lr, run.precision,
                                       weight_decay=run.config.weight_decay)
    run.params[:] = params  # again: compaction may have replaced one
    return optimizer


def make_optimizer(model, strategy: Strategy, lr: float, precision: str = "fp32", weight_decay: float = 0.0, **kernel):
    """AdamW over the strategy's parameter groups (one group at lr unless it sets learning rates per layer), each
    split by `weight_decay_groups`.

    Returns (optimizer, the parameters it updates). `kernel` (`foreach=`, `fused=`) overrides the choice of
    torch's AdamW implementation (benchmarks/mfu.py compares them).
    """
    from ..strategies import trainable_parameters

    params = trainable_parameters(model, strategy)
    groups = strategy.parameter_groups(model, params, lr) or [{"params": params, "lr": lr}]
    # The fused kernel updates every tensor in one pass instead of one tensor at a time (its step took 18 ms
    # against 43 ms for the builtin model's 24M trained parameters on 2 CPU cores). Not with fp16: its GradScaler
    # then calls step() on overflow too, and the Trainer would advance the schedule on steps that did nothing.
    fusable = precision != "fp16" and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    groups = weight_decay_groups(model, groups, weight_decay)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=0.0, **(kernel or {"fused": fusable})), params


def weight_decay_groups(model, groups: list[dict], weight_decay: float) -> list[dict]:
    """Each optimizer group (its own lr kept) split in two: the weights that decay at `weight_decay` and those that
    do not, biases and normalisation weights (the Trainer's rule, `get_decay_parameter_names`). No decay: as given."""
    if not weight_decay:
        return groups
    # The Trainer's method reads nothing of the Trainer (the optimizer is built before there is one).
    decays = set(Trainer.get_decay_parameter_names(None, model))
    decayed = {id(p) for name, p in model.named_parameters() if name in decays}
    split = []
    for group in groups:
        for decay in (weight_decay, 0.0):
            params = [p for p in group["params"] if (id(p) in decayed) == bool(decay)]
            if params:
                split.append({**group, "params": params, "weight_decay": decay})
    return split


class BestEpochCallback(TrainerCallback):
    """Keeps the best epoch's weights in memory and stops after `patience` epochs without improvement.

    Only the optimized parameters change, so they are all we copy: cheaper than the Trainer's checkpoint
    files, and it works while the model is cut down to its trainable top (see prefix_cache).
    """

    def __init__(self, metric: str, patience: int | None, params: list[torch.nn.Parameter]):
        self.metric, self.patience, self.params = metric, patience, params
        self.best_score, self.snapshot, self.stale = None, [], 0

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        score = metrics[f"eval_{self.metric}"]
        if self.best_score is None or score > self.best_score:
            self.best_score, self.stale = score, 0
            self.snapshot = [p.detach().clone() for p in self.params]
        else:
            self.stale += 1
            control.should_training_stop = bool(self.patience and self.stale >= self.patience)

    @torch.no_grad()
    def restore_best(self) -> None:
        for param, saved in zip(self.params, self.snapshot):
            param.copy_(saved)

    def state_dict(self) -> dict:
        """What a checkpoint keeps of it (see resume.py)."""
        return {"best_score": self.best_score, "stale": self.stale, "snapshot": [t.cpu() for t in self.snapshot]}

    def load_state_dict(self, state: dict) -> None:
        self.best_score, self.stale = state["best_score"], state["stale"]
        self.snapshot = [saved.to(param.device) for saved, param in zip(state["snapshot"], self.params, strict=True)]


class StopOnNonFiniteLoss(TrainerCallback):
    """A loss that became nan or inf means a diverged run (too large a learning rate): stop it, write nothing."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise UserError(f"the training loss became {loss} in epoch {math.ceil(state.epoch or 1)}: the run diverged; "
                            "lower --lr (or use --precision fp32); nothing was written")


def training_arguments(config: TrainConfig, precision: str, output_dir: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=output_dir,  # the checkpoints for --resume, beside OUT (see resume.py)
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        learning_rate=config.lr,
        # The schedule is the Trainer's; HF reads a warmup_steps below 1 as a share of the training steps.
        lr_scheduler_type=config.lr_scheduler_type,
        warmup_steps=config.warmup_steps or config.warmup_ratio,
        # The optimizer is ours (make_optimizer, with this decay); the fast paths read it here.
        weight_decay=config.weight_decay,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device_type() == "cpu",  # the Trainer allows bf16 without a GPU only when told it is on the CPU
        eval_strategy="epoch",
        **tracking.trainer_options(config),  # report_to, run_name; with a tracker the Trainer logs every step
        # A checkpoint at every epoch's end, for --resume; the best epoch's weights are kept by BestEpochCallback.
        save_strategy="epoch" if config.checkpoints else "no",
        # Batches of similar length waste less compute on padding (shuffled within mega-batches).
        train_sampling_strategy="group_by_length" if config.length_grouping else "random",
        dataloader_pin_memory=device_type() == "cuda",
        # Our examples hold exactly what the model takes (cached ones: `inputs_embeds`, which a model's
        # forward signature may only accept through **kwargs, so the Trainer would drop it).
        remove_unused_columns=False,
        # Several processes (DDP): parameters may get no gradient in a step (a frozen or cut-down part, an unused
        # pooler), and no buffer changes while training (no batch norm), so none is re-sent every step (the
        # compact embedding's frozen matrix would be, whole).
        ddp_find_unused_parameters=True,
        ddp_broadcast_buffers=False,
        # Each process's loss is its batch mean, averaged by DDP. The Trainer's token averaging across devices
        # (for language-model losses) would multiply a model's own mean loss by the number of processes.
        average_tokens_across_devices=False,
        disable_tqdm=not log.isEnabledFor(logging.INFO),
    )


def _metrics_with_loss(loss):
    """The Trainer's `compute_metrics`: accuracy and F1s, and the validation loss over each validation row once.

    Not the Trainer's eval_loss: it averages batch losses, and with several processes it pads each process's last
    batch with repeated rows. The logits it hands here are the validation rows, each once. `loss`: the run's
    `compute_loss_func`, or None for the model's own (cross-entropy).
    """
    def compute(eval_pred):
        logits, labels = np.asarray(eval_pred[0]), np.asarray(eval_pred[1])
        scores, targets = torch.from_numpy(logits).float(), torch.from_numpy(labels).long()
        value = torch.nn.functional.cross_entropy(scores, targets) if loss is None else loss({"logits": scores}, targets)
        return {**summary_metrics(labels, logits.argmax(axis=-1)), "validation_loss": float(value)}

    return compute


def _logits_only(outputs, labels):
    """What evaluation keeps of a batch's outputs: the logits (an encoder-decoder also returns its encoder's states)."""
    return outputs[0] if isinstance(outputs, tuple) else outputs


def _epoch_rows(log_history: list[dict]) -> list[dict]:
    """One row per epoch from the Trainer's log: its train loss and evaluation metrics.

    The Trainer logs the train loss once per epoch (that epoch's mean), or with a tracker once per optimizer step
    (see tracking.py), whose mean over the epoch is that same number.
    """
    rows: dict[int, dict] = {}
    losses: dict[int, list[float]] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        epoch = int(math.ceil(entry["epoch"] - 1e-6))
        row = rows.setdefault(epoch, {"epoch": epoch, "train_loss": None})
        if "loss" in entry:
            losses.setdefault(epoch, []).append(entry["loss"])
            row["train_loss"] = math.fsum(losses[epoch]) / len(losses[epoch])
        if "eval_loss" in entry:
            row.update(eval_loss=entry["eval_validation_loss"], **{m: entry[f"eval_{m}"] for m in ("accuracy", "macro_f1", "weighted_f1")})
    return [row for _, row in sorted(rows.items()) if "eval_loss" in row]


# --- phase 3: evaluate ---------------------------------------------------------------------------------------

def evaluate(run: Run, fitted: Fitted) -> RunResult:
    """The best epoch's report on validation and on the evaluation split, predicted by the finished model."""
    config, splits = run.config, run.splits
    best = max(fitted.epochs, key=lambda row: row[config.metric])
    for row in fitted.epochs:
        run.say(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, validation loss {row['eval_loss']:.4f}, "
                f"accuracy {row['accuracy']:.4f}, macro-F1 {row['macro_f1']:.4f}" + ("  <- best" if row is best else ""))
    counts = parameter_counts(run.model, run.strategy)  # before finalize: LoRA's adapters are gone after
    run.strategy.save_extras(run.model, run.scratch / "extras", config.keep_adapter)  # e.g. the adapter, unmerged
    run.model = run.strategy.finalize(run.model)  # predictions come from the model as it will be saved
    # Not `trainer.predict`: with length grouping the Trainer also shuffles evaluation batches.
    classifier = TorchClassifier(run.model, run.tokenizer, config.eval_batch_size, config.max_length, run.precision)
    evaluation_name, evaluation_frame = splits.evaluation_split
    texts = {"validation": splits.validation[TEXT].tolist(), evaluation_name: evaluation_frame[TEXT].tolist()}
    labels = {"validation": splits.validation[LABEL].to_numpy(), evaluation_name: evaluation_frame[LABEL].to_numpy()}
    # (inputs, scorer) such that scorer(inputs) are the logits of the model as it stands. When something will be
    # folded into the final layer, the inputs are that layer's features: one pass through the encoder serves
    # the logits before and after folding.
    if config.folds_into_classifier:
        inputs = {split: classifier.final_linear_inputs(t) for split, t in texts.items()}
        score = classifier.final_linear_logits
    else:
        inputs, score = texts, classifier.logits
    raw = {split: score(x) for split, x in inputs.items()}
    post_hoc = fit_post_hoc(config, raw["validation"], labels["validation"], run.say)
    if post_hoc.changes_model:  # folded into the classifier: every way of loading OUT serves the same labels
        fold_into_classifier(run.model, post_hoc.temperature, post_hoc.offsets)
        served = {split: score(x) for split, x in inputs.items()}
    else:
        served = raw
    post_hoc.measure(raw, served, labels)
    run.post_hoc = post_hoc
    validation_preds, evaluation_preds = served["validation"].argmax(axis=-1), served[evaluation_name].argmax(axis=-1)
    result = RunResult(
        epochs=fitted.epochs, best_epoch=best["epoch"], selection_metric=config.metric, label_names=splits.label_names,
        validation=classification_report(splits.validation[LABEL], validation_preds, splits.label_names),
        evaluation_split=evaluation_name,
        evaluation=classification_report(evaluation_frame[LABEL], evaluation_preds, splits.label_names),
        evaluation_predictions=evaluation_preds.tolist(),
        evaluation_probabilities=rounded_probabilities(softmax(served[evaluation_name], axis=-1)),
        strategy=run.strategy.spec(), **counts,
        train_seconds=fitted.train_seconds,
        train_samples_per_second=len(run.train_features) * len(fitted.epochs) / fitted.train_seconds,
        peak_memory_mb=fitted.peak_memory_mb, data_notes=splits.notes, lr=config.lr,
        cached_layers=fitted.cached_layers, precision=run.precision,
        class_weights=None if run.loss_weights is None else run.loss_weights.tolist(), init=config.init,
        details={"loss": config.loss, **post_hoc.record()},
    )
    # Every decision rule's report from this one training (compare shows a recipe with and without the rule).
    scaled = {split: (raw[split] / post_hoc.temperature, labels[split]) for split in raw}
    result.details["decision"]["alternatives"] = reports_by_rule(
        scaled["validation"], scaled[evaluation_name], splits.label_names, served=(config.decision, result.evaluation))
    run.say(f"{describe_model(config.model, config.init)}: best epoch {best['epoch']} by validation {config.metric}; {evaluation_name}: "
            f"accuracy {result.evaluation['accuracy']:.4f}, macro-F1 {result.evaluation['macro_f1']:.4f}; "
            f"trained in {fitted.train_seconds:.1f}s")
    return result


# --- phase 4: write ------------------------------------------------------------------------------------------

def write(run: Run, fitted: Fitted, result: RunResult) -> None:
    """The model (HF format), metrics.json, run_config.json and train.log, appearing together or not at all."""
    config = run.config
    with staged_output_dir(config.output_dir, config.overwrite) as stage:
        run.model.save_pretrained(str(stage))
        run.tokenizer.save_pretrained(str(stage))
        carry_licence_files(config.model, run.model.config.model_type, stage)  # e.g. Gemma's NOTICE and terms
        if (run.scratch / "extras").is_dir():
            for item in (run.scratch / "extras").iterdir():
                shutil.move(str(item), str(stage / item.name))
        if fitted.tracker is not None:
            fitted.tracker.move_into(stage)
        write_json_atomic(stage / METRICS_FILE, result.to_dict())
        write_json_atomic(stage / RUN_CONFIG_FILE, config.to_dict())
        write_model_card(stage, result.to_dict(), config.to_dict())  # README.md, the Hugging Face model card
        if run.post_hoc is not None and run.post_hoc.probabilities:
            p = run.post_hoc.probabilities
            reliability_diagram(stage / RELIABILITY_FILE, p["before"], p["after"], p["labels"])
        history = [json.dumps(entry) for entry in fitted.trainer.state.log_history]
        library = ["", "library messages:", *captured_lines()] if captured_lines() else []
        (stage / LOG_FILE).write_text("\n".join(run.log_lines + ["", "trainer log history:", *history, *library]) + "\n",
                                      encoding="utf-8")
    run.say(f"wrote {config.output_dir}")
