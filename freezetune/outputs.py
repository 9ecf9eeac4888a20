"""Output locations: checked before any slow work, written whole or not at all, never overwritten silently,
never written by two runs at once, and never littered by a crashed or killed run.

The checks (`check_output_dir`, `check_writable`, `check_not_input`) run before training so a bad output fails
in one line, not after hours. `output_lock` keeps a second run off an output that one run is writing.
Temporary folders carry their creator's pid and host in their name (`.NAME.partial-<pid>@<host>-<random>`),
so the next run removes the ones whose process is dead: a SIGKILL runs no cleanup of its own.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shlex
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from .errors import UserError
from .layout import EXPORT_FILES, RUN_FILES

HOST = socket.gethostname()
# What follows a temporary folder's prefix: "<pid>@<host>-<mkdtemp's random part: [a-z0-9_]>".
_OWNER = re.compile(r"(\d+)@(.+)-[a-z0-9_]+")


def output_path(path: str | os.PathLike) -> Path:
    """`path` as outputs use it (its name, its parent): `~` expanded, and a path ending in `.` or `..` (`.`, `a/..`,
    `/`) resolved, as its own name and parent are not those of the folder it names."""
    out = Path(path).expanduser()
    return out.resolve() if out.name in ("", "..") else out


def check_writable(path: str | os.PathLike, flag: str = "--output-dir") -> Path:
    """Refuse a `path` that cannot be created: probe the nearest existing folder above it with a file.

    Catches a read-only disk, a folder without write permission and a path under a regular file.
    """
    out = output_path(path)
    existing = out.absolute().parent
    while not existing.exists():  # the folders that would be created on the way
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {out}: {existing} is a file, not a folder: choose another {flag}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".freezetune-probe-", dir=existing)
    except OSError as exc:
        raise UserError(f"{flag} {out}: cannot write in {existing} ({exc.strerror}): choose a writable {flag}") from None
    os.close(fd)
    os.unlink(probe)
    return out


# What marks a folder as one freezetune wrote, which `--overwrite` may replace: a training run's files (train, and
# each run of compare or of `--lr auto`), or an export's model beside its marker. Exports from before the marker
# are recognised by model.onnx beside the run_config.json they copied from the trained folder.
FOREIGN = "a folder freezetune did not write"


def describe_output(folder: str | os.PathLike) -> str:
    """What an existing output folder holds, as error messages say it: "an export", "a finished run", "an empty
    folder", or "a folder freezetune did not write" (the only kind `--overwrite` refuses to replace)."""
    folder = Path(folder)
    has = lambda names: all((folder / name).is_file() for name in names)  # noqa: E731
    if any(has(files) for files in EXPORT_FILES):  # before RUN_FILES: an export copies a run's files too
        return "an export"
    if has(RUN_FILES):
        return "a finished run"
    if not any(folder.iterdir()):
        return "an empty folder"
    return FOREIGN


def check_output_dir(path: str | os.PathLike, overwrite: bool, flag: str = "--output-dir") -> Path:
    """Refuse an existing output unless `overwrite`, one that --overwrite may not or cannot replace, and an
    unwritable one; called before any work so nothing is lost."""
    out = output_path(path)
    if out.exists() and not overwrite:
        raise UserError(f"output directory {out} already exists: choose another {flag} or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory: choose another {flag}")
    if out.exists():
        _check_replaceable(out, flag)
    return check_writable(out, flag)


def _check_replaceable(out: Path, flag: str) -> None:
    """An existing `out` is replaced by renaming it away and the new folder into its place (staged_output_dir):
    refuse, before any work, a folder that cannot be renamed or that is not a freezetune output."""
    real, cwd = out.resolve(), Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        where = "the current folder" if real == cwd else f"a folder above the current folder {cwd}"
        raise UserError(f"{flag} {out} is {where}, which cannot be replaced while in use: "
                        f"choose a new folder for {flag}")
    if os.path.ismount(real):
        raise UserError(f"{flag} {out} is a mount point, which cannot be replaced: choose a new folder inside it")
    if not os.access(real, os.R_OK | os.W_OK | os.X_OK):  # moving a folder rewrites its `..`; replacing empties it
        raise UserError(f"{flag} {out}: no permission to replace this folder: choose another {flag}")
    what = describe_output(out)
    if what == FOREIGN:
        raise UserError(f"{flag} {out} is {what} (neither a run with {' and '.join(RUN_FILES)} nor an export with "
                        f"{' and '.join(EXPORT_FILES[0])}); --overwrite would delete its files: choose another {flag}")


