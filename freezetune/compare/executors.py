"""Where a study's cells run: one after another in this process (`serial`), or each as a Ray task (`ray`).

A cell is one (strategy, seed[, lr]) run, `grid.execute`. Both executors take the cells still to run and a
progress bar; `study.run_all` decides which cells those are (the ones without metrics.json), so `--resume`
works the same with both.

`serial` is the study's loop: the first failure stops the study, with its traceback if it is a bug.

`ray` submits every cell at once, each asking for `--ray-cpus-per-run` CPUs and `--ray-gpus-per-run` GPUs, to a
local Ray started here or to a running cluster (`--ray-address`). The splits travel to the workers through Ray's
object store (`ray.put`, once), so the data may exist on this machine only. Results travel back the same way:
a worker runs its cell into a scratch folder of its own node and returns the folder's files, and this process
writes them into the study folder (staged: whole or absent). So no shared filesystem is needed, and this
process, which holds the study's lock, is the only one that writes there. Each worker must be able to load the
model (a hub id, `builtin:...`, or a path that exists on every node) and have freezetune installed. A cell that
fails does not stop the others: when all have ended, the study stops with one line naming each failed cell and
its error, and `--resume` runs only those again.

Ray is imported only when a Ray executor is made: `freezetune --help` and serial studies never load it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
from pathlib import Path

from freezetune.compare.grid import Run, execute
from freezetune.errors import UserError
from freezetune.layout import RUN_CONFIG_FILE
from freezetune.logs import libraries_verbose, show_library_output
from freezetune.outputs import scratch_dir, staged_output_dir, write_json_atomic

log = logging.getLogger("freezetune")


class SerialExecutor:
    """Each cell in turn, in this process."""

    def run(self, runs: list[Run], splits, options, out: Path, progress) -> None:
        for run in runs:
            progress.set_postfix_str(run.name)
            execute(run, splits, options, out)
            progress.update()


class RayExecutor:
    """Each cell as a Ray task with its own CPU/GPU request; results are written here (see the module docstring)."""

    def __init__(self, cpus_per_run: float, gpus_per_run: float):
        self.cpus_per_run, self.gpus_per_run = cpus_per_run, gpus_per_run
        self._shipped = None  # (splits, their object ref): put once per study

    def run(self, runs: list[Run], splits, options, out: Path, progress) -> None:
        import ray

        task = ray.remote(_run_cell).options(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run)
        splits_ref = self._ship(splits)
        pending = {task.remote(run, splits_ref, options, libraries_verbose()): run for run in runs}
        failures: list[tuple[Run, str]] = []
        progress.set_postfix_str(f"{len(pending)} running or queued")
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                run = pending.pop(ref)
                try:
                    files = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    failures.append((run, _reason(exc)))
                    log.error("%s failed: %s", run.name, failures[-1][1])
                else:
                    write_cell(files, run.folder(out))
                progress.set_postfix_str(f"{len(pending)} running or queued" if pending else "")
                progress.update()
        except BaseException:  # Ctrl-C, SIGTERM: stop the cells still running; none of theirs is written here
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        if failures:
            raise UserError(f"{len(failures)} of {len(runs)} runs failed: "
                            + "; ".join(f"{run.name}: {reason}" for run, reason in failures)
                            + ". The other runs are finished: fix the cause and rerun with --resume to run only these")

    def _ship(self, splits):
        import ray

        if self._shipped is None or self._shipped[0] is not splits:
            self._shipped = (splits, ray.put(splits))
        return self._shipped[1]


def _run_cell(run: Run, splits, options, verbose: bool = False) -> dict[str, bytes]:
    """On a Ray worker: run the cell into a scratch folder of this node; return its files {relative path: bytes}.

    The worker's output reaches the study's console (Ray forwards it): the libraries' own messages only if the
    study was asked for them (`--verbose`), as in the study's own process."""
    show_library_output(verbose)
    with scratch_dir("freezetune-ray-") as root:
        execute(run, splits, options, root)
        folder = run.folder(root)
        return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def write_cell(files: dict[str, bytes], folder: Path) -> None:
    """Write a cell's files into `folder` whole or not at all (an unfinished run's folder is replaced).

    run_config.json records where the run lives: here, not the worker's scratch folder it was computed in.
    """
    with staged_output_dir(folder, overwrite=True) as stage:
        for name, data in files.items():
            path = stage / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if (stage / RUN_CONFIG_FILE).is_file():
            config = json.loads((stage / RUN_CONFIG_FILE).read_text(encoding="utf-8"))
            write_json_atomic(stage / RUN_CONFIG_FILE, {**config, "output_dir": str(folder)})


