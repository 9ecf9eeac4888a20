"""Resumable training: a checkpoint at the end of every epoch beside OUT, so `--resume` continues a stopped run.

A run keeps its checkpoint in `.NAME.resume/` beside its output folder OUT (NAME is OUT's folder name):

    run.json             the run's options and a fingerprint of its tokenized data: a resumed run must match both
    checkpoint-STEP/     the last completed epoch. The Trainer's own checkpoint (the model as it trains, the
                         optimizer and LR-scheduler state, the RNG states, trainer_state.json with the epoch,
                         step and log history) plus ours:
        freezetune.pt    the best epoch so far (its weights, score and the epochs since), with --ema the weights'
                         average, the training seconds so far and whether training had ended. Written last: a
                         checkpoint without it is incomplete.

The Trainer resumes itself (`trainer.train(resume_from_checkpoint=...)`): it reloads the weights, the optimizer
and scheduler, the trainer state and, at the resumed epoch's start, the RNG states, so the batches and the dropout
of the remaining epochs are those of an uninterrupted run and so are the results. That holds on our fast paths
because a resumed run sets them up the same way before the Trainer reloads the model: the checkpoint's state_dict
is that of the model as it trains (with the prefix cache: cut to its top layers; with compact embeddings:
`weight_rows`), and loads back into the same structure. Gradual unfreezing saves nothing: its callback derives
what is unfrozen from the epoch and step it is called at.

A kill or power cut at any moment leaves the last complete checkpoint whole: the Trainer's files are made durable
(fsync) before our file is renamed into place, and the previous checkpoint is deleted only after that. Ctrl-C and
SIGTERM keep it too; a run that fails for a reason of its input (e.g. it diverged) removes it, as continuing
would fail the same way. It is removed once OUT is written; until then a run into OUT without `--resume` is
refused (or starts again with `--overwrite`), so no progress is lost silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..config import WHERE_AND_HOW, field_defaults
from ..errors import UserError
from ..outputs import FOREIGN, check_output_dir, describe_output, output_path

RECORD_FILE, MARKER_FILE, TRAINER_STATE_FILE = "run.json", "freezetune.pt", "trainer_state.json"
log = logging.getLogger("freezetune")


def resume_dir(output_dir: str | os.PathLike) -> Path:
    """`.NAME.resume` beside the output folder: where a run into `output_dir` keeps its checkpoint."""
    out = output_path(output_dir)
    return out.parent / f".{out.name}.resume"


def resumable(output_dir: str | os.PathLike) -> bool:
    """Whether a run into `output_dir` stopped after completing an epoch, so `--resume` can continue it."""
    return bool(complete_checkpoints(resume_dir(output_dir)))


def complete_checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints in `folder` (ours written last), oldest first."""
    found = [p for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if (p / MARKER_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.rpartition("-")[2]))


def run_defining(config) -> dict:
    """The options a resumed run must share with the run it continues, as JSON values."""
    return json.loads(json.dumps({k: v for k, v in config.to_dict().items() if k not in WHERE_AND_HOW}))


def data_fingerprint(label_names, *features: list[dict]) -> str:
    """A hash of the label names and tokenized examples: a resumed run must train on the same data."""
    return hashlib.sha256(json.dumps([list(label_names), *features], sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass
class Checkpoints:
    """The epoch-end checkpoints of one run: opened in `prepare`, used by `fit`, removed once OUT is written."""

    folder: Path
    options: dict
    resume: bool
    data: str = ""
    """The data fingerprint, recorded with the options in run.json."""
    seconds_before: float = 0.0
    """Training seconds of the sessions before this one (a resumed run reports the sum)."""
    started: float = dataclasses.field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, config) -> Checkpoints:
        """The checks that need no data, before any work: what `--resume` needs; that a fresh run loses no progress."""
        out = output_path(config.output_dir)
        folder, options = resume_dir(out), run_defining(config)
        if config.resume:
            _check_resumable(out, folder, options, field_defaults(type(config)))
        elif config.overwrite or not resumable(out):  # start again; without a complete checkpoint nothing is lost
            check_output_dir(out, config.overwrite)  # first: an output refused keeps the checkpoint beside it too
            shutil.rmtree(folder, ignore_errors=True)
        elif not out.exists():  # (an existing OUT is refused next, naming --overwrite)
            raise UserError(f"{out} has an unfinished run (its checkpoint {folder} is beside it): pass --resume to "
                            "continue it, or --overwrite to start again")
        return cls(folder, options, config.resume)

    def start(self, data: str, main: bool, say=log.info) -> Path | None:
        """Check a resumed run's data; returns the checkpoint to continue from (None: a fresh start)."""
        self.data, self.started = data, time.perf_counter()
        if not self.resume:
            return None
        if _read_record(self.folder)["data"] != data:
            raise UserError(f"--resume: the data of {self.folder}'s run differ from this run's (other files or "
                            "content, or --distill-from teachers that now predict otherwise): use the same data and "
                            "teachers, or pass --overwrite instead of --resume to start again")
        complete = complete_checkpoints(self.folder)
        if main:  # what a kill interrupted while it was being written
            for partial in set(self.folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")) - set(complete):
                shutil.rmtree(partial, ignore_errors=True)
        latest = complete[-1]
        state = TrainerState.load_from_json(str(latest / TRAINER_STATE_FILE))
        say(f"resuming after epoch {round(state.epoch)} (step {state.global_step}) from {latest}")
        return latest

    def train(self, trainer, states: dict, checkpoint: Path | None) -> None:
        """`trainer.train()`, continued from `checkpoint` when there is one (see the module docstring).

        `states`: the callbacks whose state a checkpoint keeps, by name ("best": the BestEpochCallback)."""
        try:
            if checkpoint is None:
                trainer.train()
                return
            saved = torch.load(checkpoint / MARKER_FILE, map_location="cpu", weights_only=True)
            for name, callback in states.items():
                callback.load_state_dict(saved[name])
            self.seconds_before = saved["seconds"]
            if saved["done"]:  # stopped after the last epoch (or by early stopping): nothing left to train
                trainer.state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE_FILE))
            else:
                trainer.train(resume_from_checkpoint=str(checkpoint))
        except BaseException as exc:  # Ctrl-C, SIGTERM (a scheduler's time limit), an error: keep the progress,
            # unless there is none yet, or the run failed for a reason of its input (e.g. it diverged): continuing
            # it would fail the same way.
            if isinstance(exc, UserError) or not complete_checkpoints(self.folder):
                self.remove()
            else:
                log.info(f"the last completed epoch is kept in {self.folder}: the same command with --resume continues")
            raise

    def seconds(self) -> float:
        """Training seconds of this run so far, over every session."""
        return self.seconds_before + time.perf_counter() - self.started

    def record(self) -> bytes:
        return json.dumps({"options": self.options, "data": self.data}, indent=2).encode()

    def callback(self, states: dict) -> TrainerCallback:
        return _CompleteCheckpoint(self, states)

    def remove(self) -> None:
        """Once OUT is written, the checkpoint has served."""
        shutil.rmtree(self.folder, ignore_errors=True)


