"""Dynamic batching for `serve` that never delays a lone request.

Ray's `@serve.batch` waits the full `batch_wait_timeout_s` after a batch's first request even when no other
request exists (a flat +wait at C = 1), and forms the next batch while the previous one still runs. Here one
loop per replica takes what is queued when the engine is free; it waits (at most `wait_s`) only while other
requests are already inside the replica, being read. Under load the queue fills while the engine runs, so
batches form by themselves. A request may queue its raw item (the image bytes) with a `prepare` function
(decode + preprocess): a batch of several requests then prepares them and calls the engine in one worker thread,
so that the event loop keeps reading the next requests meanwhile (the engine call releases the GIL; docs/serve.md).
A lone request runs on the event loop itself while the engine's last call took under `INLINE_S` per image:
handing 0.1 ms of work to a thread and back costs more CPU than the work.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

INLINE_S = 0.001  # engine time per image under which a lone request blocks the loop less than a thread hand-off costs


class Batcher:
    """Gathers single requests' images into engine calls of at most `max_batch_size`."""

    def __init__(
        self, run: Callable[[np.ndarray], np.ndarray], max_batch_size: int, wait_s: float,
        on_batch: Callable[[int], None] = lambda size: None,
    ) -> None:
        self.run, self.max_batch_size, self.wait_s, self.on_batch = run, max_batch_size, wait_s, on_batch
        self.arriving = 0  # requests inside the replica that have not reached the queue yet
        self.queue: list[tuple[Any, Callable[[Any], np.ndarray] | None, asyncio.Future]] = []
        self.ready = asyncio.Event()
        self.worker: asyncio.Task | None = None
        self.engine_image_s = float("inf")  # the last engine call's time per image; the first runs in a thread

    @contextmanager
    def arriving_request(self) -> Iterator[None]:
        """Around reading (and preparing) a request: a forming batch may wait for it."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    async def classify(self, items: list[Any], prepare: Callable[[Any], np.ndarray] | None = None) -> tuple[np.ndarray, int]:
        """Engine output rows of `items` (in order) and the largest engine batch that held one of them.

        Items are tensors, or whatever `prepare` turns into one inside the batch's worker; an exception it raises
        (a bad image) reaches only its own request.
        """
        loop = asyncio.get_running_loop()
        if self.worker is None or self.worker.done():
            self.worker = loop.create_task(self._serve_batches())
        futures = [loop.create_future() for _ in items]
        self.queue.extend((item, prepare, future) for item, future in zip(items, futures))
        self.ready.set()
        answers = await asyncio.gather(*futures)
        return np.stack([row for row, _ in answers]), max(size for _, size in answers)

    def _work(self, batch: list[tuple[Any, Callable[[Any], np.ndarray] | None, asyncio.Future]]) -> list[Any]:
        """Prepare every item, then one engine call: per request its row or its exception."""
        answers: list[Any] = []
        for item, prepare, _ in batch:
            try:
                answers.append(prepare(item) if prepare is not None else item)
            except Exception as error:
                answers.append(error)
        good = [i for i, answer in enumerate(answers) if not isinstance(answer, Exception)]
        if good:
            try:
                began = time.perf_counter()
                rows = self.run(np.stack([answers[i] for i in good]))
                self.engine_image_s = (time.perf_counter() - began) / len(good)
                for i, row in zip(good, rows):
                    answers[i] = (row, len(good))
            except Exception as error:  # the engine failed: every request of the batch gets the error (a 500)
                for i in good:
                    answers[i] = error
        return answers

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
            inline = len(batch) == 1 and self.engine_image_s < INLINE_S
            try:
                answers = self._work(batch) if inline else await asyncio.to_thread(self._work, batch)
            except Exception as error:  # never leave a request hanging
                answers = [error] * len(batch)
            engine_batch = sum(1 for answer in answers if not isinstance(answer, Exception))
            if engine_batch:
                self.on_batch(engine_batch)
            for (_, _, future), answer in zip(batch, answers):
                if future.done():
                    continue
                if isinstance(answer, Exception):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)
