"""`freezetune serve`: check the flags, bind the socket, load the model, run uvicorn until SIGTERM or Ctrl-C.

The socket is bound before the model loads, so a busy port fails in a second with one line, and a client that
connects while the model loads waits in the listen backlog instead of being refused. On SIGTERM (or Ctrl-C)
uvicorn stops accepting, lets in-flight requests finish (at most `GRACEFUL_SHUTDOWN_S`), then the app's
lifespan stops the batcher; the command then exits 0.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import signal
import socket
import sys
import time
from pathlib import Path

from ..errors import UserError
from ..inference.backends import describe_precision, load_predictor
from ..modelcard import folder_facts
from .options import ServeLimits, limits_from_args

GRACEFUL_SHUTDOWN_S = 30
LISTEN_BACKLOG = 2048
LOGGER = logging.getLogger("freezetune.serve")


def require_serve_dependencies() -> None:
    missing = [name for name in ("fastapi", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"freezetune serve needs {' and '.join(missing)}: pip install 'freezetune[serve]'")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one), or a UserError saying why not."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: not an address of this machine ({exc.strerror}): use e.g. 127.0.0.1 or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait for TIME_WAIT
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}): choose another --port, or stop what uses it") from None
    return sock


def server_info(model: str, predictor, backend: str, precision: str, limits: ServeLimits) -> dict:
    """GET /info: the model card's facts (see modelcard.py) plus what this server runs and accepts."""
    n = predictor.max_length
    return {
        "model": Path(model).resolve().name,
        "backend": backend,
        "precision": precision,
        "threads_per_call": torch_threads(),
        **folder_facts(model),
        "labels": list(predictor.label_names),  # the loaded model's own, whatever metrics.json says
        "max_length": n,
        "limits": {**limits.to_dict(), "max_length_tokens": n,
                   "truncation": f"texts longer than {n} tokens are truncated to their first {n} tokens"},
    }


def torch_threads() -> int:
    """PyTorch's intra-op thread count: one per physical core unless OMP_NUM_THREADS or --threads says otherwise."""
    import torch

    return torch.get_num_threads()


def _log_config() -> dict:
    """uvicorn's logging, plus our per-request logger on the same handler (its access log is replaced by ours)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"][LOGGER.name] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


@contextlib.contextmanager
def _exit_quietly_after_signals():
    """uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut down gracefully, to die by it; the
    shutdown is complete by then, so we let the command return and exit 0 (handlers restored afterwards)."""
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_app(app, sock: socket.socket, ready_message: str) -> None:
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                LOGGER.info("%s", ready_message)

    config = uvicorn.Config(app, log_config=_log_config(), access_log=False, lifespan="on",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    with _exit_quietly_after_signals():
        Server(config).run(sockets=[sock])


def serve_from_args(args) -> None:
    require_serve_dependencies()
    limits = limits_from_args(args, cores=torch_threads())  # before --threads changes the count
    started = time.perf_counter()
    with contextlib.closing(bind_socket(args.host, args.port)) as sock:
        predictor = load_predictor(args.model, args.backend, args.int8, args.batch_size, args.precision, args.threads)
        precision = describe_precision(predictor, args.backend, args.int8)
        info = server_info(args.model, predictor, args.backend, precision, limits)

        from .http import create_app

        app = create_app(predictor, info, limits, log_texts=args.log_texts)
        host, port = sock.getsockname()[:2]
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        run_app(app, sock, f"freezetune serve: {info['model']} ({args.backend} {precision}, loaded in "
                           f"{time.perf_counter() - started:.1f}s) ready at {url} (page /, API docs /docs, stop with Ctrl-C)")
    print("freezetune serve: stopped", file=sys.stderr)
