"""Data-set images → engine batches, decoded a few batches ahead of the engine.

Decoding and preprocessing run in a small thread pool (cv2 and numpy release the GIL); for engines
that keep the GIL while they run (Paddle Inference), the decoders are forked processes writing into
shared memory. evaluate.py drives these; nothing here knows about engines or scores.
"""

from __future__ import annotations

import mmap
import multiprocessing
import queue
import signal
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.errors import InputError
from paddlecls_q.preprocess import ImagePreprocessor, read_image

# A decoding task fills this much of batch tensors (one batch at least): each hand-off between the engine
# and a decoder wakes the other side (tens of µs on a VM), as much as decoding a few small images costs.
# Forked decoders hand over a task with two pipe messages (~0.2 ms after an engine call): bigger tasks.
TASK_TENSOR_BYTES, PROCESS_TASK_TENSOR_BYTES = 1536 << 10, 6 << 20
PREFETCH_TASKS_PER_WORKER = 2


@contextmanager
def single_threaded_opencv() -> Iterator[None]:
    """One OpenCV thread per decoding worker: the cores belong to the engine and the workers."""
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


@dataclass
class Batch:
    """One engine call's worth of preprocessed images, padded to the full batch size."""

    indices: list[int]
    tensor: np.ndarray | None
    failures: list[str]


class BatchLoader:
    """Reads and preprocesses data-set items into batches; runs in the worker threads."""

    def __init__(self, preprocess: ImagePreprocessor, items: list[tuple[Path, int]], batch_size: int, strict: bool) -> None:
        self.preprocess = preprocess
        self.items = items
        self.batch_size = batch_size
        self.strict = strict
        # A FastPreprocessor takes greyscale PNGs as one plane, and with a fixed float32 output writes
        # each image straight into its batch.
        self.grey = self.preprocess.reads_grey
        shape = getattr(self.preprocess, "output_shape", None)
        fixed = getattr(self.preprocess, "output_dtype", None) == np.float32
        self.output_shape = (batch_size, *shape) if fixed and shape is not None else None

    def batches_in(self, tensor_bytes: int) -> int:
        """How many batches fill `tensor_bytes` (one at least; one where the batch shape is not fixed)."""
        return max(1, tensor_bytes // (int(np.prod(self.output_shape)) * 4)) if self.output_shape else 1

    def __call__(self, start: int, count: int, spare: queue.SimpleQueue[np.ndarray] | None = None) -> list[Batch]:
        """The batches of `count` items from `start` on, written into `spare` batch arrays where there are some."""
        end = min(start + count, len(self.items))
        batches = []
        for first in range(start, end, self.batch_size):
            output = None
            if spare is not None and self.output_shape:
                try:
                    output = spare.get_nowait()
                except queue.Empty:
                    pass
            batches.append(self.load_batch(first, output))
        return batches

    def load_batch(self, start: int, output: np.ndarray | None = None) -> Batch:
        """One batch from item `start` on, into `output` when given (a fixed-shape loader's batch array)."""
        failures: list[str] = []
        # All of the batch is decoded first, then preprocessed: each stage's code stays in the CPU caches
        # (a quarter less CPU per small image than decoding and preprocessing image by image).
        decoded = []
        for index in range(start, min(start + self.batch_size, len(self.items))):
            path = self.items[index][0]
            try:
                decoded.append((index, path, read_image(path, self.grey)))
            except InputError as error:
                self._failed(failures, str(error))
        preprocess = self.preprocess
        if output is None and self.output_shape:
            output = np.empty(self.output_shape, np.float32)
        indices: list[int] = []
        tensors: list[np.ndarray] = []
        if output is not None and self.grey and preprocess.fill_batch([image for _, _, image in decoded], output):
            indices = [index for index, _, _ in decoded]  # greyscale images of one size, as one stack
        else:
            for index, path, image in decoded:
                try:
                    if output is None:
                        tensors.append(preprocess(image))
                    else:  # straight into the batch: no per-image array, no stacking copy
                        preprocess(image, out=output[len(indices)])
                except InputError as error:
                    self._failed(failures, f"{path}: {error}")
                    continue
                indices.append(index)
        if not indices:
            return Batch(indices, None, failures)
        # Pad the last batch to the full size: the engine keeps one input shape (OpenVINO compiles one per shape).
        if output is None:
            tensors.extend(tensors[-1:] * (self.batch_size - len(tensors)))
            return Batch(indices, np.stack(tensors), failures)
        output[len(indices) :] = output[len(indices) - 1]
        return Batch(indices, output, failures)

    def _failed(self, failures: list[str], message: str) -> None:
        """Count an unreadable image; with --strict it ends the run."""
        if self.strict:
            raise InputError(message)
        failures.append(message)


def task_spans(batch_size: int, total: int, most: int) -> Iterator[tuple[int, int]]:
    """(first item, item count) of each decoding task: 1, 2, 4... batches, up to `most` batches.

    The engine starts as soon as one batch is decoded, and the decoders stay ahead of it from there.
    """
    start, batches = 0, 1
    while start < total:
        yield start, batches * batch_size
        start += batches * batch_size
        batches = min(2 * batches, most)


def thread_batches(load: BatchLoader, total: int, workers: int) -> Generator[Batch, None, None]:
    """Batches in data-set order, decoded by a thread pool at most a few tasks ahead of the engine.

    A task holds several batches when batches are small (TASK_TENSOR_BYTES). Batch arrays are recycled:
    a batch's tensor is valid until the next batch is asked for (fresh memory costs page faults, 7 µs
    per 28×28 image).
    """
    spans = task_spans(load.batch_size, total, load.batches_in(TASK_TENSOR_BYTES))
    pending: deque[Future[list[Batch]]] = deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="eval-decode")
    spare: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()

    def submit_next() -> None:
        span = next(spans, None)
        if span is not None:
            pending.append(pool.submit(load, *span, spare))

    try:
        for _ in range(PREFETCH_TASKS_PER_WORKER * workers + 1):
            submit_next()
        while pending:
            try:
                batches = pending.popleft().result()
            except InputError as error:
                raise InputError(f"{error} (--strict)") from None
            submit_next()
            for item in batches:
                yield item
                if item.tensor is not None and load.output_shape:
                    spare.put(item.tensor)
                    item.tensor = None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _process_worker(load: BatchLoader, slots: np.ndarray, tasks: Any, results: Any, results_lock: Any) -> None:
    """A forked decoding process (see _process_batches): fills the shared batch slots of each task."""
    import cv2

    # Not the engine's handlers (Paddle's prints a crash report on SIGTERM); Ctrl-C is the parent's to handle.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    while (task := tasks.get()) is not None:
        group, start, count = task
        firsts = range(start, min(start + count, len(load.items)), load.batch_size)
        try:
            batches = [load.load_batch(first, slot) for first, slot in zip(firsts, slots[group])]
            message: tuple[int, int, list[tuple[list[int], list[str]]], str | None] = (
                start,
                group,
                [(batch.indices, batch.failures) for batch in batches],
                None,
            )
        except InputError as error:
            message = (start, group, [], str(error))
        with results_lock:  # sent now, from this thread (a multiprocessing.Queue's feeder thread lags behind)
            results.send(message)


