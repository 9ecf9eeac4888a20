"""The Trainer's progress output as freezetune shows it: one bar over the training steps, nothing else.

The Trainer's own `ProgressCallback` adds a bar per evaluation and prints every log dict (`{'loss': ...}`,
`{'eval_loss': ...}`, `{'train_runtime': ...}`) to stdout between the bar's lines; without a bar, its
`PrinterCallback` prints them; in Jupyter its `NotebookProgressCallback` draws an HTML table of its own beside
freezetune's bar. freezetune says each epoch's numbers in its own line, and train.log keeps the
whole log history, so both give way to one bar, unless `--verbose` asks for the libraries' own output.
"""

from __future__ import annotations

import contextlib
import sys

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from .. import logs


class _StepBar(TrainerCallback):
    """Opens its bar when the Trainer knows the number of steps; `bars` (an ExitStack) closes it, whatever happens."""

    def __init__(self, bars: contextlib.ExitStack):
        self.bars, self.bar = bars, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = self.bars.enter_context(logs.progress_bar(total=state.max_steps, desc="training", unit="step"))
        self.bar.update(state.global_step)  # resumed: the steps already done

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        self.bars.close()


def _notebook_callback() -> tuple:
    """The Trainer's notebook table, if it may be there: the Trainer imports its module only in a notebook, and
    importing it here would cost every run IPython's import (0.6 s)."""
    module = sys.modules.get("transformers.utils.notebook")
    return (module.NotebookProgressCallback,) if module is not None else ()


@contextlib.contextmanager
def training_progress(trainer):
    """While `trainer` trains in the block: one step bar (see logs.progress_bar) instead of the Trainer's output."""
    if logs.libraries_verbose():
        yield
        return
    for callback in (ProgressCallback, PrinterCallback, *_notebook_callback()):
        trainer.remove_callback(callback)
    with contextlib.ExitStack() as bars:
        callback = _StepBar(bars)
        trainer.add_callback(callback)
        try:
            yield
        finally:
            trainer.remove_callback(callback)
