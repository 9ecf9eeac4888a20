"""The study's grid: which strategies (on which models), one run per strategy x seed (x learning rate), and running
one run.

Strategy names are the training vocabulary (`freezetune.strategies.parse_strategy`) plus two study-level words:
the baselines `lstm` and `tfidf`, and `sweep[:0,2,4,...]`, which stands for `freezeN` at each point.

Recipes (`--recipes`) cross every transformer strategy with ways of handling class imbalance: a recipe is a loss
spec (`freezetune.losses`) with an optional `+balanced` (class weights), `+rdrop=ALPHA` (R-Drop) and `+ema=DECAY`
(the weights' average), e.g. `ce`, `ce+balanced`, `focal:gamma=2`, `ce+balanced+rdrop=3`. Each (strategy, recipe)
pair is then its own row of the study, named `STRATEGY@RECIPE` (`full@focal`). A recipe sets its runs' loss and
class weights; R-Drop and the average only where it says so (elsewhere the study's --rdrop and --ema hold).

Models (`--models A,B,...`): a study of several models runs every transformer strategy on each, each model's runs
under runs/SLUG/ (`study_models`), and the baselines once, under runs/ as in a one-model study (which has no model
level at all: its runs and report are those of a study without --models).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from freezetune.errors import UserError
from freezetune.layout import METRICS_FILE

BASELINES = ("lstm", "tfidf")
DEFAULT_SWEEP_DEPTH = 12  # where the default sweep stops before the model's depth is known (BERT-base's 12 layers)


@dataclass(frozen=True)
class StudyStrategy:
    name: str
    """Canonical name, used for run folders and reports (`freeze0` is `full`)."""
    frozen_layers: int | None = None
    """Bottom encoder layers frozen (for the accuracy-vs-frozen-layers plot); None for `head` (all of them)."""
    freeze_embeddings: bool | None = None
    """For the layer-freezing family (full, freezeN, freezeN+emb, head): whether the embeddings are frozen.
    None for every other strategy and the baselines: they are not points of the frozen-layers plot."""
    lr_grid: tuple[float, ...] = ()
    """The strategy family's default learning rates (`--lr-grid auto`); empty for baselines."""
    spec: str = ""
    """The training strategy, when `name` also names a recipe (`full` for `full@focal`); empty: `name`."""
    overrides: tuple[tuple[str, str | float], ...] = ()
    """Training options the recipe sets, e.g. (("loss", "focal"), ("class_weights", "balanced"), ("rdrop", 3.0),
    ("ema", 0.995))."""

    @property
    def is_baseline(self) -> bool:
        return self.name in BASELINES

    @property
    def training_strategy(self) -> str:
        return self.spec or self.name


def parse_strategies(names: list[str], depth: int | None = None) -> list[StudyStrategy]:
    """Parse all names (so a typo fails before any run), expand sweeps, drop duplicates such as freeze0 after full.

    `depth`: the model's number of blocks (models.anatomy), once known: the default sweep stops there. Without it
    (names only) the default sweep assumes BERT-base's 12 layers. Whether each strategy fits the model (a sweep
    point past its depth, say) is the strategy's own check (`strategies.check_fits`), which `compare` runs.
    """
    unique: dict[str, StudyStrategy] = {}
    for name in names:
        for strategy in _expand(name.strip().lower(), depth):
            unique.setdefault(strategy.name, strategy)
    return list(unique.values())


def _expand(name: str, depth: int | None) -> list[StudyStrategy]:
    if name in BASELINES:
        return [StudyStrategy(name)]
    if name == "sweep" or name.startswith("sweep:"):
        return [_study_strategy(f"freeze{n}") for n in _sweep_points(name, depth)]
    return [_study_strategy(name)]


def _study_strategy(spec: str) -> StudyStrategy:
    from freezetune.strategies import parse_strategy

    try:
        strategy = parse_strategy(spec)
    except UserError as exc:
        raise UserError(f"{exc}; or the baselines {', '.join(BASELINES)}, or sweep[:0,2,4,...]") from None
    name = strategy.spec()
    parts = set(name.split("+"))
    if name == "head":
        frozen, embeddings = None, True
    elif parts <= {"full", "emb"} or (parts - {"emb"} and all(p.startswith("freeze") for p in parts - {"emb"})):
        frozen, embeddings = strategy.frozen_bottom(), "emb" in parts
    else:
        frozen, embeddings = None, None
    return StudyStrategy(name, frozen, embeddings, tuple(strategy.lr_grid))


