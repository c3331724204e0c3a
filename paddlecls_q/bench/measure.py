"""Measure what INT8 bought: runtime and end-to-end latency of a model and its INT8 version on each engine.

Every engine × precision of the run is a *cell*. The default (interleaved) schedule loads all cells,
warms each up, then times them round-robin in blocks of `block` cycles, so that a busy machine slows
every cell alike and the ratios between cells stay fair. Each timed cycle makes, in rotating order,
three calls on the same photo:

- runtime: `Runtime.infer(batch)` on the preprocessed photo (the seed's "Runtime" table);
- end to end: preprocess the decoded photo → engine → top-k classes and their probabilities (decoding
  excluded, as the photo is decoded once; the seed's "end-to-end" table);
- bare: the engine's own API called directly, to show what paddlecls-q's wrapper costs.

Every call also records the process CPU time it used, which a preempted process does not accrue:
on a shared machine, CPU-time ratios stay steady where wall-clock ones wobble. The first cycle of a
block is not timed (it re-warms caches after the other cells ran).
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from paddlecls_q.bench.results import BenchResult, CellResult, ThreadCheck, compare_to_fp32, measured_accuracy, run_warnings
from paddlecls_q.bench.settings import BenchModels, BenchSettings, not_available_reason
from paddlecls_q.config import InferenceClsConfig, NormalizeImageOp, RuntimeOptions, validate
from paddlecls_q.environment import describe_environment, load_average
from paddlecls_q.errors import BackendUnavailableError, ModelFormatError, PaddleClsQError
from paddlecls_q.model_files import ModelFiles, load_inference_config, read_quantize_report
from paddlecls_q.postprocess import are_probabilities, to_probabilities, top_k_probabilities
from paddlecls_q.preprocess import FastPreprocessor, ImagePreprocessor, compile_plan, read_image, reference_preprocessor
from paddlecls_q.preprocess.reference import resized_size
from paddlecls_q.runtime import BareCall, Runtime, create_runtime
from paddlecls_q.stats import LatencyStats, summarize

@dataclass
class _LoadedCell:
    result: CellResult
    runtime: Runtime
    preprocess: ImagePreprocessor
    batch: np.ndarray
    buffer: np.ndarray | None
    topk: int
    probabilities: np.ndarray
    bare: Callable[[], Any] | None
    outputs_are_probabilities: bool


class Timings:
    """Preallocated wall / process-CPU / calling-thread-CPU samples of one kind of call (ns)."""

    def __init__(self, count: int) -> None:
        self.wall = np.zeros(count, np.int64)
        self.cpu = np.zeros(count, np.int64)
        self.thread = np.zeros(count, np.int64)
        self.count = 0

    def time(self, function: Callable[[], Any]) -> None:
        cpu_start, thread_start = time.process_time_ns(), time.thread_time_ns()
        wall_start = time.perf_counter_ns()
        function()
        wall_end = time.perf_counter_ns()
        thread_end, cpu_end = time.thread_time_ns(), time.process_time_ns()
        index = self.count
        self.wall[index], self.cpu[index], self.thread[index] = (
            wall_end - wall_start,
            cpu_end - cpu_start,
            thread_end - thread_start,
        )
        self.count += 1

    def wall_stats(self) -> LatencyStats:
        return summarize(self.wall[: self.count] / 1e6)

    def cpu_stats(self) -> LatencyStats:
        return summarize(self.cpu[: self.count] / 1e6)

    def parallelism(self) -> float | None:
        thread = int(self.thread[: self.count].sum())
        return float(self.cpu[: self.count].sum() / thread) if thread > 0 else None


@contextlib.contextmanager
def opencv_threads(threads: int) -> Iterator[None]:
    """Preprocessing gets the same thread budget as the engine (cv2.resize is parallel by default)."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(threads)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def load_cell(
    result: CellResult, files: ModelFiles, config: InferenceClsConfig, settings: BenchSettings, image: np.ndarray
) -> _LoadedCell:
    mode = result.mode
    options = validate(
        RuntimeOptions,
        {
            "backend": result.backend,
            "device": settings.device,
            "gpu_id": settings.gpu_id,
            "threads": settings.threads,
            "fp16": "fp16" in mode,
            "pinned_memory": mode.endswith("+pm"),
            "cache_dir": settings.cache_dir,
        },
        f"{result.backend} {mode}",
    )
    reference = reference_preprocessor(config)
    fast = compile_plan(reference)
    preprocess: ImagePreprocessor = fast or reference
    result.preprocessor = "fast_preprocess plan (bit-identical)" if fast else "paddlecls_q.preprocess"
    runtime = create_runtime(files, options)
    tensor = preprocess(image)
    batch = np.ascontiguousarray(tensor[None])
    outputs = runtime.infer(batch)
    probabilities = to_probabilities(outputs)[0]
    reported = runtime.reported_threads(batch)
    result.threads = ThreadCheck(settings.threads, reported.threads, reported.source)
    result.precision = reported.precision
    bare_call = runtime.bare_call(batch) if settings.bare_loop else BareCall(None, "not measured (--no-bare-loop)")
    bare, result.bare_note = bare_call.call, bare_call.description
    result.engine = runtime.engine_info()
    result.top1_class = int(np.argmax(probabilities))
    result.top1_score = float(probabilities[result.top1_class])
    buffer = np.empty_like(tensor) if fast is not None and tensor.dtype == np.float32 else None
    topk = max(1, min(config.topk, probabilities.shape[0]))
    # PaddleClas exports end in softmax; like PaddleClas's Topk, the timed path decides that once per model.
    outputs_are_probabilities = are_probabilities(outputs)
    return _LoadedCell(result, runtime, preprocess, batch, buffer, topk, probabilities, bare, outputs_are_probabilities)


