"""Output directories that appear whole or not at all, and never overwrite results silently."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import UserError


def check_output_dir(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an existing output unless `overwrite`; called before any work so nothing is lost."""
    out = Path(path).expanduser()
    if out.exists() and not overwrite:
        raise UserError(f"output directory {out} already exists: choose another --output-dir or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a directory: choose another --output-dir")
    return out


@contextlib.contextmanager
def staged_output_dir(path: str | os.PathLike, overwrite: bool):
    """Yield a hidden staging folder beside `path`; move it into place only if the block succeeds.

    A crash, Ctrl-C or error removes the staging folder, so `path` is either the previous result
    (untouched) or the complete new one. (A SIGKILL can leave a hidden `.name.partial-*` folder, never `path`.)
    """
    out = check_output_dir(path, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        if out.exists():  # --overwrite: swap, then delete the old result
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
