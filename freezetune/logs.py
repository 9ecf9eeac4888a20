"""What freezetune shows of the libraries it runs on, and what a run's train.log keeps of them.

On the command line the user reads freezetune's own lines (the `freezetune` logger, `[freezetune] ...`) and one
progress bar per phase. The libraries' own messages (transformers' LOAD REPORT, onnxruntime's advice, Python
warnings) and transformers' progress bars ("Loading weights", "Writing model shards") appear only with
`--verbose`; what matters in them freezetune says in its own words (models/__init__.py: a new head, missing
encoder weights). Whatever the CLI shows, a training run keeps the libraries' messages in its train.log
(`captured`), so nothing is lost by hiding them.

Library switches only: transformers' and huggingface_hub's loggers hand their records to the root logger
(their own stderr handlers removed), where one handler prints them or not; transformers' tqdm hook hides its
bars (downloads from the hub keep theirs: a download is a phase of its own); `logging.captureWarnings` routes
Python warnings through the same handler.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator

from .layout import is_main_process

LOADING_LOGGER = "freezetune.loading"
"""freezetune's lines about what a model load did: on stderr like every freezetune line, and kept in train.log
beside the library's own report."""
_OWN_HANDLERS = ("transformers", "huggingface_hub")  # libraries that print through a stderr handler of their own
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # transformers colours its report on a terminal

_verbose = False
_captures: list[list[str]] = []
_bars_open = 0


def libraries_verbose() -> bool:
    """Whether the libraries' own output is shown (`--verbose`); off for the Python API too."""
    return _verbose


def show_library_output(verbose: bool) -> None:
    """The command line's policy: the libraries' messages and transformers' bars on stderr only if `verbose`.

    Imports transformers' logging (about a second), so the CLI calls it once a command is about to run, not for
    `--help`. Safe to call again (each `main` call in one process sets its own choice).
    """
    global _verbose
    _verbose = verbose
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    hub_root = logging.getLogger("huggingface_hub")
    for handler in [h for h in hub_root.handlers if type(h) is logging.StreamHandler]:
        hub_root.removeHandler(handler)  # its records reach the root logger (it propagates), where we decide
    hub_root.propagate = True
    root = logging.getLogger()
    console = next((h for h in root.handlers if isinstance(h, _LibraryConsole)), None)
    if console is None:
        # Also keeps logging.basicConfig (which onnxruntime's logging.warning() calls) from adding a handler.
        root.addHandler(console := _LibraryConsole())
    console.setLevel(logging.NOTSET if verbose else logging.CRITICAL + 1)
    logging.captureWarnings(True)
    _transformers_bars(verbose)


def _hide_bar(factory, args, kwargs):
    """transformers' tqdm hook: its bars (loading and saving weights) drawn by nobody."""
    from transformers.utils.logging import EmptyTqdm

    return EmptyTqdm(*args, **kwargs)


def _transformers_bars(show: bool) -> None:
    from transformers.utils import logging as transformers_logging

    set_hook = getattr(transformers_logging, "set_tqdm_hook", None)
    if set_hook is None:  # an older transformers: its switch turns the hub's download bars off too
        (transformers_logging.enable_progress_bar if show else transformers_logging.disable_progress_bar)()
        return
    previous = set_hook(None if show else _hide_bar)
    if show and previous not in (None, _hide_bar):
        set_hook(previous)  # someone else's hook: not ours to remove


class _LibraryConsole(logging.Handler):
    """On the root logger: the libraries' records on stderr as `[library] message` (its level says whether).

    freezetune's own records pass through here too (they propagate) and are left to their own handler.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] == "freezetune":
            return
        try:
            write_stderr(format_library_record(record))
        except Exception:
            self.handleError(record)


def format_library_record(record: logging.LogRecord) -> str:
    source = {"root": "log", "py": "warning"}.get(record.name.split(".")[0], record.name.split(".")[0])
    return f"[{source}] {_ANSI.sub('', record.getMessage())}"


def write_stderr(text: str) -> None:
    """A line on stderr that does not break a progress bar being drawn there (the bar is redrawn below it)."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)
    sys.stderr.flush()


