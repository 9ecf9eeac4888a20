"""`freezetune serve`: the HTTP API against `Predictor`, its limits and errors, dynamic batching, the page in
Chromium, schema-driven fuzzing, and a real server process stopped by SIGTERM. Loopback only, every wait bounded."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="serving needs the extra: pip install 'freezetune[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from freezetune.cli import main  # noqa: E402
from freezetune.inference.predict import Predictor  # noqa: E402
from freezetune.modelcard import folder_facts  # noqa: E402
from freezetune.serve.batching import DynamicBatcher  # noqa: E402
from freezetune.serve.http import create_app  # noqa: E402
from freezetune.serve.options import ServeLimits  # noqa: E402
from freezetune.serve.run import server_info  # noqa: E402

from .chromium_cdp import CHROMIUM, Browser  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAX_LENGTH = 16
LIMITS = ServeLimits(max_texts=8, max_chars=50, max_body_bytes=4096, max_batch=16, max_wait_ms=2)
# Short and long (past MAX_LENGTH tokens: truncated), repeated, empty, and Latin text (unknown to the vocabulary).
TEXTS = ["今天游戏真好", "队友太差", "还行吧", "今天游戏真好", "", "我觉得这个游戏又好玩又棒可是队友都很差真糟糕啊还行吧", "hello"]


@pytest.fixture(scope="module")
def model_dir(tiny_bert, tiny_csv_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve") / "model"
    assert main(["train", "--model", str(tiny_bert), "--data", str(tiny_csv_dir), "--output-dir", str(out),
                 "--epochs", "1", "--lr", "5e-3", "--max-length", str(MAX_LENGTH)]) == 0
    return out


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor(str(model_dir))


def make_app(model_dir, predictor, limits=LIMITS, log_texts=False):
    info = server_info(str(model_dir), predictor, "torch", predictor.precision, limits)
    return create_app(predictor, info, limits, log_texts=log_texts)


@pytest.fixture(scope="module")
def client(model_dir, predictor):
    with TestClient(make_app(model_dir, predictor)) as client:  # `with`: runs the lifespan (the batcher)
        yield client


def post(client, payload, **kwargs):
    return client.post("/predict", json=payload, **kwargs)


# --------------------------------------------------------------------------- outputs


def test_predict_equals_predictor_in_input_order(client, predictor):
    response = post(client, {"texts": TEXTS})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    expected = predictor.predict(TEXTS)
    probabilities = predictor.probabilities(TEXTS)
    assert [p["label"] for p in predictions] == [e["label"] for e in expected]
    assert [p["probability"] for p in predictions] == [e["probability"] for e in expected]  # bit for bit
    for prediction, row in zip(predictions, probabilities):
        assert list(prediction["probabilities"]) == predictor.label_names
        assert list(prediction["probabilities"].values()) == row.tolist()
        assert prediction["probability"] == max(prediction["probabilities"].values())


def test_serve_gives_what_freezetune_predict_prints(client, model_dir, capsys):
    texts = TEXTS[:3] + TEXTS[5:]
    assert main(["predict", *texts, "--model", str(model_dir), "--json"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    served = post(client, {"texts": texts}).json()["predictions"]
    assert [(p["label"], p["probability"]) for p in served] == [(p["label"], p["probability"]) for p in printed]


def test_health_info_docs_and_schema(client, model_dir, predictor):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    assert info["labels"] == predictor.label_names == metrics["label_names"]
    assert info["strategy"] == "full" and info["backend"] == "torch" and info["precision"] == predictor.precision
    assert info["evaluation"]["split"] == "test"
    assert info["evaluation"]["accuracy"] == metrics["evaluation"]["accuracy"]
    assert {k: v["f1"] for k, v in info["evaluation"]["per_class"].items()} == \
        {k: v["f1"] for k, v in metrics["evaluation"]["per_class"].items()}
    assert info["limits"]["max_texts"] == LIMITS.max_texts and info["limits"]["max_length_tokens"] == MAX_LENGTH
    assert f"longer than {MAX_LENGTH} tokens are truncated" in info["limits"]["truncation"]
    # The same facts as the model card: one function gathers both.
    facts = folder_facts(model_dir)
    assert {k: info[k] for k in facts if k != "labels"} == {k: v for k, v in facts.items() if k != "labels"}
    assert f"{metrics['evaluation']['accuracy']:.4f}" in (model_dir / "README.md").read_text(encoding="utf-8")

    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    request = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    texts = request["properties"]["texts"]
    assert (texts["minItems"], texts["maxItems"], texts["items"]["maxLength"]) == (1, LIMITS.max_texts, LIMITS.max_chars)
    assert {"200", "400", "413", "422"} <= set(schema["paths"]["/predict"]["post"]["responses"])
    assert "swagger-ui" in client.get("/docs").text


# --------------------------------------------------------------------------- limits and errors


@pytest.mark.parametrize("payload, loc", [
    ({"texts": []}, ["body", "texts"]),
    ({"texts": ["好"] * (LIMITS.max_texts + 1)}, ["body", "texts"]),
    ({"texts": ["好", "好" * (LIMITS.max_chars + 1)]}, ["body", "texts", 1]),
    ({"texts": "今天游戏真好"}, ["body", "texts"]),
    ({"texts": ["好", 3]}, ["body", "texts", 1]),
    ({"texts": [None]}, ["body", "texts", 0]),
    ({"text": ["好"]}, ["body", "texts"]),
    (["好"], ["body"]),
    ({"texts": ["\ud800好"]}, ["body", "texts", 0]),  # an unpaired surrogate: valid JSON, no character
])
def test_bad_requests_are_422_naming_the_field(client, payload, loc):
    response = client.post("/predict", content=json.dumps(payload), headers={"content-type": "application/json"})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [e["loc"] for e in errors] == [loc]
    assert all(e["msg"] and "input" not in e for e in errors)  # the texts are not echoed back


def test_body_limits_encoding_and_methods(client):
    def status_and_detail(response):
        return response.status_code, response.json()["detail"]

    big = json.dumps({"texts": ["好" * 1000] * LIMITS.max_texts}).encode()  # the size is checked before the fields
    assert len(big) > LIMITS.max_body_bytes
    code, detail = status_and_detail(client.post("/predict", content=big, headers={"content-type": "application/json"}))
    assert code == 413 and f"over {LIMITS.max_body_bytes} bytes" in detail
    # Streamed without a Content-Length: counted as it arrives.
    chunks = (big[i : i + 1000] for i in range(0, len(big), 1000))
    assert client.post("/predict", content=chunks, headers={"content-type": "application/json"}).status_code == 413

    not_utf8 = '{"texts": ["今天游戏真好"]}'.encode("gb18030")
    code, detail = status_and_detail(client.post("/predict", content=not_utf8, headers={"content-type": "application/json"}))
    assert code == 400 and "not UTF-8" in detail

    response = client.post("/predict", content=b'{"texts": [', headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"
    response = client.post("/predict", content=b'{"texts": ["a"]}', headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 422 and "Content-Type: application/json" in response.json()["detail"][0]["msg"]
    assert client.get("/predict").status_code == 405
    assert client.get("/nowhere").status_code == 404


def test_one_log_line_per_request_without_texts(model_dir, predictor, caplog):
    secret = "今天游戏真好队友"
    for log_texts in (False, True):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="freezetune.serve"), \
                TestClient(make_app(model_dir, predictor, log_texts=log_texts)) as client:
            post(client, {"texts": [secret, "还行"]})
            post(client, {"texts": []})
        lines = [r.getMessage() for r in caplog.records if r.name == "freezetune.serve"]
        assert len(lines) == 2 and '"POST /predict" 200' in lines[0] and "2 texts" in lines[0] and " 422 " in lines[1]
        assert (secret in lines[0]) == log_texts


# --------------------------------------------------------------------------- dynamic batching


class CountingScore:
    """A stand-in model: each text's score is a function of the text; every call, and how many overlap, recorded."""

    def __init__(self, seconds: float = 0.0):
        self.calls, self.seconds, self.running, self.most_at_once = [], seconds, 0, 0
        self.lock = threading.Lock()

    def __call__(self, texts):
        with self.lock:
            self.calls.append(list(texts))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(self.seconds)
        with self.lock:
            self.running -= 1
        return np.array([[len(t), sum(map(ord, t)) % 97] for t in texts], dtype=np.float32)