def _reason(exc) -> str:
    """A failed task's error in one line: a UserError's own message, or the exception's type and first line."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, UserError):
        return str(cause)
    first = next((line for line in str(cause).splitlines() if line.strip()), "")
    return f"{type(cause).__name__}: {first}".rstrip(": ")


# --- choosing and opening an executor ---------------------------------------------------------------------------

def check_executor_options(executor: str, address: str | None, cpus_per_run: float, gpus_per_run: float) -> None:
    """The executor options make sense together, and Ray is installed if it is asked for (before any work)."""
    if executor not in ("serial", "ray"):
        raise UserError(f"--executor {executor!r} is not valid: use one of serial, ray")
    if not (math.isfinite(cpus_per_run) and cpus_per_run > 0):
        raise UserError(f"--ray-cpus-per-run must be a positive number, got {cpus_per_run:g}")
    if not (math.isfinite(gpus_per_run) and gpus_per_run >= 0):
        raise UserError(f"--ray-gpus-per-run must be a number >= 0, got {gpus_per_run:g}")
    if executor == "serial" and (address is not None or cpus_per_run != 1 or gpus_per_run != 0):
        raise UserError("--ray-address, --ray-cpus-per-run and --ray-gpus-per-run apply to --executor ray: add it, "
                        "or leave them out")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise UserError("--executor ray needs Ray: pip install 'freezetune[ray]'")


@contextlib.contextmanager
def open_executor(options):
    """The study's executor for the block; a Ray connection made here is closed after it."""
    if options.executor == "serial":
        yield SerialExecutor()
        return
    import ray

    connected_here = _connect(options.ray_address)
    try:
        _check_fits(options.ray_cpus_per_run, options.ray_gpus_per_run, local=connected_here and not options.ray_address)
        yield RayExecutor(options.ray_cpus_per_run, options.ray_gpus_per_run)
    finally:
        if connected_here:
            ray.shutdown()


def _connect(address: str | None) -> bool:
    """Join the cluster at `address`, or start a local Ray; reuse one this process already joined. True if joined here."""
    import ray

    if ray.is_initialized():
        if address:
            raise UserError(f"Ray is already initialised in this process, so --ray-address {address} cannot be "
                            "joined: leave --ray-address out to use it")
        return False
    try:
        ray.init(address=address)
    except ConnectionError as exc:
        raise UserError(f"cannot join Ray at --ray-address {address}: {str(exc).splitlines()[0]} Start one with "
                        "`ray start --head`, or leave --ray-address out for a local Ray") from None
    log.info("Ray: %s", "a local Ray on this machine" if not address else f"the cluster at {address}")
    return True


def _check_fits(cpus: float, gpus: float, local: bool) -> None:
    """A run asking for more than any node has would wait forever: refuse it on a local Ray, warn on a cluster
    (an autoscaler may still add a node that fits)."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        return
    largest = max(nodes, key=lambda node: (node.get("GPU", 0), node.get("CPU", 0)), default={})
    message = (f"each run asks for {cpus:g} CPUs and {gpus:g} GPUs, but no Ray node has that much (the largest has "
               f"{largest.get('CPU', 0):g} CPUs, {largest.get('GPU', 0):g} GPUs)")
    if local:
        raise UserError(f"{message}: lower --ray-cpus-per-run / --ray-gpus-per-run")
    log.warning("%s; the runs wait until such a node joins", message)
