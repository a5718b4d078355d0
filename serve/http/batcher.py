"""The micro-batcher: one thread owns the onnxruntime session and runs requests gathered together.

Servers (the ASGI app in `serve.http.app`, the standard-library fallback in `serve.http.stdlib_server`) parse and
encode each request themselves, then hand its items to `MicroBatcher.submit` (a thread) or
`submit_async` (a coroutine). The worker collects what arrives within `max_wait_s` (or until a
batch is full) and runs it through the model as one sorted-by-length pass. One thread owns the
session, so concurrent requests never race on it, and small concurrent requests share batches.

`max_queue` caps the requests waiting for or in the model: past it a request gets 503 at once
instead of waiting behind a queue that cannot drain before its timeout.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from serve.http.api import ApiError
from serve.runtime import Item, ServingModel

Results = list[dict[str, Any]]


@dataclass
class Job:
    items: list[Item]
    future: Future = field(default_factory=Future)
    abandoned: bool = False  # its request timed out: the batcher skips it


class MicroBatcher:
    """One worker thread runs the model on requests gathered for up to `max_wait_s`."""

    POLL_S = 0.25  # how often a waiting request checks that the worker is still alive

    def __init__(
        self,
        model: ServingModel,
        batch_size: int,
        max_wait_s: float,
        timeout_s: float = 30.0,
        max_queue: int = 1024,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.model, self.batch_size, self.max_wait_s, self.timeout_s = model, batch_size, max_wait_s, timeout_s
        self.max_queue, self.on_batch = max_queue, on_batch
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.pending = 0  # jobs submitted and not yet answered (the queue depth a client sees)
        self._lock = threading.Lock()
        self.failure: str | None = None
        self.thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self.thread.start()

    def health(self) -> str | None:
        """None while the worker runs, else why it does not."""
        if self.thread.is_alive():
            return None
        return f"the batching thread has stopped ({self.failure or 'no reason recorded'})"

    def _enqueue(self, items: list[Item]) -> Job:
        reason = self.health()
        if reason is not None:
            raise ApiError(503, reason)
        with self._lock:
            if self.pending >= self.max_queue:
                raise ApiError(
                    503,
                    f"{self.pending} requests are already waiting for the model "
                    f"(--max-queue {self.max_queue}); retry later",
                )
            self.pending += 1
        job = Job(items)
        job.future.add_done_callback(self._answered)
        self.jobs.put(job)
        return job

    def _answered(self, _: Future) -> None:
        with self._lock:
            self.pending -= 1

    def _give_up(self, job: Job) -> ApiError:
        """The job's request stops waiting: the worker died, or the timeout passed."""
        job.abandoned = True
        job.future.cancel()  # succeeds only while the worker has not picked the job up
        reason = self.health()
        return ApiError(503, reason or f"no result within --request-timeout {self.timeout_s:g} s; retry later")

    def submit(self, items: list[Item]) -> Results:
        """Run `items` (from a server thread) and wait for their results."""
        job = self._enqueue(items)
        deadline = time.monotonic() + self.timeout_s
        while not job.future.done():
            remaining = deadline - time.monotonic()
            if self.health() is not None or remaining <= 0:
                raise self._give_up(job)
            try:
                job.future.exception(timeout=min(self.POLL_S, remaining))
            except TimeoutError:
                continue
        return job.future.result()

    async def submit_async(self, items: list[Item]) -> Results:
        """`submit` for a coroutine: the event loop keeps serving while the model runs."""
        job = self._enqueue(items)
        waiter = asyncio.wrap_future(job.future)
        deadline = time.monotonic() + self.timeout_s
        while not waiter.done():
            remaining = deadline - time.monotonic()
            if self.health() is not None or remaining <= 0:
                raise self._give_up(job)
            await asyncio.wait({waiter}, timeout=min(self.POLL_S, remaining))
        return waiter.result()

    def _gather(self) -> list[Job]:
        jobs = [self.jobs.get()]
        count = len(jobs[0].items)
        deadline = time.monotonic() + self.max_wait_s
        while count < self.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                jobs.append(self.jobs.get(timeout=remaining))
            except queue.Empty:
                break
            count += len(jobs[-1].items)
        # A job its request gave up on is cancelled; the rest are marked running, so no later cancel() wins.
        return [job for job in jobs if not job.abandoned and job.future.set_running_or_notify_cancel()]

    def _loop(self) -> None:
        try:
            while True:
                self._run(self._gather())
        except BaseException as exc:  # a bug: health checks and waiting requests say so (503) from now on
            self.failure = f"{type(exc).__name__}: {str(exc)[:200]}"
            raise

    def _run(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        items = [item for job in jobs for item in job.items]
        try:
            results = self.model.predict(items, self.batch_size)
        except Exception as exc:  # reported to each waiting request as a 500
            for job in jobs:
                job.future.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(len(items))
        start = 0
        for job in jobs:
            job.future.set_result(results[start : start + len(job.items)])
            start += len(job.items)
