"""`freezetune serve` under load: many concurrent clients against `Predictor.predict` on the same texts.

    python benchmarks/serve.py --model OUT [--onnx-model DIR] --output benchmarks/results/serve

For each backend (the PyTorch model OUT; with --onnx-model, also the int8 model of an exported folder):
first `predict` on a list (the in-process predictor `freezetune predict --file` uses, same batch size as the
server's model calls), then a real `freezetune serve` process on 127.0.0.1 and a free port, hit by --clients
concurrent clients (asyncio + aiohttp or httpx, one connection each), each sending a fixed number of requests one after
the other: single-text requests, then 32-text requests. Reported per workload: texts/s, its ratio to
`predict` on the same texts, request latency p50/p99, errors (non-200 or failed requests), and the share of
labels equal to `predict`'s. Run it alone on the machine: the clients and the server share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's freezetune, also for the server process below

from machine import describe_machine  # noqa: E402

READY = re.compile(r"ready at (http://\S+) ")


def workload_texts(pool: list[str], clients: int, requests: int, texts_per_request: int) -> list[list[list[str]]]:
    """Per client, its requests, each a list of texts; drawn in order from `pool`, cycling."""
    texts = iter(pool[i % len(pool)] for i in range(clients * requests * texts_per_request))
    return [[[next(texts) for _ in range(texts_per_request)] for _ in range(requests)] for _ in range(clients)]


def flatten(per_client) -> list[str]:
    return [text for requests in per_client for request in requests for text in request]


def load_pool(model: str, data: str | None, text_column: str, limit: int) -> list[str]:
    """Test texts (else validation) of `data`, by default the data the model was trained on."""
    from freezetune.data import TEXT, load_splits
    from freezetune.errors import UserError

    if data is None:
        data = json.loads((Path(model) / "run_config.json").read_text(encoding="utf-8"))["data"]
        try:
            splits = load_splits(data, text_column)
        except UserError as exc:
            raise UserError(f"{exc} (it is the data the model was trained on: pass --data)") from None
    else:
        splits = load_splits(data, text_column)
    frame = splits.test if splits.test is not None else splits.validation
    return frame[TEXT].astype(str).tolist()[:limit]


def measure_predict(predictor, texts: list[str]) -> dict:
    predictor.predict(texts[:64])  # warm-up
    started = time.perf_counter()
    rows = predictor.predict(texts)
    seconds = time.perf_counter() - started
    return {"texts": len(texts), "seconds": seconds, "texts_per_second": len(texts) / seconds,
            "labels": [r["label"] for r in rows]}


class HttpxClient:
    """One httpx.AsyncClient for all clients (a pool of one connection per client)."""

    def __init__(self, url: str, clients: int):
        import httpx

        self.errors = (httpx.HTTPError, ValueError, KeyError)
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        self.session = httpx.AsyncClient(base_url=url, limits=limits, timeout=300)

    async def predict(self, texts: list[str]) -> tuple[int, dict | None]:
        response = await self.session.post("/predict", json={"texts": texts})
        return response.status_code, response.json() if response.status_code == 200 else None

    async def close(self) -> None:
        await self.session.aclose()


class AiohttpClient(HttpxClient):
    """The same with aiohttp, whose C HTTP parser costs the client about 20x less CPU per request than httpx."""

    def __init__(self, url: str, clients: int):
        import aiohttp

        self.errors = (aiohttp.ClientError, ValueError, KeyError, asyncio.TimeoutError)
        self.session = aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=clients),
                                             timeout=aiohttp.ClientTimeout(total=300))

    async def predict(self, texts: list[str]) -> tuple[int, dict | None]:
        async with self.session.post("/predict", json={"texts": texts}) as response:
            return response.status, await response.json() if response.status == 200 else None

    async def close(self) -> None:
        await self.session.close()


CLIENTS = {"aiohttp": AiohttpClient, "httpx": HttpxClient}


async def run_clients(url: str, per_client: list[list[list[str]]], client_kind: str) -> dict:
    """Every client sends its requests one after another; all clients at once. Latency per request."""
    latencies, labels, errors = [], {}, []
    client = CLIENTS[client_kind](url, len(per_client))

    async def one_client(c: int, requests: list[list[str]]) -> None:
        for r, texts in enumerate(requests):
            started = time.perf_counter()
            try:
                status, body = await client.predict(texts)
            except client.errors as exc:
                status, body = type(exc).__name__, None
            latencies.append(time.perf_counter() - started)
            if body is None or len(body["predictions"]) != len(texts):
                errors.append(str(status))
            else:
                labels[c, r] = [p["label"] for p in body["predictions"]]

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one_client(c, requests) for c, requests in enumerate(per_client)))
        seconds = time.perf_counter() - started
    finally:
        await client.close()
    n_texts = len(flatten(per_client))
    ordered = [label for c, requests in enumerate(per_client) for r, texts in enumerate(requests)
               for label in labels.get((c, r), [None] * len(texts))]
    return {"requests": len(latencies), "texts": n_texts, "seconds": seconds, "texts_per_second": n_texts / seconds,
            "requests_per_second": len(latencies) / seconds, "latency_p50_ms": 1000 * float(np.percentile(latencies, 50)),
            "latency_p99_ms": 1000 * float(np.percentile(latencies, 99)), "errors": len(errors),
            "error_examples": sorted(set(errors))[:5], "labels": ordered}


class ServerProcess:
    """`freezetune serve` in its own process on 127.0.0.1 and a free port; stopped with SIGTERM."""

    def __init__(self, serve_args: list[str], log_path: Path, timeout: float = 300):
        self.log = open(log_path, "w+", encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "freezetune", "serve", "--host", "127.0.0.1", "--port", "0",
                                         *serve_args], stdout=subprocess.DEVNULL, stderr=self.log, env=env, cwd=ROOT)
        while not (found := READY.search(log_path.read_text(encoding="utf-8"))):
            if self.process.poll() is not None or time.perf_counter() - started > timeout:
                self.stop()
                raise RuntimeError(f"serve did not start:\n{log_path.read_text(encoding='utf-8')[-3000:]}")
            time.sleep(0.1)
        self.url, self.startup_seconds = found.group(1), time.perf_counter() - started

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        return self.process.returncode


def agreement(a: list, b: list) -> float:
    return float(np.mean([x == y for x, y in zip(a, b)]))


def benchmark_backend(name: str, predictor, serve_args: list[str], workloads: dict, log_dir: Path, client: str) -> dict:
    baseline = {w: measure_predict(predictor, flatten(per_client)) for w, per_client in workloads.items()}
    del predictor  # freed: the server process loads its own
    server = ServerProcess(serve_args, log_dir / f"serve-{name}.log")
    try:
        asyncio.run(run_clients(server.url, workloads["single"][:8], client))  # warm-up: first batches
        results = {w: asyncio.run(run_clients(server.url, per_client, client)) for w, per_client in workloads.items()}
    finally:
        exit_code = server.stop()
    rows = []
    for w, served in results.items():
        base = baseline[w]
        rows.append({"workload": w, **{k: v for k, v in served.items() if k != "labels"},
                     "predict_texts_per_second": base["texts_per_second"],
                     "ratio_to_predict": served["texts_per_second"] / base["texts_per_second"],
                     "same_label_as_predict": agreement(served["labels"], base["labels"])})
    return {"backend": name, "startup_seconds": server.startup_seconds, "server_exit_code": exit_code, "workloads": rows}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = ["# `freezetune serve` under load", "", f"Machine: {result['machine']}", "",
             f"Model `{s['model']}`; {s['clients']} concurrent {s['client']} clients; single-text: {s['single_requests']} requests "
             f"per client; {s['batch_texts']}-text: {s['batch_requests']} requests per client; server flags: "
             f"`{s['serve_args'] or 'defaults'}` (defaults: max batch {s['max_batch']} texts, max wait {s['max_wait_ms']} ms). "
             "`predict`: `Predictor.predict` "
             "(what `freezetune predict --file` runs) on the same texts, in one list.", "",
             "| backend | workload | requests | texts/s | predict texts/s | serve / predict | p50 ms | p99 ms | errors "
             "| same label as predict |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for backend in result["backends"]:
        for row in backend["workloads"]:
            lines.append(f"| {backend['backend']} | {row['workload']} | {row['requests']} | {row['texts_per_second']:.1f} | "
                         f"{row['predict_texts_per_second']:.1f} | {row['ratio_to_predict']:.0%} | {row['latency_p50_ms']:.1f} | "
                         f"{row['latency_p99_ms']:.1f} | {row['errors']} | {row['same_label_as_predict']:.1%} |")
    lines += ["", "Server start-up (process start to ready), and exit code after SIGTERM: " + "; ".join(
        f"{b['backend']} {b['startup_seconds']:.1f} s, exit {b['server_exit_code']}" for b in result["backends"])]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="a folder written by `freezetune train`")
    p.add_argument("--onnx-model", help="a folder written by `freezetune export --int8`: also benchmark ONNX int8")
    p.add_argument("--data", help="where the texts come from (test split, else validation); default: the model's training data")
    p.add_argument("--text-column", default="sentence")
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--single-requests", type=int, default=10, help="single-text requests per client")
    p.add_argument("--batch-requests", type=int, default=2, help="multi-text requests per client")
    p.add_argument("--batch-texts", type=int, default=32, help="texts per multi-text request")
    p.add_argument("--client", choices=CLIENTS, default="aiohttp" if importlib.util.find_spec("aiohttp") else "httpx",
                   help="HTTP client library (default aiohttp where installed: it leaves the server more of the CPU)")
    p.add_argument("--precision", default="auto", help="--precision of the torch backend (and its predict)")
    p.add_argument("--serve-args", default="", help='more `freezetune serve` flags, e.g. "--max-batch 128"')
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "serve"), help="results path without suffix")
    args = p.parse_args(argv)
    for name in ("clients", "single_requests", "batch_requests", "batch_texts"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv=None) -> None:
    from freezetune.inference.backends import load_predictor
    from freezetune.serve.options import ServeLimits

    args = parse_args(argv)
    for name in ("model", "onnx_model"):  # the server runs from the repository root
        if getattr(args, name) and Path(getattr(args, name)).exists():
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    limits = ServeLimits()
    pool = load_pool(args.model, args.data, args.text_column, limit=5000)
    workloads = {"single": workload_texts(pool, args.clients, args.single_requests, 1),
                 f"{args.batch_texts} texts": workload_texts(pool, args.clients, args.batch_requests, args.batch_texts)}
    extra = args.serve_args.split()
    backends = [("torch", args.model, ["--model", args.model, "--precision", args.precision, *extra], dict(precision=args.precision))]
    if args.onnx_model:
        backends.append(("onnx int8", args.onnx_model, ["--model", args.onnx_model, "--backend", "onnx", "--int8", *extra],
                         dict(backend="onnx", int8=True)))
    results = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as logs:
        for name, model, serve_args, options in backends:
            print(f"[serve benchmark] {name}: predict, then serve with {args.clients} clients", file=sys.stderr, flush=True)
            # Passed straight in: benchmark_backend drops the only reference before the server starts.
            results.append(benchmark_backend(name, load_predictor(model, batch_size=64, **options),
                                             serve_args, workloads, Path(logs), args.client))
    result = {"machine": describe_machine(), "backends": results,
              "settings": {**{k: v for k, v in vars(args).items() if k != "output"}, "texts_in_pool": len(pool),
                           "max_batch": limits.max_batch, "max_wait_ms": limits.max_wait_ms}}
    stem = Path(args.output)
    stem.parent.mkdir(parents=True, exist_ok=True)
    from freezetune.outputs import write_json_atomic, write_text_atomic

    write_json_atomic(f"{stem}.json", result)
    report = markdown(result)
    write_text_atomic(f"{stem}.md", report)
    print(report)
    print(f"wrote {stem}.md and {stem}.json", file=sys.stderr)


if __name__ == "__main__":
    from freezetune.errors import UserError

    try:
        main()
    except UserError as exc:
        sys.exit(f"serve benchmark: {exc}")
