"""One run on several processes (`torchrun`, `accelerate launch`): who writes, and failing together.

Every process trains (the Trainer wraps the model in DistributedDataParallel); only the main one, global rank
0, writes the output folder (the Trainer's `args.should_save`), so only it takes the output lock. A check that
fails on one process only (the lock, held by another run) must stop them all: otherwise the others wait for
it in their first collective until the launcher kills them. `output_lock_on_main` shares the outcome.

The launchers say who is who in the environment (`RANK`, `WORLD_SIZE`), which is what accelerate reads too.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from ..errors import UserError
from ..layout import is_main_process, world_size
from ..outputs import output_lock


@contextlib.contextmanager
def output_lock_on_main(path):
    """`outputs.output_lock(path)` held by the main process for the block; every process fails if it cannot be taken."""
    if world_size() == 1:
        with output_lock(path):
            yield
        return
    with contextlib.ExitStack() as held:
        error = None
        if is_main_process():
            try:
                held.enter_context(output_lock(path))
            except UserError as exc:
                error = str(exc)
        raise_if_any(error)
        yield


def raise_if_any(error: str | None) -> None:
    """Every process raises UserError(the first error any process reports); none raises if none reports one."""
    import torch.distributed as dist

    _join_process_group()
    errors: list[str | None] = [None] * world_size()
    dist.all_gather_object(errors, error)
    first = next((e for e in errors if e), None)
    if first:
        raise UserError(first)


def _join_process_group() -> None:
    """Join the launcher's process group now, as the Trainer will: accelerate keeps an initialised group.

    The arguments are `TrainingArguments`' own (its `use_cpu` = no GPU, its default `ddp_timeout`), so the
    Trainer finds the group it would have made.
    """
    from accelerate import PartialState

    from ..precision import device_type

    PartialState(cpu=device_type() == "cpu", timeout=timedelta(seconds=1800))


def refuse_unfollowable(strategy_spec: str, later_trainable: list) -> None:
    """Refuse a strategy that unfreezes parameters during the run (gradual) on several processes.

    DistributedDataParallel averages the gradients of the parameters that train when it wraps the model; one
    unfrozen later would train on each process apart, so the copies would silently drift.
    """
    if world_size() > 1 and later_trainable:
        raise UserError(f"strategy {strategy_spec!r} unfreezes layers during the run, which several processes "
                        "(torchrun, accelerate launch) cannot follow: run it in one process")
