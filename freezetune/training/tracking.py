"""Experiment tracking (`--report-to tensorboard|mlflow|wandb`): the Trainer's own integrations, and what we add.

The Trainer reports through its callbacks for `TrainingArguments(report_to=..., run_name=...)`. With a tracker the
Trainer logs every optimizer step, so the tracker gets the training loss, gradient norm and learning rate per step
and the validation metrics (eval/...) per epoch; `run._epoch_rows` averages the steps' losses into each epoch's
mean, which is what an epoch's log holds without a tracker. After the final evaluation the run adds freezetune's
own numbers (`final/validation_accuracy`, `final/test_macro_f1`, the best epoch, the calibration, ...) and its
options (run_config.json's values).

Where each tracker's data goes:

- tensorboard: OUT/tensorboard/. While training, the event files are written beside the run's checkpoint
  (`.OUT.resume/tensorboard/`, kept for `--resume`), and they move into OUT with the other files, so OUT stays
  whole or absent. With TENSORBOARD_LOGGING_DIR set, into $TENSORBOARD_LOGGING_DIR/RUN_NAME instead, outside
  OUT, as they are written (`tensorboard --logdir $TENSORBOARD_LOGGING_DIR` shows every run by its name).
- mlflow: the store MLflow is pointed at (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME and the Trainer's other
  MLFLOW_* variables), a run named RUN_NAME; an MLflow run already active in the program receives it instead.
- wandb: W&B's project (WANDB_PROJECT, default `huggingface`; WANDB_MODE=offline keeps it local), a run named
  RUN_NAME, finished at the end unless the program started it.

RUN_NAME is `--run-name`, by default MODEL/STRATEGY/seedN (`compare` names each run so, after its model, its
strategy as the study names it and its seed). Only the main process of a multi-process run reports. A tracker's
package is checked before any work (config.py), and MLflow's store too (`check_store`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

from transformers import TrainerCallback

from .. import logs
from ..errors import UserError

TENSORBOARD_DIR = "tensorboard"
"""The event files' folder in a run's output folder (and, while it trains, beside its checkpoint)."""
log = logging.getLogger("freezetune")


def run_name(config) -> str:
    """The run's name in the tracker: `--run-name`, or MODEL/STRATEGY/seedN."""
    return config.run_name or default_run_name(config.model, config.strategy, config.seed)


def candidate_run_name(config, lr: float) -> str:
    """A learning-rate candidate's name (`--lr auto`): RUN_NAME-lrX, or MODEL/STRATEGY-lrX/seedN as a study names
    its runs, so the candidates are told apart in the tracker."""
    if config.run_name:
        return f"{config.run_name}-lr{lr:g}"
    return default_run_name(config.model, f"{config.strategy}-lr{lr:g}", config.seed)


def default_run_name(model: str, strategy: str, seed: int) -> str:
    """MODEL/STRATEGY/seedN: MODEL is a local model folder's own name, else the id as given."""
    path = Path(model).expanduser()
    return f"{path.resolve().name if path.is_dir() else model}/{strategy}/seed{seed}"


def trainer_options(config) -> dict:
    """The TrainingArguments that say where the Trainer reports, and how often it logs."""
    if config.report_to == "none":
        return {"report_to": [], "logging_strategy": "epoch"}  # so each logged train loss is that epoch's mean
    return {"report_to": [config.report_to], "run_name": run_name(config), "logging_strategy": "steps",
            "logging_steps": 1}


def check_store(report_to: str) -> None:
    """Before any slow work: MLflow can store runs where it is pointed (the Trainer would fail once training starts).

    mlflow-skinny (freezetune's mlflow extra) has no database stores, and MLflow 3's default store is a SQLite file
    (sqlite:///mlflow.db); its folder store (file:...) needs MLFLOW_ALLOW_FILE_STORE=true. Opening the client opens
    the store (a server is not contacted)."""
    if report_to != "mlflow":
        return
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient()
    except MlflowException as exc:
        reason = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--report-to mlflow: MLflow cannot store runs at {mlflow.get_tracking_uri()} ({reason}): set "
                        "MLFLOW_TRACKING_URI to an MLflow server (http://HOST:5000) or to a folder (file:./mlruns, "
                        "with MLFLOW_ALLOW_FILE_STORE=true), or pip install mlflow for its SQLite store") from None


