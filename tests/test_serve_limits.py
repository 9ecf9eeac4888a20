"""`freezetune serve` at its edges, against a real uvicorn on 127.0.0.1: a body over the limit reaches every client
as a 413 with its JSON error (also clients that send the whole body before reading), control characters in a
request cannot forge or colour log lines, and HEAD answers wherever GET does. Loopback only, every wait bounded."""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import socket
import threading
import time
import tracemalloc
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi", reason="serving needs the extra: pip install 'freezetune[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from freezetune.serve import http as serve_http  # noqa: E402

from .test_serve import LIMITS, UvicornThread, make_app, model_dir, predictor  # noqa: E402,F401 (fixtures)

MB = 1024 * 1024
CHUNK = b"x" * MB  # bodies are this chunk repeated, so no test holds a large body in memory
TOO_LARGE = f"request body over {LIMITS.max_body_bytes} bytes"
CONTROL = "\x00\x07\t\n\r\x1b\x7f\x85\x9b\u2028\u2029"  # C0, DEL, C1 (NEL, CSI), the Unicode line/paragraph separators


class Uvicorn(UvicornThread):
    """test_serve's real server, with the HTTP implementation chosen: `serve` runs httptools; h11 is uvicorn's other."""

    def __init__(self, app, http_impl="httptools"):
        import uvicorn

        super().__init__(app)
        self.port = self.socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http=http_impl))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)


@pytest.fixture(scope="module", params=["httptools", "h11"])
def server(request, model_dir, predictor):  # noqa: F811 (model_dir, predictor: fixtures)
    pytest.importorskip(request.param)
    with Uvicorn(make_app(model_dir, predictor), request.param) as server:
        yield server


def post_urllib(url: str, body, length: int | None = None, timeout: float = 60):
    """POST with urllib (which writes the whole body before it reads the answer): (status, JSON body).
    `body` may be an iterable of chunks; without `length` it goes chunked."""
    headers = {"Content-Type": "application/json", **({"Content-Length": str(length)} if length is not None else {})}
    request = urllib.request.Request(url + "/predict", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_healthy(server):
    status, body = post_urllib(server.url, json.dumps({"texts": ["今天游戏真好"]}).encode())
    assert status == 200 and body["predictions"][0]["label"]


# --------------------------------------------------------------------------- bodies over the limit


@pytest.mark.parametrize("size", [2 * LIMITS.max_body_bytes, 20 * MB])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_urllib_gets_the_413_of_a_body_over_the_limit(server, size, declared):
    chunks = [CHUNK[: size % MB]] + [CHUNK] * (size // MB)
    status, body = post_urllib(server.url, iter(chunks), size if declared else None)
    assert (status, list(body)) == (413, ["detail"]) and TOO_LARGE in body["detail"]
    assert_healthy(server)


def test_a_100_mb_body_is_read_and_dropped_not_held(model_dir, predictor):  # noqa: F811
    with Uvicorn(make_app(model_dir, predictor)) as server:
        tracemalloc.start()
        try:
            status, body = post_urllib(server.url, itertools.repeat(CHUNK, 100), 100 * MB)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert status == 413 and TOO_LARGE in body["detail"]
        # The client's chunk, uvicorn's read buffers and the limit's worth: nothing near the body's 100 MB.
        assert peak < 16 * MB, f"{peak / MB:.0f} MB traced while a 100 MB body was refused"
        assert_healthy(server)


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_past_the_discard_bound_the_connection_is_closed(model_dir, predictor, monkeypatch, declared):  # noqa: F811
    """A body past the bound is not read to its end (an endless one would hold the connection forever)."""
    monkeypatch.setattr(serve_http, "DISCARD_AT_MOST", 2 * MB)
    with Uvicorn(make_app(model_dir, predictor)) as server:
        with pytest.raises(OSError):  # reset or broken pipe: closed while the client still writes
            post_urllib(server.url, itertools.repeat(CHUNK, 64), 64 * MB if declared else None)
        assert_healthy(server)


def test_expect_100_continue_gets_the_413_before_sending_the_body(server):
    """uvicorn sends "100 Continue" only when the app first reads the body: a body declared too large is
    answered at once, and the client never sends it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (100 * MB))
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            received = sock.recv(65536)
            assert received, f"connection closed after {answer!r}"
            answer += received
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and TOO_LARGE in json.loads(body)["detail"]
    assert_healthy(server)


# --------------------------------------------------------------------------- the request log


def test_control_characters_in_the_path_are_escaped_in_its_one_log_line(server, caplog):
    with caplog.at_level(logging.INFO, logger="freezetune.serve"), \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # This connection's lines: the shared server may still log an earlier test's request while this one runs.
        # A line split by the path's newline would leave a second record without the address, and then the full
        # path is missing from the first: the checks below fail either way.
        address = "%s:%d " % sock.getsockname()

        def this_connections_lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if r.name == "freezetune.serve"
                    and r.getMessage().startswith(address)]

        sock.sendall(b"GET /%0aforged%1b[2J%c2%85%e2%80%a8 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        while sock.recv(65536):
            pass
        deadline = time.monotonic() + 10
        while not this_connections_lines() and time.monotonic() < deadline:
            time.sleep(0.01)
    lines = this_connections_lines()
    assert len(lines) == 1 and len(lines[0].splitlines()) == 1, lines
    assert '"GET /\\nforged\\x1b[2J\\x85\\u2028" 404' in lines[0]
    assert not set(lines[0]) & set(CONTROL)


def test_logged_texts_have_their_control_characters_escaped(model_dir, predictor, caplog):  # noqa: F811
    with caplog.at_level(logging.INFO, logger="freezetune.serve"), \
            TestClient(make_app(model_dir, predictor, log_texts=True)) as client:
        assert client.post("/predict", json={"texts": ["好" + CONTROL + "玩"]}).status_code == 200
    [line] = [r.getMessage() for r in caplog.records if r.name == "freezetune.serve"]
    assert not set(line) & set(CONTROL) and len(line.splitlines()) == 1
    assert "好" in line and "\\x7f\\x85\\x9b\\u2028\\u2029玩" in line  # the characters JSON leaves raw, escaped


# --------------------------------------------------------------------------- HEAD


def test_head_answers_wherever_get_does_without_a_body(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for path in ("/", "/health", "/info", "/predict", "/nowhere"):
            connection.request("GET", path)
            get = connection.getresponse()
            get_body = get.read()
            connection.request("HEAD", path)  # the same connection: a stray body byte would break the next answer
            head = connection.getresponse()
            assert (head.status, head.read()) == (get.status, b""), path
            assert head.getheader("content-type") == get.getheader("content-type")
            if get.status == 200:
                assert int(head.getheader("content-length")) == len(get_body)
    finally:
        connection.close()
    assert get.status == 404


def test_head_through_the_asgi_app(model_dir, predictor):  # noqa: F811
    with TestClient(make_app(model_dir, predictor)) as client:
        for path in ("/", "/health", "/info"):
            response = client.head(path)
            assert (response.status_code, response.content) == (200, b"")
            assert int(response.headers["content-length"]) == len(client.get(path).content)
        assert client.head("/predict").status_code == 405
        paths = client.get("/openapi.json").json()["paths"]
    assert all("head" not in operations for operations in paths.values())  # the schema documents the GETs only