def with_recipes(strategies: list[StudyStrategy], recipes: list[str]) -> list[StudyStrategy]:
    """Each transformer strategy once per recipe (recipe-major within a strategy); baselines stay single.

    A recipe's rows are not points of the frozen-layers plot: several recipes would share each point.
    """
    if not recipes:
        return strategies
    parsed = dict(parse_recipe(recipe) for recipe in recipes)  # `focal` and `focal:gamma=2` are one recipe
    out = []
    for strategy in strategies:
        if strategy.is_baseline:
            out.append(strategy)
            continue
        out += [replace(strategy, name=f"{strategy.name}@{name}", spec=strategy.name, overrides=overrides,
                        frozen_layers=None, freeze_embeddings=None) for name, overrides in parsed.items()]
    return out


def parse_recipe(text: str) -> tuple[str, tuple[tuple[str, str | float], ...]]:
    """`LOSS[+balanced][+rdrop=ALPHA][+ema=DECAY]` -> (canonical name, training option overrides); a bad one is a
    one-line UserError."""
    from freezetune.config import ema_decay, rdrop_alpha
    from freezetune.losses import parse_loss, short_number

    numeric = {"rdrop": rdrop_alpha, "ema": ema_decay}  # +NAME=VALUE: the option NAME, checked by its validator
    usage = "write a loss spec with an optional +balanced, +rdrop=ALPHA and +ema=DECAY, e.g. ce, ce+balanced, " \
            "focal:gamma=2, ce+balanced+rdrop=3+ema=0.995"
    loss, *extras = (part.strip() for part in text.strip().lower().split("+"))
    try:
        overrides: dict[str, str | float] = {"loss": str(parse_loss(loss)), "class_weights": "none"}
        for extra in extras:
            key, eq, value = extra.partition("=")
            if extra == "balanced" and overrides["class_weights"] == "none":
                overrides["class_weights"] = "balanced"
            elif key in numeric and eq and key not in overrides:
                overrides[key] = numeric[key](value, name=key)
            else:
                raise UserError(usage)
    except UserError as exc:
        raise UserError(f"recipe {text!r}: {exc}") from None
    name = overrides["loss"] + ("+balanced" if overrides["class_weights"] == "balanced" else "")
    name += "".join(f"+{key}={short_number(overrides[key])}" for key in numeric if key in overrides)
    return name, tuple(overrides.items())


def _sweep_points(name: str, depth: int | None) -> list[int]:
    """The sweep's numbers of frozen layers: every second one from 0 up to the depth, the depth included."""
    text = name.partition(":")[2]
    if not text:
        last = DEFAULT_SWEEP_DEPTH if depth is None else depth
        return sorted(set(range(0, last + 1, 2)) | {last})
    try:
        points = [int(p) for p in text.replace("/", ",").split(",") if p.strip()]
    except ValueError:
        raise UserError(f"{name!r}: a sweep lists numbers of frozen layers, e.g. sweep:0,2,4,6") from None
    if not points or min(points) < 0:
        raise UserError(f"{name!r}: a sweep lists numbers of frozen layers >= 0, e.g. sweep:0,2,4,6")
    return sorted(set(points))


@dataclass(frozen=True)
class StudyModel:
    """One model of a study that compares several (`--models`): its runs live under runs/SLUG/."""

    model: str
    """As given: a hub id, a local folder or builtin:NAME."""
    slug: str
    """Its folder under runs/: safe in file names, unique in the study (see `study_models`)."""


def study_models(models: list[str]) -> list[StudyModel]:
    """The models of a multi-model study with their folders: a local folder by its own name, a hub id or builtin
    name with `/` as `--` and `:` as `-`, other unsafe characters as `-`; a name already taken (case-insensitively:
    some file systems are) gets -2, -3, ... in list order, so the same list always gives the same folders."""
    taken: set[str] = set()
    out = []
    for model in models:
        base = _slug(model)
        slug, n = base, 1
        while slug.lower() in taken:
            n += 1
            slug = f"{base}-{n}"
        taken.add(slug.lower())
        out.append(StudyModel(model, slug))
    return out