class _CompleteCheckpoint(TrainerCallback):
    """After the Trainer saved an epoch's checkpoint: make it durable, add our callbacks' states (the best epoch's,
    the weights' average), mark it complete, and delete the previous one.

    Must come after those callbacks in the Trainer's callbacks (the epoch's evaluation updates them first).
    """

    def __init__(self, checkpoints: Checkpoints, states: dict):
        self.checkpoints, self.states = checkpoints, states

    def on_save(self, args, state, control, **kwargs):
        if not args.should_save:
            return
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        for path in folder.rglob("*"):
            if path.is_file():
                _fsync(path)
        record = folder.parent / RECORD_FILE
        if not record.is_file():  # the first checkpoint: what a resumed run must match
            write_durably(record, self.checkpoints.record())
        done = bool(control.should_training_stop)  # the last epoch, or early stopping
        saved = {**{name: callback.state_dict() for name, callback in self.states.items()},
                 "seconds": self.checkpoints.seconds(), "done": done}
        write_durably(folder / MARKER_FILE, saved)
        for older in complete_checkpoints(folder.parent)[:-1]:
            (older / MARKER_FILE).unlink()  # first, so a kill while deleting leaves it incomplete, not half
            shutil.rmtree(older)


def _check_resumable(out: Path, folder: Path, options: dict, defaults: dict) -> None:
    """`defaults`: the options' defaults, for those a checkpoint from an older version does not record."""
    if out.exists():
        what = describe_output(out) if out.is_dir() else "a file"
        if what in (FOREIGN, "a file"):
            raise UserError(f"--resume: {out} is {what}, not a run of freezetune, so there is nothing to resume: "
                            "choose another --output-dir")
        raise UserError(f"--resume: {out} already exists ({what}), so there is nothing to resume; to continue "
                        f"a run started with --overwrite, move {out} away first")
    if not resumable(out):
        raise UserError(f"--resume: no checkpoint of an unfinished run into {out} (it would be in {folder}): "
                        "run without --resume")
    saved = json.loads(json.dumps({k: v for k, v in defaults.items() if k in options}))
    saved.update(_read_record(folder)["options"])
    changed = sorted(k for k in saved.keys() | options.keys() if saved.get(k) != options.get(k))
    if changed:
        raise UserError(f"--resume: the checkpoint {folder} is of a run with other {', '.join(changed)}: resume with "
                        "the same options, or pass --overwrite instead of --resume to start again")
    _check_intact(complete_checkpoints(folder)[-1])


def _check_intact(checkpoint: Path) -> None:
    """Refuse a damaged checkpoint (a full disk, a copy cut short) before any work, naming the file; otherwise the
    library reading it fails with its own error once the model is loaded. Reads each file's index, not all its data:
    a safetensors header against the file's length, the zip directory of torch's files, JSON whole."""
    from safetensors import SafetensorError, safe_open

    for path in sorted(p for p in checkpoint.rglob("*") if p.is_file()):
        try:
            if path.suffix == ".safetensors":
                with safe_open(str(path), "pt") as weights:
                    weights.keys()
            elif path.suffix in (".pt", ".pth", ".bin"):  # torch.save writes a zip archive
                zipfile.ZipFile(path).close()
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, zipfile.BadZipFile, SafetensorError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--resume: the checkpoint {checkpoint} is damaged ({path.name}: {reason}): pass "
                            "--overwrite instead of --resume to start afresh") from None


def _read_record(folder: Path) -> dict:
    try:
        return json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"--resume: cannot read {folder / RECORD_FILE} ({exc}): pass --overwrite instead of "
                        "--resume to start again") from None


def write_durably(path: Path, data: bytes | object) -> None:
    """Write `data` (bytes, or anything `torch.save` takes) to `path` so that it survives a power cut whole or not at
    all: a temporary file, fsync, rename, fsync of the folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as file:
            if isinstance(data, bytes):
                file.write(data)
            else:
                torch.save(data, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
