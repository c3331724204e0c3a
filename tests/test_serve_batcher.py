"""serve's Batcher (batcher.py) on a real asyncio loop and a real numpy function: how batches form."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from paddlecls_q.serve.batcher import Batcher

NEVER_S = 3600.0  # a batch wait that would hang the test if a lone request were made to wait it out
GUARD_S = 60.0  # fail instead of hanging


def _double(batch: np.ndarray) -> np.ndarray:
    return batch * 2.0


def _run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, GUARD_S))


def test_a_lone_request_does_not_wait_for_a_batch() -> None:
    seen: list[int] = []

    async def scenario() -> tuple[np.ndarray, int]:
        batcher = Batcher(_double, max_batch_size=16, wait_s=NEVER_S, on_batch=seen.append)
        return await batcher.classify([np.full(3, 1.5, np.float32)])

    rows, size = _run(scenario())
    np.testing.assert_array_equal(rows, [[3.0, 3.0, 3.0]])
    assert size == 1 and seen == [1]


def test_requests_queued_while_the_engine_runs_form_the_next_batch() -> None:
    release, started = threading.Event(), threading.Event()
    seen: list[int] = []

    def slow_first(batch: np.ndarray) -> np.ndarray:
        if not started.is_set():
            started.set()
            release.wait(GUARD_S)
        return batch + 1.0

    async def scenario() -> list[tuple[np.ndarray, int]]:
        batcher = Batcher(slow_first, max_batch_size=4, wait_s=NEVER_S, on_batch=seen.append)
        first = asyncio.create_task(batcher.classify([np.zeros(2, np.float32)]))
        await asyncio.to_thread(started.wait, GUARD_S)
        rest = [asyncio.create_task(batcher.classify([np.full(2, float(i), np.float32)])) for i in range(1, 7)]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(first, *rest)

    answers = _run(scenario())
    assert seen == [1, 4, 2]  # 1 alone, then the 6 that queued meanwhile in batches of at most 4
    assert [size for _, size in answers] == [1, 4, 4, 4, 4, 2, 2]
    for i, (rows, _) in enumerate(answers):
        np.testing.assert_array_equal(rows, [[i + 1.0, i + 1.0]])  # every request gets its own row back


def test_a_batch_waits_for_a_request_already_inside_the_replica() -> None:
    seen: list[int] = []

    async def scenario() -> list[tuple[np.ndarray, int]]:
        batcher = Batcher(_double, max_batch_size=8, wait_s=NEVER_S, on_batch=seen.append)
        with batcher.arriving_request():  # a second request is being read and preprocessed
            first = asyncio.create_task(batcher.classify([np.ones(1, np.float32)]))
            await asyncio.sleep(0.01)
        second = asyncio.create_task(batcher.classify([np.full(1, 5.0, np.float32)]))
        return await asyncio.gather(first, second)

    (first_rows, first_size), (second_rows, second_size) = _run(scenario())
    assert seen == [2] and first_size == second_size == 2
    assert first_rows.tolist() == [[2.0]] and second_rows.tolist() == [[10.0]]


def test_an_engine_error_reaches_every_request_of_the_batch_and_the_next_batch_runs() -> None:
    calls: list[int] = []

    def fail_once(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("engine failed")
        return batch

    async def scenario() -> np.ndarray:
        batcher = Batcher(fail_once, max_batch_size=8, wait_s=0.0)
        with pytest.raises(RuntimeError, match="engine failed"):
            await batcher.classify([np.ones(1, np.float32), np.ones(1, np.float32)])
        rows, _ = await batcher.classify([np.full(1, 7.0, np.float32)])
        return rows

    assert _run(scenario()).tolist() == [[7.0]]
    assert calls == [2, 1]


def test_a_fast_engine_runs_on_the_event_loop_and_a_slow_one_in_a_thread() -> None:
    """After one timed call, calls under INLINE_S run inline (a thread hand-off costs more); slower ones off the loop."""
    from paddlecls_q.serve.batcher import INLINE_S

    def threads_of(engine_s: float) -> list[bool]:
        on_loop: list[bool] = []

        def engine(batch: np.ndarray) -> np.ndarray:
            on_loop.append(threading.current_thread() is threading.main_thread())
            threading.Event().wait(engine_s)
            return batch

        async def scenario() -> None:
            batcher = Batcher(engine, max_batch_size=4, wait_s=0.0)
            for _ in range(3):
                await batcher.classify([np.ones(1, np.float32)])

        _run(scenario())
        return on_loop

    assert threads_of(0.0) == [False, True, True]  # the first call's time is unknown: a thread
    assert threads_of(INLINE_S * 5) == [False, False, False]


def test_a_batch_prepares_its_items_and_calls_the_engine_in_one_worker_thread() -> None:
    """Several queued requests: prepare (decode + preprocess) and engine in the same thread, off the event loop."""
    threads: list[tuple[str, int]] = []
    seen: list[int] = []

    def prepare(item: float) -> np.ndarray:
        threads.append(("prepare", threading.get_ident()))
        if item < 0:
            raise ValueError(f"bad item {item}")
        return np.full(2, item, np.float32)

    def engine(batch: np.ndarray) -> np.ndarray:
        threads.append(("engine", threading.get_ident()))
        return batch * 10.0

    async def scenario() -> list:
        batcher = Batcher(engine, max_batch_size=8, wait_s=0.0, on_batch=seen.append)
        tasks = [asyncio.create_task(batcher.classify([item], prepare)) for item in (1.0, -1.0, 3.0)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    first, failed, third = _run(scenario())
    assert first[0].tolist() == [[10.0, 10.0]] and third[0].tolist() == [[30.0, 30.0]]
    assert first[1] == third[1] == 2 and seen == [2]  # the bad item left the engine batch
    assert isinstance(failed, ValueError) and "bad item -1.0" in str(failed)  # only its own request fails
    assert [step for step, _ in threads] == ["prepare"] * 3 + ["engine"]
    assert len({ident for _, ident in threads}) == 1 and threads[0][1] != threading.main_thread().ident
