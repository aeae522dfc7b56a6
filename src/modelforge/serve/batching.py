"""Dynamic micro-batching: concurrent requests are gathered into one model call.

A request (one or more inputs) waits in a bounded queue. One collector task per model takes the oldest request and
gathers more, up to ``max_batch_size`` inputs; the batch then runs in the model's own worker thread, so the event
loop keeps accepting requests meanwhile. How long it gathers is the batch window:

- ``adaptive`` (what ``modelforge serve`` uses): no timer. A request that finds the model idle runs at once, alone;
  the requests that arrive while a batch runs form the next batch, which starts as soon as the model is free. A
  request therefore waits only for the model, never for company that may not come, so batching cannot make latency
  worse than running each request alone, and batches grow with the load.
- ``fixed``: the batch also waits until the oldest request has waited ``max_wait_ms`` (fuller batches at light
  load, at the price of that wait).
 One thread
per model because a second concurrent forward pass only competes for the same cores (and not every model is
thread-safe). A full queue is refused at once (``QueueFullError`` → HTTP 503) instead of letting latency grow.

Unbatched calls (explanations, each many forward passes) share that thread through ``run_exclusive``: at most
``max_explains`` wait or run per model (more are refused like a full queue) and they run one at a time, so the
thread's own queue never holds more than one of them ahead of the next predict batch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger("modelforge.serve")
T = TypeVar("T")
BATCH_WINDOWS = ("adaptive", "fixed")


class QueueFullError(Exception):
    """The model's queue is full; the client should retry after ``retry_after`` seconds."""

    def __init__(self, name: str, retry_after: int = 1):
        super().__init__(f"model {name!r} is busy (request queue full); retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class BatchSettings:
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    queue_size: int = 256
    max_explains: int = 2  # explanations waiting or running per model; bounded by queue_size too
    window: str = "fixed"  # "adaptive": no timer, see the module docstring; "fixed": wait up to max_wait_ms

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.queue_size < 1 or self.max_wait_ms < 0 or self.max_explains < 1:
            raise ValueError("max_batch_size, queue_size and max_explains must be ≥ 1 and max_wait_ms ≥ 0")
        if self.window not in BATCH_WINDOWS:
            raise ValueError(f"batch window must be one of {', '.join(BATCH_WINDOWS)}, got {self.window!r}")


@dataclass
class _Request:
    items: list[Any]
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    requests: int = 0
    items: int = 0
    batches: int = 0
    largest_batch: int = 0
    rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class ServerClosingError(Exception):
    """The server's drain deadline passed before this request's answer was ready."""

    def __init__(self, name: str):
        super().__init__(f"the server is shutting down; model {name!r} could not answer in time (retry later)")


class MicroBatcher:
    """Runs ``run_batch(items) → results`` (one result per item) over gathered requests in a worker thread."""

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], settings: BatchSettings, name: str = "model"):
        self.run_batch, self.settings, self.name = run_batch, settings, name
        self.stats = BatchStats()
        self._pending: collections.deque[_Request] = collections.deque()
        self._pending_items = 0
        self._arrived: asyncio.Event | None = None
        self._collector: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._exclusive_lock: asyncio.Lock | None = None
        self._exclusive_waiting = 0
        self._waiting: set[asyncio.Future] = set()  # every client's future not yet answered
        self._jobs: set[asyncio.Task] = set()  # unbatched calls in progress (a reference keeps each task alive)
        self.busy = 0  # calls running in the worker thread now (changed by that thread only)

    # ---- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start on the running event loop (the server's lifespan calls it; ``submit`` does if nobody did)."""
        if self._collector is not None and not self._collector.done():
            return
        self._arrived = asyncio.Event()
        self._exclusive_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"modelforge-{self.name}")
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            try:
                await self._collector
            except asyncio.CancelledError:
                pass
            self._collector = None
        for job in list(self._jobs):
            job.cancel()
        while self._pending:
            _settle(self._pending.popleft().future, error=QueueFullError(self.name))
        self._pending_items = 0
        if self._executor is not None:
            # A forward pass already running cannot be interrupted; the shutdown deadline decides how long to wait.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def abandon(self) -> None:
        """Answer every request still waiting or running with ``ServerClosingError`` (the drain deadline passed)."""
        for future in list(self._waiting):
            _settle(future, error=ServerClosingError(self.name))

    # ---- requests -----------------------------------------------------------------------------------------------
    def _waiter(self) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._waiting.add(future)
        future.add_done_callback(self._waiting.discard)
        return future

    async def submit(self, items: list[Any]) -> list[Any]:
        """Queue one request's inputs and wait for their results; raises ``QueueFullError`` when the queue is full."""
        self.start()
        if len(self._pending) >= self.settings.queue_size:
            self.stats.rejected += 1
            raise QueueFullError(self.name)
        request = _Request(list(items), self._waiter())
        self._pending.append(request)
        self._pending_items += len(request.items)
        self.stats.requests += 1
        assert self._arrived is not None
        self._arrived.set()
        return await request.future

    async def run_exclusive(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the model's worker thread, between batches (for calls that are not batched, e.g. explain);
        one at a time, and ``QueueFullError`` when ``max_explains`` (or ``queue_size``) already wait or run."""
        self.start()
        if self._exclusive_waiting >= min(self.settings.max_explains, self.settings.queue_size):
            self.stats.rejected += 1
            raise QueueFullError(self.name)
        self._exclusive_waiting += 1
        waiter = self._waiter()
        job = asyncio.get_running_loop().create_task(self._exclusive_job(fn, waiter))
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return await waiter

    async def _exclusive_job(self, fn: Callable[[], T], waiter: asyncio.Future) -> None:
        """Holds the lock (and counts as waiting) until the thread is done with ``fn``, even when the client has
        left meanwhile: a client that disconnects cannot pile calls up behind the lock."""
        try:
            assert self._exclusive_lock is not None
            async with self._exclusive_lock:
                if waiter.done():  # the client left (or the server is closing) before its turn
                    return
                try:
                    _settle(waiter, await self._in_worker(fn))
                except Exception as exc:
                    _settle(waiter, error=exc)
        finally:
            self._exclusive_waiting -= 1

    async def _in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._counted, fn, *args)

    def _counted(self, fn: Callable[..., T], *args: Any) -> T:
        self.busy += 1
        try:
            return fn(*args)
        finally:
            self.busy -= 1

    # ---- the collector ------------------------------------------------------------------------------------------
    async def _collect(self) -> None:
        assert self._arrived is not None
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            await self._gather()
            batch = self._take()
            if batch:
                await self._run(batch)

    async def _gather(self) -> None:
        """Fixed window: wait until a full batch is pending or the oldest request has waited max_wait_ms. Adaptive:
        no wait (the collector reaches here only once the previous batch is done, so what arrived meanwhile is
        already pending)."""
        assert self._arrived is not None
        if self.settings.window == "adaptive":
            return
        deadline = self._pending[0].arrived + self.settings.max_wait_ms / 1000
        while self._pending_items < self.settings.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _take(self) -> list[_Request]:
        """Oldest requests first, up to max_batch_size inputs (a larger single request runs alone)."""
        batch: list[_Request] = []
        count = 0
        while self._pending:
            size = len(self._pending[0].items)
            if batch and count + size > self.settings.max_batch_size:
                break
            request = self._pending.popleft()
            self._pending_items -= size
            if request.future.done():  # the client went away while waiting
                continue
            batch.append(request)
            count += size
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        items = [item for request in batch for item in request.items]
        self.stats.batches += 1
        self.stats.items += len(items)
        self.stats.largest_batch = max(self.stats.largest_batch, len(items))
        try:
            results = await self._in_worker(self._checked_run, items)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, error=exc)
                return
            # One bad input must not fail its neighbours: run each request alone to find whose it was.
            for request in batch:
                try:
                    if request.future.done():  # its client went away meanwhile
                        continue
                    single = await self._in_worker(self._checked_run, request.items)
                    _settle(request.future, single)
                except Exception as single_exc:
                    _settle(request.future, error=single_exc)
            return
        start = 0
        for request in batch:
            _settle(request.future, results[start : start + len(request.items)])
            start += len(request.items)

    def _checked_run(self, items: list[Any]) -> list[Any]:
        results = self.run_batch(items)
        if len(results) != len(items):
            raise RuntimeError(f"model {self.name!r} returned {len(results)} results for {len(items)} inputs")
        return results


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():  # cancelled by a client that disconnected
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
