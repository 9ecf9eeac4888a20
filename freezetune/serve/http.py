"""The HTTP API: `create_app(predictor, info, limits)` builds the FastAPI app that `freezetune serve` runs.

POST /predict scores texts through the `DynamicBatcher` (one model call for many concurrent requests, in
worker threads, so the event loop stays free); GET /health, GET /info, the OpenAPI schema at /openapi.json,
Swagger UI at /docs and a small page at /, each also as HEAD. Bad requests get JSON errors, never a 500: 422
naming the field (wrong types, empty lists, over the text or character limits), 413 (body too large), 400 (body
not UTF-8). Request data is logged with its control characters escaped.
"""

import json
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, create_model

from .. import __version__
from .batching import DynamicBatcher
from .options import ServeLimits

LOGGER = logging.getLogger("freezetune.serve")


class Prediction(BaseModel):
    label: str = Field(description="the most probable class")
    probability: float = Field(description="its probability")
    probabilities: dict[str, float] = Field(description="every class's probability, in the model's label order")


class PredictResponse(BaseModel):
    predictions: list[Prediction] = Field(description="one per text, in the order of the request's texts")


class ErrorMessage(BaseModel):
    detail: str


def _utf8_encodable(text: str) -> str:
    # JSON allows escapes of lone UTF-16 surrogates ("\ud800"); they are no character, and no tokenizer takes them.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains an unpaired surrogate escape at position {exc.start}: send whole characters") from None
    return text


def predict_request_model(limits: ServeLimits, max_length: int) -> type[BaseModel]:
    """The /predict body, with this server's limits in its schema (so clients and the OpenAPI docs see them)."""
    text = Annotated[str, StringConstraints(max_length=limits.max_chars), AfterValidator(_utf8_encodable)]
    texts = Annotated[list[text], Field(
        min_length=1, max_length=limits.max_texts,
        description=f"1 to {limits.max_texts} texts of at most {limits.max_chars} characters; the model reads "
                    f"the first {max_length} tokens of each (longer texts are truncated)",
    )]
    return create_model("PredictRequest", texts=(texts, ...),
                        __config__=ConfigDict(json_schema_extra={"examples": [{"texts": ["这游戏太好玩了", "队友太差"]}]}))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body without the `input` echo: a rejected request's texts are not sent back (or logged).

    A body that FastAPI did not read as JSON (e.g. curl -d sends form Content-Type) gets a hint saying so.
    """
    content_type = request.headers.get("content-type", "")
    hint = "" if "json" in content_type or not content_type else \
        f' (the body was sent as "{content_type}": send JSON with Content-Type: application/json)'
    errors = [{"loc": list(e["loc"]), "msg": e["msg"] + (hint if tuple(e["loc"]) == ("body",) else ""), "type": e["type"]}
              for e in exc.errors()]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(predictor, info: dict, limits: ServeLimits, log_texts: bool = False) -> FastAPI:
    """The app serving `predictor` (a `BatchedClassifier`); `info` is returned as is at GET /info."""
    batcher = DynamicBatcher(predictor.probabilities, limits.max_batch, limits.max_wait_ms, limits.workers)
    labels = list(predictor.label_names)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        yield
        await batcher.close()  # uvicorn has let in-flight requests finish; their batches are done

    app = FastAPI(title="freezetune", version=__version__, lifespan=lifespan,
                  description="Text classification with a model trained by freezetune.")
    app.state.batcher = batcher
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyGuard, max_bytes=limits.max_body_bytes)
    app.add_middleware(RequestLog)  # added last: outermost, so it logs 400/413 too
    PredictRequest = predict_request_model(limits, predictor.max_length)
    errors = {400: {"model": ErrorMessage, "description": "the body is not UTF-8"},
              413: {"model": ErrorMessage, "description": f"the body is over {limits.max_body_bytes} bytes"}}

    @app.post("/predict", response_model=PredictResponse, responses=errors)
    async def predict(body: PredictRequest, request: Request):  # type: ignore[valid-type]
        """Label each text: the most probable class, its probability, and every class's probability."""
        request.state.log = f"{len(body.texts)} texts" + (f" {json.dumps(body.texts, ensure_ascii=False)}" if log_texts else "")
        rows = await batcher.submit(body.texts)
        predictions = []
        for row in rows.tolist():
            best = max(range(len(labels)), key=row.__getitem__)
            predictions.append({"label": labels[best], "probability": row[best], "probabilities": dict(zip(labels, row))})
        # Built as plain JSON (the schema above documents it): validating our own output again would cost time.
        return JSONResponse({"predictions": predictions})

    @app.get("/health")
    async def health() -> dict:
        """200 while the server is up and its model loaded."""
        return {"status": "ok"}

    @app.get("/info")
    async def get_info() -> dict:
        """The model (base, data, strategy, labels, validation and test results), backend, precision and limits."""
        return info

    page = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app