class RunTracker(TrainerCallback):
    """One run's tracking: points the Trainer's TensorBoard callback at the run's folder, remembers the MLflow or W&B
    run the Trainer reports to, and adds the final metrics and the options to it (`log_final`)."""

    def __init__(self, config, checkpoint_folder: Path, main: bool):
        self.config, self.name, self.main = config, run_name(config), main
        self.pending = checkpoint_folder / TENSORBOARD_DIR
        """Where the event files are written while the run trains (moved into OUT by `move_into`)."""
        user_dir = os.environ.get("TENSORBOARD_LOGGING_DIR")
        self.tensorboard_dir = Path(user_dir).expanduser() / self.name if user_dir else self.pending
        self.run_id: str | None = None  # MLflow's
        self.wandb_started_here = False

    @classmethod
    def attach(cls, trainer, config) -> RunTracker | None:
        """Once the Trainer is made: the tracker of its run (None without --report-to)."""
        if config.report_to == "none":
            return None
        tracker = cls(config, Path(trainer.args.output_dir), trainer.is_world_process_zero())
        if config.report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter
            from transformers.integrations import TensorBoardCallback

            # The Trainer's own callback writes under its output_dir, here the checkpoint (which --resume keeps
            # and a finished run deletes); the writer it is given decides where. Made on the main process only:
            # a SummaryWriter creates its event file at once.
            trainer.pop_callback(TensorBoardCallback)
            trainer.add_callback(TensorBoardCallback(SummaryWriter(str(tracker.tensorboard_dir)) if tracker.main else None))
        if config.report_to == "wandb" and tracker.main:
            import wandb

            tracker.wandb_started_here = wandb.run is None  # else the program's run, which it finishes itself
        trainer.add_callback(tracker)
        return tracker

    def on_train_begin(self, args, state, control, **kwargs):
        # After the Trainer's MLflowCallback (the reporting callbacks come first), which started the run or took
        # the program's.
        if self.config.report_to == "mlflow" and state.is_world_process_zero:
            import mlflow

            active = mlflow.active_run()
            self.run_id = active.info.run_id if active is not None else None

    def log_final(self, result: dict, global_step: int) -> None:
        """The run's final metrics and its options into the tracker (main process only). A tracker that cannot take
        them (a server gone away) costs a warning, not the trained run: metrics.json has them."""
        if not self.main:
            return
        metrics, options = final_metrics(result), _option_values(self.config.to_dict())
        try:
            {"tensorboard": self._tensorboard, "mlflow": self._mlflow, "wandb": self._wandb}[self.config.report_to](
                metrics, options, global_step)
        except Exception as exc:  # noqa: BLE001 - the tracker's own errors, whatever their type
            log.warning("the final metrics did not reach %s (%s: %s); metrics.json has them", self.config.report_to,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")

    def move_into(self, stage: Path) -> None:
        """The event files written beside the checkpoint, into the output folder being staged."""
        if self.main and self.pending.is_dir():
            shutil.move(str(self.pending), str(stage / TENSORBOARD_DIR))

    def _tensorboard(self, metrics: dict, options: dict, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(self.tensorboard_dir)) as writer:
            # hparams: the HPARAMS tab compares runs by their options; "." keeps it in this run's folder.
            writer.add_hparams(options, metrics, run_name=".", global_step=step)
            writer.add_text("freezetune/options", "```json\n" + json.dumps(self.config.to_dict(), indent=2) + "\n```",
                            step)

    def _mlflow(self, metrics: dict, options: dict, step: int) -> None:
        import mlflow
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        # Prefixed: the Trainer logged its own arguments as parameters, some under the same names (output_dir,
        # run_name, report_to) with other values, and MLflow refuses to change a parameter.
        params = {f"freezetune.{k}": v for k, v in options.items() if len(str(v)) <= MAX_PARAM_VAL_LENGTH}
        active = mlflow.active_run()
        if active is not None and self.run_id in (None, active.info.run_id):  # the program's run, or ours still open
            context = contextlib.nullcontext()
        else:  # the Trainer ended the run it started: reopened by its id (a run resumed after its last epoch has
            # none: a run of its own then); nested under the program's run with MLFLOW_NESTED_RUN
            context = mlflow.start_run(run_id=self.run_id, run_name=None if self.run_id else self.name,
                                       nested=active is not None)
        with context:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics, step=step)

    def _wandb(self, metrics: dict, options: dict, step: int) -> None:
        import wandb

        if wandb.run is None:  # resumed after its last epoch: the Trainer reported nothing this time
            self.wandb_started_here = True
            wandb.init(project=os.environ.get("WANDB_PROJECT", "huggingface"), name=self.name)
        wandb.config.update({"freezetune": options}, allow_val_change=True)
        wandb.run.summary.update(metrics)
        if self.wandb_started_here:
            wandb.finish()  # the next run of a study starts its own