def run_batcher(score, requests, max_batch=16, max_wait_ms=20.0, workers=1):
    """Submit every request at once; returns their results and the batcher."""
    async def scenario():
        batcher = DynamicBatcher(score, max_batch=max_batch, max_wait_ms=max_wait_ms, workers=workers)
        await batcher.start()
        try:
            results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(r) for r in requests)), timeout=30)
        finally:
            await batcher.close()
        return results, batcher

    return asyncio.run(scenario())


def test_batcher_gathers_concurrent_requests_into_fewer_calls():
    requests = [[f"文本{i}"] for i in range(40)] + [["好", "很好", "非常好"]] * 4
    score = CountingScore(seconds=0.01)
    results, batcher = run_batcher(score, requests)
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result, score(request))  # each request gets its own rows, in order
    calls = score.calls[: batcher.calls]
    assert batcher.calls == len(calls) <= 5  # 52 texts, at most 16 per call: 4 calls, not 44
    assert all(len(call) <= 16 for call in calls)
    assert sorted(t for call in calls for t in call) == sorted(t for r in requests for t in r)


def test_batcher_workers_run_calls_at_once_and_each_request_gets_its_rows():
    requests = [[f"文本{i}", f"第{i}个"] for i in range(30)]
    score = CountingScore(seconds=0.05)
    started = time.perf_counter()
    results, batcher = run_batcher(score, requests, max_batch=8, max_wait_ms=1, workers=3)
    assert score.most_at_once == 3 and batcher.calls == len(score.calls) >= 60 // 8
    assert time.perf_counter() - started < 0.05 * batcher.calls  # overlapped, not one after another
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result, score(request))