def _slug(model: str) -> str:
    name = Path(model).expanduser().resolve().name if Path(model).expanduser().is_dir() else model
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name.replace("/", "--").replace(":", "-")).strip("-.")[:80] or "model"
    # A baseline's run folder sits beside the models' folders (runs/lstm-seed0): a model may not take its name.
    return f"{name}-model" if re.fullmatch(rf"({'|'.join(BASELINES)})-seed-?\d+", name) else name


@dataclass(frozen=True)
class Run:
    strategy: StudyStrategy
    seed: int
    lr: float | None = None
    """The learning rate, when the study chooses it per strategy (`--lr-grid`); None: the study's --lr."""
    model: StudyModel | None = None
    """The model, in a study of several (`--models`); None: the study's --model (and every baseline run)."""

    @property
    def name(self) -> str:
        """The run's folder under runs/: STRATEGY[-lrLR]-seedN, under the model's folder in a multi-model study."""
        lr = "" if self.lr is None else f"-lr{self.lr:g}"
        name = f"{self.strategy.name}{lr}-seed{self.seed}"
        return name if self.model is None else f"{self.model.slug}/{name}"

    def folder(self, output_dir: Path) -> Path:
        return output_dir / "runs" / self.name

    def finished(self, output_dir: Path) -> bool:
        return (self.folder(output_dir) / METRICS_FILE).is_file()


Cell = tuple[StudyModel | None, StudyStrategy]
"""A row of the study: a strategy on a model (None: the study's --model, or a baseline, which has no model)."""


def cells(strategies: list[StudyStrategy], models: dict[StudyModel, list[StudyStrategy]] | None = None) -> list[Cell]:
    """The study's rows in report order: `strategies` on the study's --model, or with several models each model's
    transformer strategies (model by model), then the baselines once: they do not depend on the model."""
    if not models:
        return [(None, strategy) for strategy in strategies]
    return [(model, s) for model, own in models.items() for s in own if not s.is_baseline] + [
        (None, s) for s in strategies if s.is_baseline]


def grid(rows: list[Cell], seeds: list[int], lrs: dict[tuple[StudyModel | None, str], float] | None = None) -> list[Run]:
    """Seed-major order: every row gets a first result early, and the ETA mixes cheap and slow runs. `lrs`: the
    learning rate chosen for each (model, strategy name)."""
    lrs = lrs or {}
    return [Run(strategy, seed, lrs.get((model, strategy.name)), model) for seed in seeds for model, strategy in rows]


def execute(run: Run, splits, options, output_dir: Path) -> dict:
    """Run one cell on the shared splits; its folder gets metrics.json atomically, last."""
    folder = run.folder(output_dir)
    if not run.strategy.is_baseline:
        return _train_transformer(run, splits, options, folder)
    from freezetune.baselines import run_lstm, run_tfidf
    from freezetune.outputs import write_json_atomic

    if run.strategy.name == "tfidf":
        result = run_tfidf(splits, seed=run.seed, class_weight=options.class_weights, metric=options.metric)
    else:
        result = run_lstm(
            splits, seed=run.seed, epochs=options.epochs, batch_size=options.batch_size,
            eval_batch_size=options.eval_batch_size, lr=options.lstm_lr, max_length=options.max_length,
            metric=options.metric,
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / METRICS_FILE, result)
    return result


def _train_transformer(run: Run, splits, options, folder: Path) -> dict:
    """Exactly the `freezetune train` code path, with the study's shared splits."""
    from freezetune.config import TrainConfig
    from freezetune.training import train
    from freezetune.training.resume import resumable
    from freezetune.training.tracking import default_run_name

    shared = {**options.shared(), **dict(run.strategy.overrides)}
    if run.model is not None:
        shared["model"] = run.model.model
    if run.lr is not None:
        shared["lr"] = run.lr
    # A resumed study continues a run that was stopped mid-training from its last epoch's checkpoint; anything
    # else an unfinished run left (no metrics.json) is worth nothing: overwrite.
    resume = options.resume and resumable(folder)
    # Its name in a --report-to tracker: MODEL/STRATEGY/seedN, STRATEGY as the study names it (full@focal, full-lr1e-05).
    label = run.strategy.name + ("" if run.lr is None else f"-lr{run.lr:g}")
    config = TrainConfig(**shared, output_dir=str(folder), strategy=run.strategy.training_strategy, seed=run.seed,
                         run_name=default_run_name(shared["model"], label, run.seed), overwrite=not resume, resume=resume)
    return train(config, splits)