def _cycle_steps(
    cell: _LoadedCell, image: np.ndarray, timings: dict[str, Timings]
) -> list[tuple[Callable[[], Any], Timings]]:
    runtime, batch, preprocess, buffer, topk = cell.runtime, cell.batch, cell.preprocess, cell.buffer, cell.topk
    softmax = not cell.outputs_are_probabilities

    def runtime_only() -> Any:
        return runtime.infer(batch)

    def end_to_end() -> Any:
        tensor = preprocess(image, out=buffer) if buffer is not None else preprocess(image)
        return top_k_probabilities(runtime.infer(tensor[None]).reshape(-1), topk, softmax)

    steps = [(runtime_only, timings["runtime"]), (end_to_end, timings["end_to_end"])]
    if cell.bare is not None:
        steps.append((cell.bare, timings["bare"]))
    return steps


def run_cycles(steps: list[tuple[Callable[[], Any], Timings]], count: int, first: int, timed: bool) -> None:
    """`count` cycles; the call order rotates every cycle so no kind of call always follows another."""
    for cycle in range(first, first + count):
        shift = cycle % len(steps)
        for function, timing in steps[shift:] + steps[:shift]:
            if timed:
                timing.time(function)
            else:
                function()


def _measure(
    loaded: list[_LoadedCell],
    image: np.ndarray,
    settings: BenchSettings,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Time every loaded cell (interleaved: round-robin in blocks) and store the statistics in its result."""
    timings = {
        id(cell): {kind: Timings(settings.iters) for kind in ("runtime", "end_to_end", "bare")} for cell in loaded
    }
    steps = {id(cell): _cycle_steps(cell, image, timings[id(cell)]) for cell in loaded}
    total = settings.iters * len(loaded)
    done = 0
    failed: set[int] = set()

    def attempt(cell: _LoadedCell, count: int, first: int, timed: bool) -> None:
        if id(cell) in failed:
            return
        try:
            run_cycles(steps[id(cell)], count, first, timed)
        except Exception as error:  # noqa: BLE001 - an engine failing mid-run fails its own cell only
            failed.add(id(cell))
            cell.result.status, cell.result.reason = "failed", f"failed while timing: {one_line(error)}"

    if settings.schedule == "interleaved":
        for cell in loaded:
            attempt(cell, settings.warmup, 0, timed=False)
        position = 0
        while position < settings.iters:
            count = min(settings.block, settings.iters - position)
            for cell in loaded:
                attempt(cell, 1, position, timed=False)
                attempt(cell, count, position, timed=True)
                done += count
                if progress:
                    progress(done, total)
            position += count
    else:
        for cell in loaded:
            attempt(cell, settings.warmup, 0, timed=False)
            attempt(cell, settings.iters, 0, timed=True)
            done += settings.iters
            if progress:
                progress(done, total)

    for cell in loaded:
        if id(cell) in failed:
            continue
        result, cell_timings = cell.result, timings[id(cell)]
        result.runtime_ms, result.runtime_cpu_ms = (
            cell_timings["runtime"].wall_stats(),
            cell_timings["runtime"].cpu_stats(),
        )
        result.end_to_end_ms, result.end_to_end_cpu_ms = (
            cell_timings["end_to_end"].wall_stats(),
            cell_timings["end_to_end"].cpu_stats(),
        )
        if cell_timings["bare"].count:
            result.bare_ms, result.bare_cpu_ms = cell_timings["bare"].wall_stats(), cell_timings["bare"].cpu_stats()
        if result.threads is not None:
            parallelism = cell_timings["runtime"].parallelism()
            result.threads = ThreadCheck(
                result.threads.requested, result.threads.reported, result.threads.source, parallelism
            )


def one_line(error: BaseException, limit: int = 300) -> str:
    """A table-sized reason: our errors lead with the cause, engines' C++ traces end with it."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if isinstance(error, PaddleClsQError):
        text = lines[0] if lines else type(error).__name__
    else:
        text = f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def inference_config(files: ModelFiles, fallback: ModelFiles | None) -> tuple[InferenceClsConfig, str]:
    """The folder's inference_cls.yaml; an INT8 folder without one uses the FP32 model's (PaddleClas's advice)."""
    try:
        return load_inference_config(files), ""
    except ModelFormatError:
        if fallback is None:
            raise
        note = f"{files.folder} has no inference_cls.yaml; used the FP32 model's preprocessing"
        return load_inference_config(files, yaml_from=fallback), note


def run_benchmark(
    models: BenchModels,
    settings: BenchSettings,
    progress: Callable[[int, int], None] | None = None,
) -> BenchResult:
    """Measure every engine × precision of `settings` on `models`; engines that can't run say why.

    Raises InputError when the photo can't be decoded (nothing could run); an engine that is missing
    or fails to load fails its own cells only.
    """
    started = time.perf_counter()
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    image = read_image(settings.image)
    load_before = load_average()
    warnings: list[str] = []
    cells: list[CellResult] = []
    loaded: list[_LoadedCell] = []
    configs: dict[str, tuple[InferenceClsConfig, str]] = {}
    with opencv_threads(settings.threads):
        for backend in settings.backends:
            for mode in settings.modes:
                result = CellResult(backend=backend, mode=mode)
                cells.append(result)
                reason = not_available_reason(backend, mode, settings, models)
                if reason:
                    result.status, result.reason = "n/a", reason
                    continue
                files = models.fp32 if mode == "fp32" else models.int8
                assert files is not None  # not_available_reason said why a missing INT8 model can't run
                key = "fp32" if mode == "fp32" else "int8"
                try:
                    if key not in configs:
                        configs[key] = inference_config(files, models.fp32 if key == "int8" else None)
                        if configs[key][1]:
                            warnings.append(configs[key][1])
                    loaded.append(load_cell(result, files, configs[key][0], settings, image))
                except BackendUnavailableError as error:  # not installed, or no device: n/a, like the GPU modes
                    result.status, result.reason = "n/a", one_line(error)
                except Exception as error:  # noqa: BLE001 - an engine that can't load the model fails its own cells
                    result.status, result.reason = "failed", one_line(error)
        _measure(loaded, image, settings, progress)
        for cell in loaded:
            cell.runtime.close()  # the engines, and TensorRT's pinned and device buffers, are freed here
        preprocessing = _measure_preprocessing(configs, image, settings) if loaded else {}
    throughput: list[dict[str, Any]] = []
    if settings.batch_sizes and loaded:
        from paddlecls_q.bench.throughput import run_throughput  # it imports this module

        throughput = run_throughput(models, settings)
    compare_to_fp32(cells, {id(cell.result): cell.probabilities for cell in loaded})
    warnings.extend(run_warnings(cells))
    environment = describe_environment(settings.threads, load_before)
    if settings.device == "cpu" and loaded:
        from paddlecls_q.bench.peak import LITTLE_GAIN, conv_peak  # it imports this module

        try:
            environment["conv_peak"] = peak = conv_peak(settings.threads)
        except Exception as error:  # noqa: BLE001 - a side measurement: the cells above stand without it
            peak = {}
            warnings.append(f"could not measure this CPU's INT8 / FP32 compute: {one_line(error)}")
        if peak and peak["int8_over_fp32"] < LITTLE_GAIN:
            warnings.append(
                f"this CPU runs an int8 convolution at {peak['int8_over_fp32']:.2f}x its float32 speed ({peak['what']}): "
                "INT8 can buy little or no speed here"
            )
    entry = models.entry
    report = read_quantize_report(models.int8.folder) if models.int8 else {}
    accuracy, accuracy_source = measured_accuracy(report)
    method = str(report.get("method") or (entry.quantization if entry and entry.quantization else "PTQ")).upper()
    return BenchResult(
        model=models.name,
        fp32_dir=str(models.fp32.folder),
        int8_dir=str(models.int8.folder) if models.int8 else None,
        int8_missing=models.int8_missing,
        quantization=method if models.int8 else "",
        registry_model=entry.name if entry else None,
        fp32_top1=entry.fp32_top1 if entry and models.published_fp32 else None,
        published_int8=models.published_int8,
        accuracy=accuracy,
        accuracy_source=accuracy_source,
        reference=[asdict(figures) for figures in entry.reference] if entry else [],
        settings=settings.model_dump(mode="json"),
        environment=environment,
        cells=cells,
        preprocessing_ms=preprocessing,
        throughput=throughput,
        warnings=warnings,
        started=started_at,
        seconds=time.perf_counter() - started,
    )


def _measure_preprocessing(
    configs: dict[str, tuple[InferenceClsConfig, str]], image: np.ndarray, settings: BenchSettings
) -> dict[str, LatencyStats]:
    """Preprocessing alone, three ways, interleaved: PaddleClas's plain steps, paddlecls_q.preprocess, the fast plan."""
    config = (configs.get("fp32") or configs["int8"])[0]
    reference = reference_preprocessor(config)
    candidates: dict[str, Callable[[], Any]] = {"paddlecls_q.preprocess": lambda: reference(image)}
    fast = compile_plan(reference)
    if fast is not None:
        plain = _plain_opencv_steps(fast)
        candidates = {"plain cv2 + numpy steps": lambda: plain(image), **candidates}
        buffer = np.empty_like(fast(image), dtype=np.float32)
        candidates["fast_preprocess plan"] = lambda: fast(image, out=buffer)
    count = min(settings.iters, 1000)
    timings = {name: Timings(count) for name in candidates}
    steps = [(function, timings[name]) for name, function in candidates.items()]
    run_cycles(steps, min(settings.warmup, 100), 0, timed=False)
    run_cycles(steps, count, 0, timed=True)
    return {name: timing.wall_stats() for name, timing in timings.items()}


def _plain_opencv_steps(plan: FastPreprocessor) -> Callable[[np.ndarray], np.ndarray]:
    """PaddleClas's own code path (resize, crop, float normalize, transpose), the baseline of the speed goal."""
    scale = np.float32(1.0)
    mean = np.zeros((1, 1, 3), np.float32)
    std = np.ones((1, 1, 3), np.float32)
    for op in plan.transform_ops:
        if isinstance(op, NormalizeImageOp):
            scale = np.float32(op.scale)
            mean = np.array(op.mean, np.float32).reshape((1, 1, 3))
            std = np.array(op.std, np.float32).reshape((1, 1, 3))

    def steps(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        size = resized_size(width, height, plan.resize_short, plan.size)
        resized = cv2.resize(image, size, interpolation=plan.interpolation)
        crop_width, crop_height = plan.crop_width or size[0], plan.crop_height or size[1]
        top, left = (size[1] - crop_height) // 2, (size[0] - crop_width) // 2
        cropped = resized[top : top + crop_height, left : left + crop_width, :]
        normalized = (cropped.astype("float32") * scale - mean) / std
        return np.ascontiguousarray(normalized.transpose((2, 0, 1)))

    return steps