def test_batcher_runs_a_lone_request_after_the_bounded_wait_and_a_big_one_alone():
    started = time.perf_counter()
    results, batcher = run_batcher(CountingScore(), [["一个"]], max_wait_ms=50)
    assert results[0].shape == (1, 2) and batcher.calls == 1
    assert 0.04 < time.perf_counter() - started < 5
    score = CountingScore()
    results, batcher = run_batcher(score, [["长"] * 40, ["短"]], max_batch=16)
    assert [len(call) for call in score.calls] == [40, 1] and len(results[0]) == 40


def test_batcher_gives_a_model_error_to_every_request_of_its_batch():
    def failing(texts):
        raise ValueError("model broke")

    async def scenario():
        batcher = DynamicBatcher(failing, max_batch=8, max_wait_ms=10)
        await batcher.start()
        outcomes = await asyncio.gather(*(batcher.submit(["x"]) for _ in range(3)), return_exceptions=True)
        await batcher.close()
        return outcomes

    assert all(isinstance(o, ValueError) for o in asyncio.run(scenario()))
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(DynamicBatcher(failing, 8, 1).submit(["x"]))


def test_concurrent_http_requests_share_model_calls(model_dir, predictor):
    texts = [[t] for t in TEXTS[:4]] * 8
    limits = ServeLimits(max_texts=8, max_chars=100, max_body_bytes=4096, max_batch=32, max_wait_ms=50, workers=2)
    with TestClient(make_app(model_dir, predictor, limits)) as client, ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda t: post(client, {"texts": t}), texts))
        calls = client.app.state.batcher.calls
    assert [r.status_code for r in responses] == [200] * len(texts)
    assert calls < len(texts)
    # Scored in other company (other padding) the numbers may move in the last bits, never the labels.
    expected = predictor.predict([t[0] for t in texts])
    for response, e in zip(responses, expected):
        got = response.json()["predictions"][0]
        assert got["label"] == e["label"] and got["probability"] == pytest.approx(e["probability"], abs=2e-2)


# --------------------------------------------------------------------------- ONNX int8 backend


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from freezetune.inference.export import export_onnx

    return export_onnx(str(model_dir), str(tmp_path_factory.mktemp("onnx") / "onnx"), int8=True)


