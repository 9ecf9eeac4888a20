"""The `serve` command's flags, and the request limits the server enforces (reported at GET /info)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from ..errors import UserError
from ..inference.backends import add_predictor_arguments


@dataclass(frozen=True)
class ServeLimits:
    """What one request may hold, and how concurrent requests are gathered into model calls (reported at /info)."""

    max_texts: int = 256
    """Texts per request (more: 422)."""
    max_chars: int = 2000
    """Characters per text (more: 422). The model reads only the first max_length tokens anyway."""
    max_body_bytes: int = 4 * 1024 * 1024
    """Request body size (more: 413). 256 texts of 2000 CJK characters as \\uXXXX escapes fit."""
    max_batch: int = 64
    """Texts per model call: concurrent requests are gathered up to this many (a larger request runs alone,
    sorted by length and split into batches of --batch-size, as `predict` runs a file)."""
    max_wait_ms: float = 5.0
    """How long the first waiting request waits for others to join its batch (0: never waits)."""
    workers: int = 1
    """Model calls that run at once, each on its own thread (see batching.py for why more than one)."""

    def __post_init__(self):
        for name in ("max_texts", "max_chars", "max_body_bytes", "max_batch", "workers"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise UserError(f"--max-wait-ms must be between 0 and 1000, got {self.max_wait_ms}")

    def to_dict(self) -> dict:
        return asdict(self)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ServeLimits()
    parser.add_argument("--model", required=True, help="a folder written by `freezetune train` (or `export`, with --backend onnx)")
    add_predictor_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s; 0: any free port)")
    parser.add_argument("--max-texts", type=int, default=defaults.max_texts, help="texts per request (default: %(default)s)")
    parser.add_argument("--max-chars", type=int, default=defaults.max_chars, help="characters per text (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes,
                        help="request body size in bytes (default: %(default)s)")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch,
                        help="texts per model call, gathered across concurrent requests (default: %(default)s)")
    parser.add_argument("--workers", type=int, help="model calls at once, each on its own thread (default: one per core)")
    parser.add_argument("--threads", type=int, default=1,
                        help="compute threads of each model call (default 1; with --workers 1, the cores: lowest latency when idle)")
    parser.add_argument("--max-wait-ms", type=float, default=defaults.max_wait_ms,
                        help="how long a request waits for others to share its model call (default: %(default)s)")
    parser.add_argument("--log-texts", action="store_true", help="log each request's texts (default: only counts and timings)")


def limits_from_args(args, cores: int) -> ServeLimits:
    """The limits the flags ask for; `--workers` defaults to `cores`."""
    return ServeLimits(max_texts=args.max_texts, max_chars=args.max_chars, max_body_bytes=args.max_body_bytes,
                       max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                       workers=args.workers if args.workers is not None else cores)