def check_not_input(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | list | None],
                    flag: str = "--output-dir") -> None:
    """Refuse an output that is one of the `inputs` ({flag: value or list of values}) or a folder holding one.

    Writing such an output (with --overwrite) would delete the input it is computed from. Inputs that are
    not local paths (hub ids, `builtin:...`) are skipped; symlinks are followed.
    """
    out = Path(output).expanduser().resolve()
    pairs = [(name, v) for name, values in inputs.items() for v in (values if isinstance(values, list) else [values])]
    for input_flag, value in pairs:
        source = Path(value).expanduser() if value else None
        if source is None or not source.exists():
            continue
        source = source.resolve()
        if source == out or out in source.parents:
            what = "is" if source == out else "contains"
            raise UserError(f"{flag} {output} {what} the input {input_flag} {value}; writing it would destroy "
                            f"that input: choose another {flag}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def owned_prefix(prefix: str) -> str:
    """`prefix` plus this process's "<pid>@<host>-": what `remove_stale` reads back."""
    return f"{prefix}{os.getpid()}@{HOST}-"


def stale_folders(folder: Path, prefix: str) -> list[Path]:
    """Folders `prefix<pid>@<host>-*` in `folder` whose process, on this host, is dead."""
    stale = []
    for entry in folder.glob(glob.escape(prefix) + "*"):
        owner = _OWNER.fullmatch(entry.name[len(prefix):])
        if owner and owner[2] == HOST and entry.is_dir() and not _pid_alive(int(owner[1])):
            stale.append(entry)
    return stale


@contextlib.contextmanager
def scratch_dir(prefix: str = "freezetune-"):
    """A private temporary folder (a Path), removed on exit; stale ones of the same prefix are removed first.

    For work files nobody keeps (e.g. the Trainer's `output_dir`, prefix "freezetune-trainer-").
    """
    root = Path(tempfile.gettempdir())
    for stale in stale_folders(root, prefix):
        shutil.rmtree(stale, ignore_errors=True)
    path = Path(tempfile.mkdtemp(prefix=owned_prefix(prefix), dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_stale_stages(out: Path) -> None:
    """Remove what killed runs left beside `out`; a run killed mid-swap gets the previous result put back."""
    for old in stale_folders(out.parent, f".{out.name}.old-"):
        if (old / out.name).exists() and not out.exists():
            os.replace(old / out.name, out)
        shutil.rmtree(old, ignore_errors=True)
    for partial in stale_folders(out.parent, f".{out.name}.partial-"):
        shutil.rmtree(partial, ignore_errors=True)


@contextlib.contextmanager
def staged_output_dir(path: str | os.PathLike, overwrite: bool):
    """Yield a hidden staging folder beside `path`; move it into place only if the block succeeds.

    A crash, Ctrl-C, SIGTERM or error removes the staging folder, so `path` is either the previous result
    (untouched) or the complete new one. A SIGKILL can leave a hidden `.name.partial-*` folder, never `path`;
    the next run into `path` removes it. Hold `output_lock(path)` around the whole run that computes it.
    """
    out = output_path(path)
    if out.parent.is_dir():
        _remove_stale_stages(out)
    out = check_output_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=owned_prefix(f".{out.name}.partial-"), dir=out.parent))
    try:
        yield staging
        if out.exists():  # --overwrite: swap, then delete the old result
            old = Path(tempfile.mkdtemp(prefix=owned_prefix(f".{out.name}.old-"), dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike):
    """Yield a private staging folder inside `folder`; on success move each file written there into `folder`.

    For outputs that are several files in a folder that holds other things too (a study's report beside its
    runs): each file appears whole (a rename), and an error or interruption leaves none of the new files and no
    staging folder behind.
    """
    folder = Path(folder)
    staging = Path(tempfile.mkdtemp(prefix=owned_prefix(".staged-"), dir=folder))
    try:
        yield staging
        for file in sorted(staging.iterdir()):
            os.replace(file, folder / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, flag: str = "--output-dir"):
    """Hold an exclusive lock on the output `path` for the block; a second holder fails at once, naming the first.

    The lock is `flock` on `.NAME.lock` beside `path` (released by the kernel when the process dies, however it
    dies); the file records the holder's pid, host and command, and is removed on exit, with the folders above
    `path` the lock had to create if nothing else was written into them (a run refused for its data leaves no
    empty folders behind). Not re-entrant: take it once per run, around everything that computes and writes
    `path`.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    out = check_writable(path, flag)
    created = [folder for folder in (out.parent, *out.parent.parents) if not folder.exists()]
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "a process that has not said who it is"
            os.close(fd)
            raise UserError(f"{out} is being written by another run ({holder}): wait for it to finish "
                            f"or choose another {flag}") from None
        # The previous holder unlinks the file on release: if it did so between our open and flock, we hold a
        # lock on a file nobody else will see; retry on the one now at `lock`.
        try:
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {HOST}: {shlex.join(sys.argv)}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
        os.close(fd)
        for folder in created:  # deepest first; one that holds anything stays, and so do those above it
            try:
                folder.rmdir()
            except OSError:
                break


# A CSV cell starting with one of these is run as a formula by Excel, LibreOffice and Google Sheets (OWASP
# "CSV injection"): a text like `=HYPERLINK(...)` in a file of predictions must stay text.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell):
    """`cell` with a `'` in front if a spreadsheet would read it as a formula (the OWASP rule); else unchanged."""
    return f"'{cell}" if isinstance(cell, str) and cell.startswith(FORMULA_START) else cell


# Plain text output is one line per text, its fields separated by tabs: a field's own line breaks and tabs are
# written as the escapes \n, \r, \t (and a backslash as \\), so line N is text N and the text reads back whole.
_LINE_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def one_line(field: str) -> str:
    """`field` with backslash, newline, carriage return and tab escaped: one line, no tab (see _LINE_ESCAPES)."""
    return str(field).translate(_LINE_ESCAPES)


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write through a temporary file beside `path` and rename; on failure the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