def test_onnx_int8_backend_equals_its_predictor(exported):
    from freezetune.inference.onnx_predict import OnnxPredictor

    onnx = OnnxPredictor(str(exported), int8=True)
    info = server_info(str(exported), onnx, "onnx", "int8", LIMITS)
    with TestClient(create_app(onnx, info, LIMITS)) as client:
        predictions = post(client, {"texts": TEXTS}).json()["predictions"]
        info = client.get("/info").json()
    assert [(p["label"], p["probability"]) for p in predictions] == [(e["label"], e["probability"]) for e in onnx.predict(TEXTS)]
    assert (info["backend"], info["precision"]) == ("onnx", "int8")
    assert info["evaluation"]["split"] == "test"  # export keeps metrics.json


def test_serve_benchmark_smoke(model_dir, exported, tiny_csv_dir, tmp_path):
    pytest.importorskip("httpx")
    out = tmp_path / "serve"
    command = [sys.executable, str(ROOT / "benchmarks" / "serve.py"), "--model", str(model_dir), "--onnx-model", str(exported),
               "--data", str(tiny_csv_dir), "--clients", "5", "--single-requests", "3", "--batch-requests", "2",
               "--batch-texts", "4", "--output", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "serve.json").read_text(encoding="utf-8"))
    rows = [(b["backend"], r["workload"], r["requests"], r["texts"], r["errors"]) for b in result["backends"] for r in b["workloads"]]
    assert rows == [("torch", "single", 15, 15, 0), ("torch", "4 texts", 10, 40, 0),
                    ("onnx int8", "single", 15, 15, 0), ("onnx int8", "4 texts", 10, 40, 0)]
    assert all(b["server_exit_code"] == 0 for b in result["backends"])
    assert all(r["same_label_as_predict"] > 0.5 and r["texts_per_second"] > 0 for b in result["backends"] for r in b["workloads"])
    assert "| torch | single | 15 |" in (tmp_path / "serve.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("client", ["aiohttp", "httpx"])
def test_benchmark_clients_get_every_label(client, model_dir, predictor, monkeypatch):
    pytest.importorskip(client)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import serve as bench  # benchmarks/serve.py

    per_client = bench.workload_texts(TEXTS, clients=3, requests=2, texts_per_request=2)
    with UvicornThread(make_app(model_dir, predictor)) as server:
        result = asyncio.run(bench.run_clients(server.url, per_client, client))
    assert (result["requests"], result["texts"], result["errors"]) == (6, 12, 0)
    assert result["labels"] == [r["label"] for r in predictor.predict(bench.flatten(per_client))]


# --------------------------------------------------------------------------- fuzzing from the OpenAPI schema


def test_generated_requests_get_no_server_error_and_match_the_schema(model_dir, predictor):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation import GenerationMode

    app = make_app(model_dir, predictor)
    # The schema cannot say "at most N bytes", so any body, valid or not, may get the documented 413.
    config = schemathesis.Config.from_dict({"checks": {
        "negative_data_rejection": {"expected-statuses": ["400", "413", "422"]},
        "positive_data_acceptance": {"expected-statuses": ["2XX", "413"]},
    }})
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    seen = []
    for path, method in (("/predict", "POST"), ("/info", "GET"), ("/health", "GET")):
        operation = schema[path][method]
        # Invalid data (NEGATIVE) only where there is data: the GETs take no parameters.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if method == "POST" else (GenerationMode.POSITIVE,):
            @settings(max_examples=50 if path == "/predict" else 3, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case):
                response = case.call()
                seen.append(response.status_code)
                # schemathesis's default checks: no 5xx, documented status codes and content types, responses
                # that match their schema, invalid data rejected and valid data accepted
                case.validate_response(response)

            fuzz()
    assert seen and max(seen) < 500
    assert 200 in seen and 422 in seen  # both valid and invalid requests were generated


# --------------------------------------------------------------------------- a real server: the page, SIGTERM


class UvicornThread:
    """The app under a real uvicorn on 127.0.0.1 and a free port, in a background thread (for the browser)."""

    def __init__(self, app):
        import uvicorn

        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.socket.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium); CI installs it to run this test")
