"""Dynamic batching: the texts of concurrent requests are scored in one model call.

A model scores 64 texts in far less than 64 times the time of one (one matrix product instead of 64, and the
fixed cost of a call paid once), so a server that called the model once per request would be slow exactly
when it is busy. `DynamicBatcher` queues requests; one gatherer task takes the first one waiting, lets others
join for at most `max_wait_ms` (or until `max_batch` texts wait), and hands them to a worker thread as one
list. While workers run the model, the event loop keeps accepting requests, which queue up for the next call:
under load, batches fill without waiting at all.

With `workers` > 1, that many calls run at once, each on its own thread (the model is shared: inference only
reads it). On a CPU, several one-thread calls beat one call spread over several threads when the server is
busy: threads of one call meet at a barrier after every operation, so one of them preempted by the event
loop (or anything else on the machine) stalls them all; on the 2-core machine of this project, one call on
2 threads measured 5-10x slower than 2 one-thread calls whenever anything else ran (the event loop included).
"""

from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

ScoreFn = Callable[[list[str]], np.ndarray]


@dataclass
class _Request:
    texts: list[str]
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    """Gathers concurrent `submit` calls into calls of `score` (texts -> one row per text), in input order.

    `start()` and `close()` run inside the event loop (the app's lifespan); `close()` lets every request
    already submitted finish before it returns.
    """

    def __init__(self, score: ScoreFn, max_batch: int, max_wait_ms: float, workers: int = 1):
        self.score, self.max_batch, self.max_wait, self.workers = score, max_batch, max_wait_ms / 1000, workers
        self.calls = 0  # model calls made; a test or a benchmark reads it
        self._waiting: collections.deque[_Request] = collections.deque()
        self._waiting_texts = 0
        self._arrived: asyncio.Event | None = None
        self._free_workers: asyncio.Semaphore | None = None
        self._calls_running: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closing = False

    async def start(self) -> None:
        self._arrived, self._free_workers = asyncio.Event(), asyncio.Semaphore(self.workers)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="freezetune-model")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="freezetune-batcher")

    async def close(self) -> None:
        """Score whatever is still waiting, then stop the gatherer and the worker threads."""
        if self._task is None:
            return
        self._closing = True
        self._arrived.set()
        await self._task
        await asyncio.gather(*self._calls_running)
        self._executor.shutdown(wait=True)
        self._task = None

    async def submit(self, texts: list[str]) -> np.ndarray:
        """The scores of `texts` (one row each, in order), computed together with other waiting requests."""
        if self._task is None or self._closing:
            raise RuntimeError("the batcher is not running: start it in the app's lifespan (use TestClient as a context manager)")
        request = _Request(list(texts), asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        self._waiting_texts += len(request.texts)
        self._arrived.set()
        return await request.future

    async def _run(self) -> None:
        while self._waiting or not self._closing:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._free_workers.acquire()  # requests keep queueing while every worker is busy
            await self._wait_for_company()
            call = asyncio.get_running_loop().create_task(self._score(self._take_batch()))
            self._calls_running.add(call)
            call.add_done_callback(self._call_done)

    def _call_done(self, call: asyncio.Task) -> None:
        self._calls_running.discard(call)
        self._free_workers.release()

    async def _wait_for_company(self) -> None:
        """Wait until `max_batch` texts are waiting, the bounded wait is over, or the server is closing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while self._waiting_texts < self.max_batch and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                # Waiting on an Event (not on a queue's get) so a timeout can never lose a request.
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take_batch(self) -> list[_Request]:
        """Requests from the front of the queue while their texts fit in `max_batch` (always at least one)."""
        batch, size = [], 0
        while self._waiting and (not batch or size + len(self._waiting[0].texts) <= self.max_batch):
            request = self._waiting.popleft()
            self._waiting_texts -= len(request.texts)
            if request.future.done():  # cancelled: its client went away
                continue
            batch.append(request)
            size += len(request.texts)
        return batch

    async def _score(self, batch: list[_Request]) -> None:
        if not batch:
            return
        texts = [text for request in batch for text in request.texts]
        try:
            scores = await asyncio.get_running_loop().run_in_executor(self._executor, self.score, texts)
        except Exception as exc:  # the model failed: every request of the batch gets the error
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        finally:
            self.calls += 1
        start = 0
        for request in batch:
            if not request.future.done():
                request.future.set_result(scores[start : start + len(request.texts)])
            start += len(request.texts)
