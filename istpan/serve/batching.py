"""Decoding in a pool of worker processes, and a micro-batcher that puts concurrent requests' clips into one pass.

    upload -> DecodePool.decode(path)      worker process: probe the container, decode the K sampled frames
           -> MicroBatcher.submit(views)   waits at most max_wait_ms for up to max_batch - 1 other clips
           -> one forward pass (its own thread, so the event loop keeps reading uploads meanwhile)

Why processes for decoding: FFmpeg runs on untrusted bytes, and a decoder that crashes takes its process with it; the
pool is then rebuilt and only that request fails (DecoderCrashed). Workers are spawned, not forked (forking a process
that runs torch threads can deadlock), and replaced every MAX_TASKS_PER_CHILD videos so per-process caches of the
decoder stay bounded on a server that runs for months.

Why one forward thread: the model runs one batch at a time; clips that arrive while it runs wait in the queue and go
together into the next pass, so under load batches fill up without any wait at all.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import torch

from istpan.data.preprocess import Preprocessing
from istpan.errors import UserError
from istpan.serve.engine import DecodedClip, decode_clip
from istpan.serve.metrics import Metrics

__all__ = ["DecodePool", "DecoderCrashed", "MicroBatcher"]

MAX_TASKS_PER_CHILD = 1000
_PRE: Preprocessing | None = None  # in a worker: the checkpoint's preprocessing, set once by _init


class DecoderCrashed(UserError):
    """The decoding process died on this file (422): the pool is rebuilt, the server goes on."""


def _init(pre: Preprocessing) -> None:
    global _PRE
    _PRE = pre
    torch.set_num_threads(1)  # decoding and resizing one video: threads would fight the forward pass for cores


def _decode(path: str) -> DecodedClip:
    assert _PRE is not None, "decode worker not initialised"
    return decode_clip(_PRE, path)


def _ready() -> bool:
    return True


class DecodePool:
    """`workers` spawned processes decoding uploads with the checkpoint's `Preprocessing`."""

    def __init__(self, pre: Preprocessing, workers: int) -> None:
        self.pre, self.workers = pre, workers
        self._lock = threading.Lock()
        self._pool = self._make()

    def _make(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                                   initargs=(self.pre,), max_tasks_per_child=MAX_TASKS_PER_CHILD)

    def warm_up(self) -> None:
        """Start every worker now (imports take seconds), not on the first requests."""
        for future in [self._pool.submit(_ready) for _ in range(self.workers)]:
            future.result()

    async def decode(self, path: str) -> DecodedClip:
        pool = self._pool
        try:
            return await asyncio.wrap_future(pool.submit(_decode, path))
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = self._make()
            pool.shutdown(wait=False, cancel_futures=True)
            raise DecoderCrashed(f"{path}: the decoder crashed on this file") from None

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class MicroBatcher:
    """Collects clips from concurrent requests into batches of at most `max_batch`, waiting at most `max_wait_ms`
    after the first; `run_batch(list of views) -> probabilities (N, C)` runs in one dedicated thread."""

    def __init__(self, run_batch: Callable[[list[np.ndarray]], torch.Tensor], *, max_batch: int, max_wait_ms: float,
                 metrics: Metrics) -> None:
        self.run_batch, self.max_batch, self.max_wait_s = run_batch, max_batch, max_wait_ms / 1000.0
        self.metrics = metrics
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="istpan-forward")
        self._task: asyncio.Task | None = None
        self.batches = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="istpan-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, views: np.ndarray) -> torch.Tensor:
        """Probabilities (C,) of one clip's views uint8 (K, S, S, 3), computed in a shared batch."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((views, future))
        self.metrics.queue_depth.set(self._queue.qsize())
        return await future

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [(views, future) for views, future in batch if not future.done()]  # done: its request was cancelled

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self.metrics.queue_depth.set(self._queue.qsize())
            if not batch:
                continue
            self.metrics.batch_size.observe(len(batch))
            self.batches += 1
            try:
                probs: Any = await loop.run_in_executor(self._executor, self.run_batch, [v for v, _ in batch])
            except Exception as err: # every waiting request gets the error, the loop goes on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), row in zip(batch, probs):
                if not future.done():
                    future.set_result(row)