class ProcessBatches:
    """Batches in data-set order, decoded by forked processes into shared memory (no copy on the way back).

    For engines that keep the GIL while they run: decoding threads would stall behind them. Workers
    are forked when this is made, with the preprocessing already built (they only run OpenCV and
    numpy), and start work at the first batch asked for. A task holds several batches when batches
    are small (PROCESS_TASK_TENSOR_BYTES). A batch's tensor is valid until the next batch is asked
    for (its slot is reused).
    """

    def __init__(self, load: BatchLoader, total: int, workers: int) -> None:
        assert load.output_shape is not None
        context = multiprocessing.get_context("fork")
        self.batch_size, self.total = load.batch_size, total
        per_task = load.batches_in(PROCESS_TASK_TENSOR_BYTES)
        shape = (PREFETCH_TASKS_PER_WORKER * workers + 1, per_task, *load.output_shape)
        self.memory = mmap.mmap(-1, int(np.prod(shape)) * 4)  # anonymous and shared with the forked workers
        self.slots: np.ndarray = np.ndarray(shape, np.float32, buffer=self.memory)
        self.tasks = context.SimpleQueue()
        self.results, self.results_writer = context.Pipe(duplex=False)
        arguments = (load, self.slots, self.tasks, self.results_writer, context.Lock())
        self.current: Batch | None = None
        self.processes = [
            context.Process(target=_process_worker, args=arguments, daemon=True) for _ in range(workers)
        ]
        try:
            for process in self.processes:
                process.start()
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Generator[Batch, None, None]:
        spans = task_spans(self.batch_size, self.total, len(self.slots[0]))
        order: deque[int] = deque()
        done: dict[int, tuple[int, int, list[tuple[list[int], list[str]]], str | None]] = {}

        def submit(group: int) -> None:
            span = next(spans, None)
            if span is not None:
                order.append(span[0])
                self.tasks.put((group, *span))

        for group in range(len(self.slots)):
            submit(group)
        while order:
            start = order.popleft()
            while start not in done:
                if not self.results.poll(1.0):
                    if not all(process.is_alive() for process in self.processes):
                        raise InputError("a decoding process ended unexpectedly (out of memory?)")
                    continue
                result = self.results.recv()
                done[result[0]] = result
            _, group, loaded, error = done.pop(start)
            if error is not None:
                raise InputError(f"{error} (--strict)")
            for slot, (indices, failures) in zip(self.slots[group], loaded):
                self.current = Batch(indices, slot if indices else None, failures)
                yield self.current
                self.current.tensor = None  # the caller is done with it
            submit(group)  # the group's slots take the next task

    def close(self) -> None:
        if self.current is not None:
            self.current.tensor = None
        for process in self.processes:
            if process.pid is not None:
                process.terminate()  # the queue may still hold tasks (an error, Ctrl-C): no need to finish them
        for process in self.processes:
            if process.pid is not None:
                process.join()
        self.results.close()
        self.results_writer.close()
        del self.slots
        try:
            self.memory.close()
        except BufferError:  # a view still held (an error's traceback): unmapped when it goes
            pass