# --------------------------------------------------------------------------- ASGI middleware


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# How much of a body over the limit is read (and dropped) before its 413: up to this, or 16 times the limit where
# that is more. Clients such as urllib and requests write the whole body before they read an answer: a connection
# closed under them shows as "Connection reset by peer" instead of the 413. Past this the connection is closed
# (what an endless body gets).
DISCARD_AT_MOST = 256 * 1024 * 1024


class BodyGuard:
    """Reads a request body before the app does: 413 past `max_bytes` (declared or streamed), 400 unless UTF-8.

    The app then gets the body whole from memory. Plain ASGI, not Starlette's BaseHTTPMiddleware: cheaper per
    request and it never re-buffers a streamed response.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes
        self.too_large = f"request body over {max_bytes} bytes: send fewer or shorter texts (limits: GET /info)"
        self.discard_bytes = max(DISCARD_AT_MOST, 16 * max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            # uvicorn sends "100 Continue" on the first receive(): a client that asked for it (curl does for large
            # bodies) gets the 413 before it sends any of the body. A body past the bound is not read at all.
            expects_continue = headers.get(b"expect", b"").lower() == b"100-continue"
            unread = expects_continue or int(declared) > self.discard_bytes
            if unread or await self._discard(receive, self.discard_bytes):
                await _send_error(send, 413, self.too_large)
            return
        body = await self._read(receive, send)
        if body is None:
            return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return await _send_error(send, 400, f"request body is not UTF-8 (byte {exc.start}): send JSON encoded as UTF-8")
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would report it

        await self.app(scope, replay, send)

    async def _read(self, receive, send) -> bytes | None:
        """The whole body; None once answered (413) or when the client went away."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                chunks.clear()
                if not message.get("more_body", False) or await self._discard(receive, self.discard_bytes - size):
                    await _send_error(send, 413, self.too_large)
                return None
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _discard(receive, budget: int) -> bool:
        """Reads the rest of the body, one chunk at a time, dropping each: True once it ended, False when the client
        went away. Past `budget` bytes it stops reading and returns True: the 413 then closes the connection."""
        while budget >= 0:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            if not message.get("more_body", False):
                return True
            budget -= len(message.get("body", b""))
        return True


# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators, as escapes: request data in a log
# line (a percent-decoded path, logged texts) can neither start a forged line nor send terminal escape sequences.
_LOG_ESCAPES = {**{c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))},
                **{ord(c): repr(c)[1:-1] for c in "\t\n\r"}, 0x2028: "\\u2028", 0x2029: "\\u2029"}


def printable(text: str) -> str:
    """`text` with its control characters escaped (\\n, \\x1b, \\u2028), fit for one log line."""
    return text.translate(_LOG_ESCAPES)


class RequestLog:
    """One log line per request: client, method, path, status, time, and what the endpoint noted in
    `request.state.log` (for /predict the number of texts; the texts only with --log-texts)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), ["-"]  # "-": no response (the client went away, or a crash)

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = "%s:%s" % tuple(scope["client"]) if scope.get("client") else "-"
            note = scope.get("state", {}).get("log", "")
            LOGGER.info('%s "%s %s" %s %.1f ms %s', printable(client), printable(scope["method"]),
                        printable(scope["path"]), status[0], (time.perf_counter() - started) * 1000, printable(note))


class HeadAsGet:
    """HEAD wherever GET works (/, /health, /info, the docs): the GET route answers, with its status and headers
    (Content-Length included) and without its body. FastAPI routes only the methods a route names, and routes
    declared for GET and HEAD would show twice in the OpenAPI schema."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)

        async def send_without_body(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)