def test_page_in_chromium_shows_the_label_and_a_bar_per_class(model_dir, predictor, tmp_path):
    text = "今天游戏真好棒"
    expected = predictor.predict([text])[0]
    with UvicornThread(make_app(model_dir, predictor)) as server:
        browser = Browser(tmp_path / "profile")
        try:
            browser.page("Page.navigate", url=server.url + "/")
            browser.wait_for("document.readyState === 'complete' && document.getElementById('model').textContent.includes('labels')")
            browser.evaluate("document.getElementById('text').focus()")
            browser.page("Input.insertText", text=text)  # typed, as a person would
            browser.evaluate("document.getElementById('submit').click()")
            browser.wait_for("!document.getElementById('result').hidden")
            label = browser.evaluate("document.getElementById('label').textContent")
            bars = browser.evaluate("[...document.querySelectorAll('#bars .row')].map(r => "
                                    "[r.dataset.label, r.querySelector('.bar').style.width])")
            error = browser.evaluate("document.getElementById('error').textContent")
        finally:
            browser.close()
    assert error == "" and label == expected["label"]
    assert [name for name, _ in bars] == predictor.label_names
    widths = {name: float(width.rstrip("%")) for name, width in bars}
    assert widths[label] == pytest.approx(100 * expected["probability"], abs=0.06)
    assert sum(widths.values()) == pytest.approx(100, abs=0.2)


def test_serve_command_starts_and_stops_cleanly_on_sigterm(model_dir):
    # --max-wait-ms 1000: the request below waits in the batcher, so it is still in flight at SIGTERM.
    command = [sys.executable, "-m", "freezetune", "serve", "--model", str(model_dir), "--port", "0", "--max-wait-ms", "1000"]
    started = time.monotonic()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    try:
        url = _wait_for_ready(process, timeout=90)
        startup = time.monotonic() - started
        import httpx

        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(httpx.post, url + "/predict", json={"texts": ["今天游戏真好"]}, timeout=30)
            time.sleep(0.5)  # arrived (even on a busy machine), still waiting for company
            assert not in_flight.done()
            process.send_signal(signal.SIGTERM)
            response = in_flight.result(timeout=30)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert response.status_code == 200 and response.json()["predictions"][0]["label"]
    assert process.returncode == 0, stderr
    assert "Waiting for application shutdown" in stderr and "freezetune serve: stopped" in stderr
    assert '"POST /predict" 200' in stderr and "今天游戏真好" not in stderr  # logged without its text
    print(f"serve started (process start to ready) in {startup:.1f} s")


def _wait_for_ready(process, timeout: float) -> str:
    """Read the server's stderr until its ready line; returns its URL."""
    lines, deadline = [], time.monotonic() + timeout
    reader = ThreadPoolExecutor(1)
    try:
        while time.monotonic() < deadline:
            line = reader.submit(process.stderr.readline).result(timeout=max(0.1, deadline - time.monotonic()))
            lines.append(line)
            found = re.search(r"ready at (http://127\.0\.0\.1:\d+)", line)
            if found:
                return found.group(1)
            if not line and process.poll() is not None:
                break
    finally:
        reader.shutdown(wait=False)
    raise AssertionError("serve did not become ready:\n" + "".join(lines))


def test_serve_command_errors_are_one_line(model_dir, tmp_path, capsys, monkeypatch):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(model_dir), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    cases = [
        (["--model", str(tmp_path / "missing"), "--port", "0"], "not found"),
        (["--model", str(model_dir), "--int8", "--port", "0"], "--backend onnx"),
        (["--model", str(model_dir), "--max-texts", "0"], "--max-texts must be at least 1"),
        (["--model", str(model_dir), "--port", "70000"], "--port must be between"),
        (["--model", str(model_dir), "--port", "0", "--threads", "0"], "--threads must be at least 1"),
        (["--model", str(model_dir), "--workers", "0"], "--workers must be at least 1"),
    ]
    for argv, message in cases:
        assert main(["serve", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real_find_spec(name, *a))
    assert main(["serve", "--model", str(model_dir)]) == 2
    assert "pip install 'freezetune[serve]'" in capsys.readouterr().err
