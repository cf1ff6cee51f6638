"""Micro-batching: concurrent queries share one encoder forward pass, and one FAISS search.

Worker threads in a pipeline. An encoder thread takes the first waiting query, collects more for at most
`wait_ms` (or until `max_items` query items are in hand), and encodes them all in one `Searcher.encode` call. The
search thread takes every encoded query waiting, groups them by (index version, k, filter) and answers each group
with one `search_vectors` call, rendering the hits there too; so the event loop never runs the model, FAISS or the
per-hit work, and the next batch encodes while this one is searched. With `encoder_workers` > 1 that many encoder
threads share the one queue and the one model, so several forward passes are in flight (on a CPU each on its own
core; torch releases the GIL inside its kernels). With micro-batching off, each encoder thread encodes one query per
forward pass (the baseline the benchmark compares against).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Answer:
    hits: list[Any]
    encode_s: float
    search_s: float


@dataclass
class _Job:
    served: Any
    """The leased index version: `.searcher` searches, `render(hit, served)` turns its hits into answers."""
    query: Any
    """A Query to encode, or None when `vector` is given."""
    k: int
    where: str | None
    future: asyncio.Future[Answer]
    loop: asyncio.AbstractEventLoop
    vector: np.ndarray | None = None
    t0: float = field(default_factory=time.perf_counter)
    t1: float = 0.0


class MicroBatcher:
    def __init__(
        self,
        render: Callable[[Any, Any], Any],
        *,
        wait_ms: float = 2.0,
        max_items: int = 32,
        enabled: bool = True,
        encoder_workers: int = 1,
    ) -> None:
        if encoder_workers < 1:
            raise ValueError(f"encoder_workers must be >= 1, got {encoder_workers}")
        self.render = render
        self.wait = wait_ms / 1000 if enabled else 0.0
        self.max_items = max_items if enabled else 1
        self._encode_q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._search_q: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.batches = 0
        """Forward passes run (a measure of how much batching happened)."""
        self.searches = 0
        self._encoders = [
            threading.Thread(target=self._encoder, name=f"uniretrieve-encoder-{i}", daemon=True)
            for i in range(encoder_workers)
        ]
        self._search_thread = threading.Thread(target=self._searcher, name="uniretrieve-search", daemon=True)
        self._lock = threading.Lock()  # the counters, now that several encoder threads add to them
        for t in [*self._encoders, self._search_thread]:
            t.start()

    async def search(
        self, served: Any, *, k: int, where: str | None, query: Any = None, vector: np.ndarray | None = None
    ) -> Answer:
        """Encode `query` (with whatever else arrives meanwhile) or take `vector`, and search the leased version."""
        loop = asyncio.get_running_loop()
        job = _Job(served, query, k, where, loop.create_future(), loop, vector)
        if vector is not None:
            job.t1 = job.t0
            self._search_q.put(job)
        else:
            self._encode_q.put(job)
        return await job.future

    def close(self) -> None:
        for _ in self._encoders:  # one stop each; queries queued before them are encoded first
            self._encode_q.put(None)
        for t in self._encoders:
            t.join(timeout=10)
        self._search_q.put(None)  # only now: every encoded query is in the search queue ahead of it
        self._search_thread.join(timeout=10)

    # --- the encoder thread ------------------------------------------------------------------------------------
    def _encoder(self) -> None:
        while True:
            job = self._encode_q.get()
            if job is None:
                break
            batch = [job]
            items = len(job.query.terms)
            deadline = time.perf_counter() + self.wait
            stop = False
            while items < self.max_items:
                left = deadline - time.perf_counter()
                try:
                    nxt = self._encode_q.get(timeout=left) if left > 0 else self._encode_q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                items += len(nxt.query.terms)
            self._encode(batch)
            if stop:
                break

    def _encode(self, batch: list[_Job]) -> None:
        # versions being swapped share one encoder: group by it, not by version
        groups: dict[int, list[_Job]] = {}
        for job in batch:
            groups.setdefault(id(job.served.searcher.encoder), []).append(job)
        for jobs in groups.values():
            with self._lock:
                self.batches += 1
            try:
                vectors = jobs[0].served.searcher.encode([j.query for j in jobs])
            except Exception as exc:
                if len(jobs) == 1:
                    _settle(jobs[0], error=exc)
                    continue
                for j in jobs:  # one bad query (terms that cancel out, an undecodable image) fails alone
                    self._encode_one(j)
                continue
            now = time.perf_counter()
            for j, v in zip(jobs, vectors, strict=True):
                j.vector, j.t1 = v, now
                self._search_q.put(j)

    def _encode_one(self, job: _Job) -> None:
        with self._lock:
            self.batches += 1
        try:
            (job.vector,) = job.served.searcher.encode([job.query])
        except Exception as exc:
            _settle(job, error=exc)
            return
        job.t1 = time.perf_counter()
        self._search_q.put(job)

    # --- the search thread -------------------------------------------------------------------------------------
    def _searcher(self) -> None:
        while True:
            job = self._search_q.get()
            if job is None:
                return
            batch = [job]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 256:
                    nxt = self._search_q.get_nowait()
                    if nxt is None:
                        self._search(batch)
                        return
                    batch.append(nxt)
            self._search(batch)

    def _search(self, batch: list[_Job]) -> None:
        groups: dict[tuple[int, int, str | None], list[_Job]] = {}
        for job in batch:
            groups.setdefault((id(job.served), job.k, job.where), []).append(job)
        for (_, k, where), jobs in groups.items():
            self.searches += 1
            served = jobs[0].served
            try:
                vectors = np.stack([j.vector for j in jobs])  # type: ignore[misc]
                results = served.searcher.search_vectors(vectors, k=k, where=where)
                now = time.perf_counter()
                answers = [
                    Answer([self.render(h, served) for h in hits], j.t1 - j.t0, now - j.t1)
                    for j, hits in zip(jobs, results, strict=True)
                ]
            except Exception as exc:  # a bad filter fails its whole group alike
                for j in jobs:
                    _settle(j, error=exc)
                continue
            for j, a in zip(jobs, answers, strict=True):
                _settle(j, value=a)


def _settle(job: _Job, *, value: Answer | None = None, error: BaseException | None = None) -> None:
    def done() -> None:
        if job.future.done():  # the request was cancelled (client gone)
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # the loop is closed (server shutting down)
        job.loop.call_soon_threadsafe(done)
