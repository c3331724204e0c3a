"""Throughput and memory: images/s of each engine × precision at several batch sizes and thread counts, and peak RSS.

Each engine × precision runs in its own child process (spawned, so it starts from a bare interpreter and
imports one engine only); the child's peak resident set size (VmHWM) is then what that engine needed
to load the model and run every batch size at every thread count, Python and NumPy included. Inside the
child a model is loaded once per thread count (engines fix their threads at load time) with the same
loader as the latency cells, and each batch — the preprocessed photo repeated — is timed with the same
loop (`Timings`, `run_cycles`): images/s = batch size / median wall time of the engine call.
"""

from __future__ import annotations

import math
import multiprocessing
import resource
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from paddlecls_q.bench.measure import inference_config, load_cell, one_line, run_cycles, Timings, opencv_threads
from paddlecls_q.bench.results import CellResult
from paddlecls_q.bench.settings import BenchModels, BenchSettings, not_available_reason
from paddlecls_q.config import InferenceClsConfig
from paddlecls_q.model_files import ModelFiles
from paddlecls_q.preprocess import read_image

# Every batch gets at least this many timed calls, and as many more as it takes to reach `throughput_images`.
MIN_CALLS = 3
WARMUP_CALLS = 2


def run_throughput(models: BenchModels, settings: BenchSettings) -> list[dict[str, Any]]:
    """One record per engine × precision: status, peak RSS (MiB) and images/s per thread count and batch size."""
    records: list[dict[str, Any]] = []
    context = multiprocessing.get_context("spawn")
    for backend in settings.backends:
        for mode in settings.modes:
            reason = not_available_reason(backend, mode, settings, models)
            if reason:
                continue  # the latency tables already say why; throughput lists what ran
            files = models.fp32 if mode == "fp32" else models.int8
            assert files is not None  # not_available_reason said why a missing INT8 model can't run
            record: dict[str, Any] = {"backend": backend, "mode": mode, "status": "ok", "reason": "", "rates": []}
            try:
                config, _ = inference_config(files, models.fp32 if mode != "fp32" else None)
                with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                    record.update(pool.submit(_measure_engine, backend, mode, files, config, settings).result())
            except Exception as error:  # noqa: BLE001 - an engine that fails (or whose child dies) fails its own row
                record["status"], record["reason"] = "failed", one_line(error)
            records.append(record)
    return records


def _measure_engine(
    backend: str, mode: str, files: ModelFiles, config: InferenceClsConfig, settings: BenchSettings
) -> dict[str, Any]:
    """In the child: every thread count × batch size of one engine × precision, then the child's peak RSS."""
    image = read_image(settings.image)
    rates: list[dict[str, Any]] = []
    for threads in settings.threads_list or (settings.threads,):
        cell_settings = settings.model_copy(update={"threads": threads, "bare_loop": False})
        with opencv_threads(threads):
            cell = load_cell(CellResult(backend=backend, mode=mode), files, config, cell_settings, image)
            try:
                for size in settings.batch_sizes:
                    rates.append({"threads": threads, "batch": size, **_time_batch(cell.runtime.infer, cell.batch, size, settings)})
            finally:
                cell.runtime.close()
    return {"peak_rss_mib": peak_rss_kib() / 1024, "rates": rates}


def peak_rss_kib() -> int:
    """This process's peak resident set size (KiB): VmHWM, which a new program image starts afresh.

    ru_maxrss is no use in a spawned child: Linux carries it over fork and exec, so it starts at the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux, where /proc exists anyway


def _time_batch(infer: Any, single: np.ndarray, size: int, settings: BenchSettings) -> dict[str, Any]:
    batch = np.ascontiguousarray(np.repeat(single, size, axis=0))
    calls = max(MIN_CALLS, math.ceil(settings.throughput_images / size))
    timing = Timings(calls)
    steps = [(lambda: infer(batch), timing)]
    try:
        run_cycles(steps, WARMUP_CALLS, 0, timed=False)
        run_cycles(steps, calls, 0, timed=True)
    except Exception as error:  # noqa: BLE001 - e.g. a model exported with a fixed batch of 1
        return {"images_per_second": None, "ms_per_batch": None, "calls": 0, "reason": one_line(error)}
    median = timing.wall_stats().median
    return {"images_per_second": size * 1000.0 / median, "ms_per_batch": median, "calls": calls, "reason": ""}
