"""Dynamic batching for `serve` that never delays a lone request.

Ray's `@serve.batch` waits the full `batch_wait_timeout_s` after a batch's first request even when no other
request exists (a flat +wait at C = 1), and forms the next batch while the previous one still runs. Here one
loop per replica takes what is queued when the engine is free; it waits (at most `wait_s`) only while other
requests are already inside the replica, being read and preprocessed. Under load the queue fills while the
engine runs, so batches form by themselves. An engine call that took under `INLINE_S` last time runs on the
event loop itself: handing a 0.1 ms call to a thread and back costs more CPU than the call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

INLINE_S = 0.001  # engine calls faster than this block the event loop less than a thread hand-off costs


class Batcher:
    """Gathers single preprocessed images into engine calls of at most `max_batch_size`."""

    def __init__(
        self, run: Callable[[np.ndarray], np.ndarray], max_batch_size: int, wait_s: float,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.run, self.max_batch_size, self.wait_s, self.on_batch = run, max_batch_size, wait_s, on_batch
        self.arriving = 0  # requests inside the replica that have not reached the queue yet
        self.queue: list[tuple[np.ndarray, asyncio.Future]] = []
        self.ready = asyncio.Event()
        self.worker: asyncio.Task | None = None
        self.last_call_s = float("inf")  # the first call runs in a thread: its time is unknown

    @contextmanager
    def arriving_request(self) -> Iterator[None]:
        """Around reading and preprocessing a request: a forming batch may wait for it."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    async def classify(self, tensors: list[np.ndarray]) -> tuple[np.ndarray, int]:
        """Engine output rows of `tensors` (in order) and the largest engine batch that held one of them."""
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._serve_batches())
        futures = [loop.create_future() for _ in tensors]
        self.queue.extend(zip(tensors, futures))
        self.ready.set()
        answers = await asyncio.gather(*futures)
        return np.stack([row for row, _ in answers]), max(size for _, size in answers)

    def _timed_run(self, tensors: np.ndarray) -> np.ndarray:
        began = time.perf_counter()
        rows = self.run(tensors)
        self.last_call_s = time.perf_counter() - began
        return rows

    async def _serve_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.ready.wait()
            deadline = loop.time() + self.wait_s
            while len(self.queue) < self.max_batch_size and self.arriving and loop.time() < deadline:
                self.ready.clear()
                try:
                    await asyncio.wait_for(self.ready.wait(), deadline - loop.time())
                except asyncio.TimeoutError:
                    break
            batch, self.queue = self.queue[: self.max_batch_size], self.queue[self.max_batch_size :]
            if not self.queue:
                self.ready.clear()
            if not batch:
                continue
            self.on_batch(len(batch))
            try:
                tensors = np.stack([tensor for tensor, _ in batch])
                rows = self._timed_run(tensors) if self.last_call_s < INLINE_S else await asyncio.to_thread(self._timed_run, tensors)
            except Exception as error:  # the engine failed: every waiting request gets the error (a 500), none hangs
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), row in zip(batch, rows):
                if not future.done():
                    future.set_result((row, len(batch)))