def final_metrics(result: dict) -> dict[str, float]:
    """metrics.json's headline numbers as `final/NAME`: each split's accuracy and F1s, calibration as served, the
    best epoch, the parameters, time and memory."""
    metrics = {}
    for split in dict.fromkeys(["validation", result["evaluation_split"]]):
        report = result["validation" if split == "validation" else "evaluation"]
        metrics.update({f"{split}_{name}": report[name] for name in ("accuracy", "macro_f1", "weighted_f1")})
        served = result.get("details", {}).get("calibration", {}).get(split, {}).get("served", {})
        metrics.update({f"{split}_{name}": value for name, value in served.items()})
    temperature = result.get("details", {}).get("calibration", {}).get("temperature")
    for name, value in {"best_epoch": result["best_epoch"], "temperature": temperature,
                        **{k: result[k] for k in ("trainable_params", "total_params", "train_seconds",
                                                  "train_samples_per_second", "peak_memory_mb")}}.items():
        metrics[name] = value
    return {f"final/{name}": float(value) for name, value in metrics.items()
            if isinstance(value, (int, float)) and math.isfinite(value)}


def _option_values(options: dict) -> dict[str, str | int | float | bool]:
    """The run's options as a tracker's parameters take them: scalars as they are, the rest (lists, None) as JSON."""
    return {k: v if isinstance(v, (str, int, float, bool)) else json.dumps(v) for k, v in options.items()}


@contextlib.contextmanager
def quiet(report_to: str):
    """While a run trains, its tracker speaks as the other libraries do (logs.py): on the console only with
    --verbose, and into train.log. MLflow prints through a logging handler of its own, W&B to the terminal itself."""
    with contextlib.ExitStack() as stack:
        if report_to == "mlflow":
            stack.enter_context(_through_root_logger("mlflow"))
        if report_to == "wandb" and not logs.libraries_verbose():
            stack.enter_context(_environment("WANDB_SILENT", "true"))
        yield


@contextlib.contextmanager
def _through_root_logger(library: str):
    """For the block, the library's logger hands its records to the root logger (where logs.py decides) instead of
    its own stderr handler; as it was after the block, for the rest of the program."""
    importlib.import_module(library)  # it sets up its logger when imported
    logger = logging.getLogger(library)
    handlers, propagate = list(logger.handlers), logger.propagate
    for handler in [h for h in handlers if type(h) is logging.StreamHandler]:
        logger.removeHandler(handler)
    logger.propagate = True
    try:
        yield
    finally:
        logger.handlers, logger.propagate = handlers, propagate


@contextlib.contextmanager
def _environment(name: str, value: str):
    """`name=value` in the environment for the block, unless the user set it."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name, None)
