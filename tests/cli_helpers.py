"""What the CLI tests share: run a command in-process, read its one error line, and prove nothing was touched or
that a check ran before the slow work."""

from __future__ import annotations

from pathlib import Path

from freezetune.cli import main


def run(capture, *argv):
    """`freezetune ARGV` in this process: (exit code, stdout, stderr). `capture`: pytest's capsys, or capfd where
    the libraries may write to the file descriptors themselves."""
    code = main([str(a) for a in argv])
    out, err = capture.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The error line, checked to be the only line on stderr that says so, the last one, without a traceback."""
    errors = [line for line in err.splitlines() if line.startswith("freezetune: error: ")]
    assert len(errors) == 1 and err.splitlines()[-1] == errors[0] and "Traceback" not in err, err
    return errors[0]


def tree(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too) with its size and mtime, and every folder: to prove nothing was
    touched. (Not the folders' mtimes: a run's lock file beside its output comes and goes, as it should.)"""
    return {str(p.relative_to(folder)): p.is_dir() or (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def forbid(monkeypatch, *targets):
    """Make the slow steps fail loudly, to prove a check runs before them."""
    def slow(*args, **kwargs):
        raise AssertionError("slow work started before the check")
    for target in targets:
        monkeypatch.setattr(target, slow)