class _Capture(logging.Handler):
    """Appends each record to every open `captured` list, once (it sits on several loggers a record may pass)."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "_freezetune_captured", False):
            return
        record._freezetune_captured = True
        name = record.name
        if name.split(".")[0] == "freezetune" and not name.startswith(LOADING_LOGGER):
            return  # freezetune's other lines: a run keeps its own (Run.say)
        line = format_library_record(record) if not name.startswith("freezetune") else f"[freezetune] {record.getMessage()}"
        for lines in _captures:
            lines.append(line)


_CAPTURE = _Capture()


@contextlib.contextmanager
def captured() -> Iterator[list[str]]:
    """The libraries' messages (and freezetune's loading lines) logged inside the block, shown or not: for train.log.

    Works without the CLI too: the handler sits on the loggers that do not hand their records to the root one.
    """
    lines: list[str] = []
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in (*_OWN_HANDLERS, LOADING_LOGGER))]
    if not _captures:
        for logger in loggers:
            logger.addHandler(_CAPTURE)
    _captures.append(lines)
    try:
        yield lines
    finally:
        _captures.remove(lines)
        if not _captures:
            for logger in loggers:
                logger.removeHandler(_CAPTURE)


def captured_lines() -> list[str]:
    """What the innermost open `captured` block holds so far (empty outside one)."""
    return list(_captures[-1]) if _captures else []


@contextlib.contextmanager
def progress_bar(**tqdm_kwargs) -> Iterator:
    """The bar of one phase of the work (a study's runs, a training's steps), drawn by tqdm.auto (a widget in Jupyter,
    a text bar in a terminal, none into a file or a pipe: `_drawn_bar`).

    One bar at a time: a bar opened inside another one's block (a study's run, training) is hidden, and so are all
    bars when freezetune's log is quiet (a program that did not ask for it, the other processes of a multi-process
    run).
    """
    global _bars_open
    from tqdm.auto import tqdm

    hidden = _bars_open > 0 or not logging.getLogger("freezetune").isEnabledFor(logging.INFO)
    _bars_open += 1
    try:
        with (tqdm(disable=True, **tqdm_kwargs) if hidden else _drawn_bar(**tqdm_kwargs)) as bar:
            yield bar
    finally:
        _bars_open -= 1


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (whose front-end draws tqdm's bars, widgets or not)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _drawn_bar(**kwargs):
    """tqdm.auto's bar: a widget in Jupyter (a text bar there without ipywidgets), a text bar in a terminal, and
    none when stderr is a file or a pipe, where each redraw would be one more carriage return in the log (the
    runs' own log lines say how far a study is)."""
    from tqdm.auto import tqdm

    return tqdm(disable=False if in_notebook() else None, **kwargs)


LOG_FORMAT = "[freezetune] %(message)s"  # the CLI's voice: its stderr lines, and the Python API's


@contextlib.contextmanager
def cli_voice():
    """For the call: the `freezetune` logger's info lines on stderr, as the CLI prints them, unless the program
    configured that logger itself. Without them the Trainer would also print raw dicts instead of its bars
    (it shows bars only when freezetune's logger is at INFO). As in the CLI without --verbose, transformers'
    console output (its LOAD REPORT tables) and loading bars stay off for the call, and train.log still keeps
    them: freezetune's own lines say what a load did. Everything is as the program had it afterwards."""
    logger = logging.getLogger("freezetune")
    if logger.handlers or logger.level != logging.NOTSET or not is_main_process():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the root logger's handlers, if any, would print each line a second time
    try:
        with _quiet_transformers():
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' console handler and bars off for the block; its records still reach `captured` (train.log)."""
    from transformers.utils import logging as transformers_logging

    library = logging.getLogger("transformers")
    console = transformers_logging._default_handler  # None until transformers configures its logger
    had_console = console is not None and console in library.handlers
    bars = transformers_logging.is_progress_bar_enabled()
    if had_console:
        library.removeHandler(console)
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if had_console and console not in library.handlers:
            library.addHandler(console)
        if bars:
            transformers_logging.enable_progress_bar()
