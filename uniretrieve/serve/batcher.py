"""Micro-batching: concurrent queries share one encoder forward pass.

One worker thread owns the encoder. It takes the first waiting query, then collects more for at most `wait_ms` (or
until `max_items` query items are in hand), and encodes them all in one `Searcher.encode` call; each request's
future gets its own row. The event loop never runs the model. With micro-batching off the same thread encodes one
query per forward pass (the baseline the benchmark compares against).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class _Job:
    searcher: Any
    query: Any
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop


class MicroBatcher:
    def __init__(self, *, wait_ms: float = 2.0, max_items: int = 32, enabled: bool = True) -> None:
        self.wait = wait_ms / 1000 if enabled else 0.0
        self.max_items = max_items if enabled else 1
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.batches = 0
        self.items = 0
        self._thread = threading.Thread(target=self._run, name="uniretrieve-encoder", daemon=True)
        self._thread.start()

    async def encode(self, searcher: Any, query: Any) -> np.ndarray:
        """The query's vector (float32 [D]), encoded together with whatever else arrives meanwhile."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.put(_Job(searcher, query, future, loop))
        return await future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    # --- the worker --------------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            items = len(job.query.terms)
            deadline = time.perf_counter() + self.wait
            stop = False
            while items < self.max_items:
                left = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                items += len(nxt.query.terms)
            self._encode(batch)
            if stop:
                return

    def _encode(self, batch: list[_Job]) -> None:
        # versions being swapped share one encoder: group by it, not by searcher
        groups: dict[int, list[_Job]] = {}
        for job in batch:
            groups.setdefault(id(job.searcher.encoder), []).append(job)
        for jobs in groups.values():
            self.batches += 1
            self.items += len(jobs)
            try:
                vectors = jobs[0].searcher.encode([j.query for j in jobs])
            except Exception as exc:
                if len(jobs) == 1:
                    _settle(jobs[0], error=exc)
                    continue
                for j in jobs:  # one bad query (terms that cancel out, an undecodable image) fails alone
                    self._encode_one(j)
                continue
            for j, v in zip(jobs, vectors, strict=True):
                _settle(j, value=v)

    def _encode_one(self, job: _Job) -> None:
        try:
            (v,) = job.searcher.encode([job.query])
        except Exception as exc:
            _settle(job, error=exc)
        else:
            _settle(job, value=v)


def _settle(job: _Job, *, value: np.ndarray | None = None, error: BaseException | None = None) -> None:
    def done() -> None:
        if job.future.done():  # the request was cancelled (client gone)
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # the loop is closed (server shutting down)
        job.loop.call_soon_threadsafe(done)
