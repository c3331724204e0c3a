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
import importlib.metadata
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from paddlecls_q import registry
from paddlecls_q.config import (
    BACKENDS,
    GPU_BACKENDS,
    Backend,
    Device,
    InferenceClsConfig,
    RuntimeOptions,
    StrictModel,
    choice,
    load_inference_cls_yaml,
    parse_device,
    validate,
)
from paddlecls_q.errors import BackendUnavailableError, ConfigError, ModelFormatError, PaddleClsQError
from paddlecls_q.fast_preprocess import FastPreprocessor, compile_plan
from paddlecls_q.infer import are_probabilities, to_probabilities
from paddlecls_q.model_files import ModelFiles, find_model_files, require_inference_cls_yaml
from paddlecls_q.preprocess import Preprocessor, build_preprocessor, read_image
from paddlecls_q.registry import PRECISION_MODES, ModelEntry
from paddlecls_q.runtime import Runtime, create_runtime
from paddlecls_q.stats import NOISY_CV, LatencyStats, ratio, summarize

CPU_BACKENDS = tuple(backend for backend in BACKENDS if backend not in GPU_BACKENDS)
Mode = Literal["fp32", "int8", "int8+fp16", "int8+fp16+pm"]
# The reduced-precision GPU modes each engine has a switch for in paddlecls-q.
GPU_MODE_SUPPORT = {"trt": {"int8+fp16", "int8+fp16+pm"}, "paddle-trt": {"int8+fp16", "int8+fp16+pm"}}
BACKEND_NAMES = {
    "paddle": "Paddle Inference",
    "ort": "ONNX Runtime",
    "openvino": "OpenVINO",
    "trt": "TensorRT",
    "paddle-trt": "Paddle-TensorRT",
}
CPU_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)
PACKAGES = (
    "paddlecls-q",
    "paddlepaddle",
    "paddlepaddle-gpu",
    "paddleslim",
    "paddle2onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "tensorrt",
    "numpy",
    "opencv-python",
    "opencv-python-headless",
)
# Folder-name suffixes that don't change which registry model a folder holds.
_NAME_SUFFIXES = ("_infer", "_ptq", "_qat", "_int8", "_fp32", "_quant", "_quantized", "_ssld")


class BenchSettings(StrictModel):
    """What to measure and how; validated like every other config (ConfigError on bad values)."""

    backends: tuple[Backend, ...] = CPU_BACKENDS
    device: Device = "cpu"
    threads: int = Field(default=1, ge=1, le=256)
    iters: int = Field(default=1000, ge=1)
    warmup: int = Field(default=100, ge=0)
    modes: tuple[Mode, ...] = PRECISION_MODES
    image: Path = registry.DEFAULT_PHOTO
    schedule: Literal["interleaved", "sequential"] = "interleaved"
    block: int = Field(default=10, ge=1)
    bare_loop: bool = True
    cache_dir: Path | None = None
    gpu_id: int = Field(default=0, ge=0, le=63)


def parse_choices(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A comma-separated list of choices (case-insensitive, duplicates dropped) or a ConfigError."""
    items = [item for item in str(text).split(",") if item.strip()]
    if not items:
        raise ConfigError(f"no {what} given; choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(choice(item, allowed, what) for item in items))


def make_settings(**values: Any) -> BenchSettings:
    """BenchSettings from CLI-style values; `backends`/`modes` may be comma-separated strings."""
    if isinstance(values.get("backends"), str):
        values["backends"] = parse_choices(values["backends"], BACKENDS, "backend")
    if isinstance(values.get("modes"), str):
        values["modes"] = parse_choices(values["modes"], PRECISION_MODES, "mode")
    if values.get("device") is not None:
        try:
            values["device"], values["gpu_id"] = parse_device(str(values["device"]))
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if values.get("backends") is None:
        values["backends"] = GPU_BACKENDS if values.get("device") == "gpu" else CPU_BACKENDS
    return validate(BenchSettings, {key: value for key, value in values.items() if value is not None}, "command line")


# ---- which models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchModels:
    """The FP32 model, its INT8 version (if any) and what the registry knows about them."""

    name: str
    fp32: ModelFiles
    int8: ModelFiles | None
    int8_missing: str = ""
    entry: ModelEntry | None = None
    published_fp32: bool = False  # the registry's own FP32 tarball: its published top-1 applies
    published_int8: bool = False  # the registry's own INT8 tarball: its published INT8 top-1 applies


def _name_key(name: str) -> str:
    key = name.lower().replace("-", "_")
    stripped = True
    while stripped:
        stripped = False
        for suffix in _NAME_SUFFIXES:
            if key.endswith(suffix) and len(key) > len(suffix):
                key, stripped = key[: -len(suffix)], True
    return key


def match_registry_model(folder_name: str) -> ModelEntry | None:
    """The registry model a folder name refers to ("ResNet50_vd_infer", "mobilenetv1_ssld_ptq", "MobileNetV1")."""
    key = _name_key(folder_name)
    for entry in registry.MODELS.values():
        names = [entry.name] + [artifact.folder for artifact in (entry.fp32, entry.quantized) if artifact]
        if any(_name_key(name) == key for name in names):
            return entry
    return None


def resolve_models(model_dir: Path | None, int8_dir: Path | None, model: str | None) -> BenchModels:
    """Check the model folders (`--model-dir [--int8-dir]` or `--model NAME`) before any engine loads."""
    if (model_dir is None) == (model is None):
        raise ConfigError("give exactly one of --model-dir DIR or --model NAME")
    entry = None
    published_fp32 = published_int8 = False
    int8_missing = ""
    if model is not None:
        entry = registry.get_model(model)
        model_dir = registry.model_dir(entry.name)
        if not model_dir.is_dir():
            raise ConfigError(
                f"model {entry.name!r} is not downloaded yet ({model_dir}); run `paddlecls-q download {entry.name}`"
            )
        published_fp32 = entry.bundled_dir is None and entry.fp32_top1 is not None
        if int8_dir is None:
            if entry.quantized is None:
                int8_missing = (
                    f"model {entry.name!r} has no prebuilt INT8 version; run `paddlecls-q quantize` and pass --int8-dir"
                )
            else:
                candidate = registry.model_dir(entry.name, quantized=True)
                if candidate.is_dir():
                    int8_dir, published_int8 = candidate, True
                else:
                    int8_missing = f"INT8 model not downloaded; run `paddlecls-q download {entry.name} --quantized`"
    fp32 = find_model_files(model_dir)
    if fp32.is_quantized:
        raise ModelFormatError(
            f"{model_dir}: --model-dir holds a quantized model; pass the FP32 model there and this one as --int8-dir"
        )
    if entry is None:
        entry = match_registry_model(Path(model_dir).resolve().name)
    int8 = None
    if int8_dir is not None:
        int8 = find_model_files(int8_dir)
        if not int8.is_quantized:
            raise ModelFormatError(
                f"{int8_dir}: --int8-dir is not a quantized model (no quantize/dequantize ops); make one with `paddlecls-q quantize`"
            )
    elif not int8_missing:
        int8_missing = "no INT8 model given (--int8-dir)"
    name = entry.name if model is not None else Path(model_dir).resolve().name
    return BenchModels(
        name=name,
        fp32=fp32,
        int8=int8,
        int8_missing=int8_missing,
        entry=entry,
        published_fp32=published_fp32,
        published_int8=published_int8 and int8 is not None,
    )


# ---- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThreadCheck:
    """The CPU thread count an engine reports back after loading, and the parallelism it really used.

    `parallelism` is process CPU time / calling-thread CPU time over the timed runtime calls: 1.0
    means every instruction ran on the calling thread, 2.0 that other threads did as much again.
    """

    requested: int
    reported: int | None
    source: str
    parallelism: float | None = None

    @property
    def ok(self) -> bool | None:
        return None if self.reported is None else self.reported == self.requested


@dataclass
class CellResult:
    """One engine × precision: its status and, when it ran, its latency statistics (ms)."""

    backend: str
    mode: str
    status: Literal["ok", "n/a", "failed"] = "ok"
    reason: str = ""
    runtime_ms: LatencyStats | None = None
    end_to_end_ms: LatencyStats | None = None
    bare_ms: LatencyStats | None = None
    runtime_cpu_ms: LatencyStats | None = None
    end_to_end_cpu_ms: LatencyStats | None = None
    bare_cpu_ms: LatencyStats | None = None
    bare_note: str = ""
    threads: ThreadCheck | None = None
    precision: str = ""
    engine: dict[str, Any] = field(default_factory=dict)
    preprocessor: str = ""
    top1_class: int | None = None
    top1_score: float | None = None
    cosine_to_fp32: float | None = None
    same_top1_as_fp32: bool | None = None

    @property
    def ran(self) -> bool:
        return self.status == "ok" and self.runtime_ms is not None

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        if self.threads is not None:
            record["threads"]["ok"] = self.threads.ok
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        values = {name: data.get(name) for name in cls.__dataclass_fields__ if name in data}
        for name in ("runtime_ms", "end_to_end_ms", "bare_ms", "runtime_cpu_ms", "end_to_end_cpu_ms", "bare_cpu_ms"):
            if values.get(name) is not None:
                values[name] = LatencyStats.from_dict(values[name])
        if values.get("threads") is not None:
            threads = dict(values["threads"])
            threads.pop("ok", None)
            values["threads"] = ThreadCheck(**threads)
        return cls(**values)


@dataclass
class BenchResult:
    """Everything one bench run measured, with the registry's reference figures when the model is known."""

    model: str
    fp32_dir: str
    int8_dir: str | None
    int8_missing: str
    quantization: str
    registry_model: str | None
    fp32_top1: float | None  # published figure, only when the measured FP32 weights are the registry's
    published_int8: bool
    reference: list[dict[str, Any]]
    settings: dict[str, Any]
    environment: dict[str, Any]
    cells: list[CellResult]
    preprocessing_ms: dict[str, LatencyStats] = field(default_factory=dict)
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # engine → measured fp32/int8 top-1
    accuracy_source: str = ""
    warnings: list[str] = field(default_factory=list)
    started: str = ""
    seconds: float = 0.0

    def cell(self, backend: str, mode: str) -> CellResult | None:
        return next((c for c in self.cells if c.backend == backend and c.mode == mode), None)

    @property
    def backends(self) -> list[str]:
        return list(dict.fromkeys(c.backend for c in self.cells))

    def top1(self, backend: str, precision: str) -> float | None:
        """Top-1 (%) of the FP32 or INT8 model on this engine: measured by `quantize` if it was, else published."""
        measured = self.accuracy.get(backend, {}).get(f"{precision}_top1")
        if measured is not None:
            return measured
        if precision == "fp32":
            return self.fp32_top1
        if not self.published_int8:
            return None
        return next((r["int8_top1"] for r in self.reference if r["backend"] == backend), None)

    def summary(self) -> dict[str, Any]:
        """Speedups (FP32 / fastest INT8 variant), wrapper overhead and end-to-end / runtime ratios."""
        per_backend: dict[str, Any] = {}
        for backend in self.backends:
            per_backend[backend] = {
                "runtime": self._speedup([backend], "runtime"),
                "end_to_end": self._speedup([backend], "end_to_end"),
            }
        cells = {}
        for c in self.cells:
            if not c.ran:
                continue
            cpu = {"runtime": c.runtime_cpu_ms, "end_to_end": c.end_to_end_cpu_ms, "bare": c.bare_cpu_ms}
            cpu_median = {kind: stats.median if stats else None for kind, stats in cpu.items()}
            cells[f"{c.backend} {c.mode}"] = {
                "end_to_end_over_runtime": ratio(c.end_to_end_ms.median, c.runtime_ms.median),
                "end_to_end_minus_runtime_ms": c.end_to_end_ms.median - c.runtime_ms.median,
                "runtime_over_bare": ratio(c.runtime_ms.median, c.bare_ms.median if c.bare_ms else None),
                "end_to_end_over_runtime_cpu": ratio(cpu_median["end_to_end"], cpu_median["runtime"]),
                "runtime_over_bare_cpu": ratio(cpu_median["runtime"], cpu_median["bare"]),
            }
        return {
            "speedup_per_backend": per_backend,
            "speedup_overall": {
                "runtime": self._speedup(self.backends, "runtime"),
                "end_to_end": self._speedup(self.backends, "end_to_end"),
            },
            "cells": cells,
        }

    def _speedup(self, backends: list[str], kind: str) -> dict[str, Any] | None:
        """Best FP32 cell over best INT8 cell among `backends`, by mean (the seed's), median and CPU median."""
        fp32 = [c for c in self.cells if c.ran and c.backend in backends and c.mode == "fp32"]
        int8 = [c for c in self.cells if c.ran and c.backend in backends and c.mode != "fp32"]
        if not fp32 or not int8:
            return None
        result: dict[str, Any] = {}
        for statistic in ("mean", "median"):
            best_fp32 = min(fp32, key=lambda c: getattr(getattr(c, f"{kind}_ms"), statistic))
            best_int8 = min(int8, key=lambda c: getattr(getattr(c, f"{kind}_ms"), statistic))
            fp32_ms = getattr(getattr(best_fp32, f"{kind}_ms"), statistic)
            int8_ms = getattr(getattr(best_int8, f"{kind}_ms"), statistic)
            result[statistic] = {
                "speedup": ratio(fp32_ms, int8_ms),
                "fp32_ms": fp32_ms,
                "int8_ms": int8_ms,
                "fp32_backend": best_fp32.backend,
                "int8_backend": best_int8.backend,
                "int8_mode": best_int8.mode,
            }
        fp32_cpu = [c for c in fp32 if getattr(c, f"{kind}_cpu_ms") is not None]
        int8_cpu = [c for c in int8 if getattr(c, f"{kind}_cpu_ms") is not None]
        if fp32_cpu and int8_cpu:
            fastest_fp32 = min(getattr(c, f"{kind}_cpu_ms").median for c in fp32_cpu)
            fastest_int8 = min(getattr(c, f"{kind}_cpu_ms").median for c in int8_cpu)
            result["cpu_median"] = {
                "speedup": ratio(fastest_fp32, fastest_int8),
                "fp32_ms": fastest_fp32,
                "int8_ms": fastest_int8,
            }
        return result

    def to_dict(self) -> dict[str, Any]:
        record = {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name not in ("cells", "preprocessing_ms")
        }
        record["cells"] = [c.to_dict() for c in self.cells]
        record["preprocessing_ms"] = {name: stats.to_dict() for name, stats in self.preprocessing_ms.items()}
        record["summary"] = self.summary()
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        values = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        values["cells"] = [CellResult.from_dict(c) for c in data.get("cells", [])]
        values["preprocessing_ms"] = {
            k: LatencyStats.from_dict(v) for k, v in (data.get("preprocessing_ms") or {}).items()
        }
        return cls(**values)


# ---- the run --------------------------------------------------------------------------------------


def not_available_reason(backend: str, mode: str, settings: BenchSettings, models: BenchModels) -> str:
    """Why this engine × precision can't run here, or "" when it can."""
    if mode != "fp32" and models.int8 is None:
        return models.int8_missing
    if backend in GPU_BACKENDS and settings.device != "gpu":
        return f"{BACKEND_NAMES[backend]} runs on the GPU only (--device gpu)"
    if backend in ("paddle", "openvino") and settings.device == "gpu":
        return f"{BACKEND_NAMES[backend]} runs on the CPU only in paddlecls-q"
    if mode in ("int8+fp16", "int8+fp16+pm"):
        if settings.device != "gpu":
            what = "FP16 kernels and pinned memory" if mode.endswith("+pm") else "FP16 kernels"
            return f"{what} need --device gpu (no FP16 on the CPU engines)"
        if mode not in GPU_MODE_SUPPORT.get(backend, set()):
            return f"{BACKEND_NAMES[backend]} has no {'pinned-memory' if mode.endswith('+pm') else 'FP16'} switch in paddlecls-q"
    return ""


@dataclass
class _LoadedCell:
    result: CellResult
    runtime: Runtime
    preprocess: Preprocessor | FastPreprocessor
    batch: np.ndarray
    buffer: np.ndarray | None
    topk: int
    probabilities: np.ndarray
    bare: Callable[[], Any] | None
    outputs_are_probabilities: bool


class _Timings:
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


def top_k(probabilities: np.ndarray, k: int) -> list[int]:
    """Indices of the k highest scores, best first, equal scores in index order.

    Among scores tied exactly at the k-th place, which ones make the cut is up to np.argpartition.
    """
    return [index for index, _ in _ranked(probabilities, k)]


def top_k_probabilities(scores: np.ndarray, k: int, softmax: bool) -> list[tuple[int, float]]:
    """The end-to-end postprocessing of one image: (class, probability) of the k best classes, best first.

    With `softmax` (a model that outputs logits) only the k returned probabilities are computed, over the
    full normalizer: softmax keeps the order of the logits, so ranking them needs no exponentials.
    """
    ranked = _ranked(scores, k)
    if not softmax:
        return ranked
    peak = float(scores.max())
    total = float(np.exp(scores - np.float32(peak), dtype=np.float32).sum(dtype=np.float32))
    return [(index, math.exp(value - peak) / total) for index, value in ranked]


def _ranked(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    # Few numpy calls: this runs right after the engine, when each one costs tens of microseconds cold.
    item = scores.item
    if k >= scores.shape[0]:
        pairs = [(index, item(index)) for index in range(scores.shape[0])]
    else:
        pairs = [(index, item(index)) for index in np.argpartition(scores, -k)[-k:].tolist()]
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return pairs


def _check_threads(runtime: Runtime, batch: np.ndarray, threads: int) -> tuple[ThreadCheck, str]:
    """Read back the thread count (and float precision) the engine really uses."""
    backend = runtime.backend
    if backend == "ort":
        options = runtime.session.get_session_options()
        return ThreadCheck(threads, int(options.intra_op_num_threads), "SessionOptions.intra_op_num_threads"), "fp32"
    if backend == "openvino":
        compiled = runtime.request_for(tuple(batch.shape)).get_compiled_model()
        reported = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        precision = str(compiled.get_property("INFERENCE_PRECISION_HINT")).removeprefix("<Type: '").removesuffix("'>")
        return ThreadCheck(threads, reported, 'compiled_model.get_property("INFERENCE_NUM_THREADS")'), precision
    if backend == "paddle":
        reported = int(runtime.config.cpu_math_library_num_threads())
        return ThreadCheck(threads, reported, "Config.cpu_math_library_num_threads()"), "fp32"
    return ThreadCheck(threads, None, "GPU engine: a CPU thread count does not apply"), ""


def _bare_call(runtime: Runtime, batch: np.ndarray) -> tuple[Callable[[], Any] | None, str]:
    """The engine's own API, called directly on the same batch (no paddlecls-q code in between)."""
    backend = runtime.backend
    if backend == "ort":
        session, outputs, feed = runtime.session, [runtime.output_name], {runtime.input_name: batch}
        return (lambda: session.run(outputs, feed)), "InferenceSession.run"
    if backend == "openvino":
        request = runtime.request_for(tuple(batch.shape))
        inputs = {0: batch}
        return (lambda: request.infer(inputs)), "InferRequest.infer"
    if backend == "paddle":
        predictor = runtime.predictor
        input_handle = predictor.get_input_handle(runtime.input_name)
        output_handle = predictor.get_output_handle(runtime.output_name)
        shape = list(batch.shape)

        def paddle_bare() -> Any:
            input_handle.reshape(shape)
            input_handle.copy_from_cpu(batch)
            predictor.run()
            return output_handle.copy_to_cpu()

        return paddle_bare, "predictor handles: copy_from_cpu, run, copy_to_cpu"
    return None, "no lower-level loop for this engine"


def _load_cell(
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
    reference = build_preprocessor(config, fast=False)
    fast = compile_plan(reference)
    preprocess: Preprocessor | FastPreprocessor = fast or reference
    result.preprocessor = "fast_preprocess plan (bit-identical)" if fast else "paddlecls_q.preprocess"
    runtime = create_runtime(files, options)
    tensor = preprocess(image)
    batch = np.ascontiguousarray(tensor[None])
    outputs = runtime.infer(batch)
    probabilities = to_probabilities(outputs)[0]
    result.threads, result.precision = _check_threads(runtime, batch, settings.threads)
    bare, result.bare_note = (
        _bare_call(runtime, batch) if settings.bare_loop else (None, "not measured (--no-bare-loop)")
    )
    result.engine = runtime.engine_info()
    result.top1_class = int(np.argmax(probabilities))
    result.top1_score = float(probabilities[result.top1_class])
    buffer = np.empty_like(tensor) if fast is not None and tensor.dtype == np.float32 else None
    topk = max(1, min(config.topk, probabilities.shape[0]))
    # PaddleClas exports end in softmax; like PaddleClas's Topk, the timed path decides that once per model.
    outputs_are_probabilities = are_probabilities(outputs)
    return _LoadedCell(result, runtime, preprocess, batch, buffer, topk, probabilities, bare, outputs_are_probabilities)


def _cycle_steps(
    cell: _LoadedCell, image: np.ndarray, timings: dict[str, _Timings]
) -> list[tuple[Callable[[], Any], _Timings]]:
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


def _run_cycles(steps: list[tuple[Callable[[], Any], _Timings]], count: int, first: int, timed: bool) -> None:
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
        id(cell): {kind: _Timings(settings.iters) for kind in ("runtime", "end_to_end", "bare")} for cell in loaded
    }
    steps = {id(cell): _cycle_steps(cell, image, timings[id(cell)]) for cell in loaded}
    total = settings.iters * len(loaded)
    done = 0
    failed: set[int] = set()

    def attempt(cell: _LoadedCell, action: Callable[[], None]) -> None:
        if id(cell) in failed:
            return
        try:
            action()
        except Exception as error:  # noqa: BLE001 - an engine failing mid-run fails its own cell only
            failed.add(id(cell))
            cell.result.status, cell.result.reason = "failed", f"failed while timing: {_one_line(error)}"

    if settings.schedule == "interleaved":
        for cell in loaded:
            attempt(cell, lambda cell=cell: _run_cycles(steps[id(cell)], settings.warmup, 0, timed=False))
        position = 0
        while position < settings.iters:
            count = min(settings.block, settings.iters - position)
            for cell in loaded:
                cell_steps = steps[id(cell)]
                attempt(cell, lambda s=cell_steps, p=position: _run_cycles(s, 1, p, timed=False))
                attempt(cell, lambda s=cell_steps, p=position, n=count: _run_cycles(s, n, p, timed=True))
                done += count
                if progress:
                    progress(done, total)
            position += count
    else:
        for cell in loaded:
            attempt(cell, lambda cell=cell: _run_cycles(steps[id(cell)], settings.warmup, 0, timed=False))
            attempt(cell, lambda cell=cell: _run_cycles(steps[id(cell)], settings.iters, 0, timed=True))
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


def _one_line(error: BaseException, limit: int = 300) -> str:
    """A table-sized reason: our errors lead with the cause, engines' C++ traces end with it."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if isinstance(error, PaddleClsQError):
        text = lines[0] if lines else type(error).__name__
    else:
        text = f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _inference_config(files: ModelFiles, fallback: ModelFiles | None) -> tuple[InferenceClsConfig, str]:
    """The folder's inference_cls.yaml; an INT8 folder without one uses the FP32 model's (PaddleClas's advice)."""
    try:
        return load_inference_cls_yaml(require_inference_cls_yaml(files)), ""
    except ModelFormatError:
        if fallback is None:
            raise
        note = f"{files.folder} has no inference_cls.yaml; used the FP32 model's preprocessing"
        return load_inference_cls_yaml(require_inference_cls_yaml(fallback)), note


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
    load_before = _load_average()
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
                key = "fp32" if mode == "fp32" else "int8"
                try:
                    if key not in configs:
                        configs[key] = _inference_config(files, models.fp32 if key == "int8" else None)
                        if configs[key][1]:
                            warnings.append(configs[key][1])
                    loaded.append(_load_cell(result, files, configs[key][0], settings, image))
                except BackendUnavailableError as error:  # not installed, or no device: n/a, like the GPU modes
                    result.status, result.reason = "n/a", _one_line(error)
                except Exception as error:  # noqa: BLE001 - an engine that can't load the model fails its own cells
                    result.status, result.reason = "failed", _one_line(error)
        _measure(loaded, image, settings, progress)
        preprocessing = _measure_preprocessing(configs, image, settings) if loaded else {}
    _compare_to_fp32(cells, {id(cell.result): cell.probabilities for cell in loaded})
    warnings.extend(_warnings(cells))
    entry = models.entry
    report = read_quantize_report(models.int8.folder) if models.int8 else {}
    accuracy, accuracy_source = _measured_accuracy(report)
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
        environment=describe_environment(settings.threads, load_before),
        cells=cells,
        preprocessing_ms=preprocessing,
        warnings=warnings,
        started=started_at,
        seconds=time.perf_counter() - started,
    )


def read_quantize_report(folder: Path) -> dict[str, Any]:
    """The `quantize_report.json` that `paddlecls-q quantize` leaves in its output folder ({} if none)."""
    path = Path(folder) / "quantize_report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return report if isinstance(report, dict) and report.get("schema") == "paddlecls-q/quantize-report" else {}


def _measured_accuracy(report: dict[str, Any]) -> tuple[dict[str, dict[str, float]], str]:
    """Per-engine FP32 / INT8 top-1 from a quantize report's accuracy check, and what it was measured on."""
    accuracy = report.get("accuracy")
    if not isinstance(accuracy, dict):
        return {}, ""
    measured = {}
    for row in accuracy.get("engines") or []:
        try:
            measured[str(row["engine"])] = {"fp32_top1": float(row["fp32_top1"]), "int8_top1": float(row["int8_top1"])}
        except (KeyError, TypeError, ValueError):
            continue
    source = f"measured by `paddlecls-q quantize` on {accuracy.get('images', '?')} images of {accuracy.get('eval_list', '?')}"
    return measured, source if measured else ""


def _compare_to_fp32(cells: list[CellResult], probabilities: dict[int, np.ndarray]) -> None:
    """Cosine similarity and top-1 agreement of each INT8 cell's scores with the same engine's FP32 ones."""
    for cell in cells:
        if cell.mode == "fp32" or id(cell) not in probabilities:
            continue
        fp32 = next(
            (c for c in cells if c.backend == cell.backend and c.mode == "fp32" and id(c) in probabilities), None
        )
        if fp32 is None:
            continue
        a, b = probabilities[id(cell)].astype(np.float64), probabilities[id(fp32)].astype(np.float64)
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        cell.cosine_to_fp32 = float(a @ b / norm) if norm > 0 else None
        cell.same_top1_as_fp32 = cell.top1_class == fp32.top1_class


def _warnings(cells: list[CellResult]) -> list[str]:
    warnings, noisy = [], []
    for cell in cells:
        if not cell.ran:
            continue
        label = f"{cell.backend} {cell.mode}"
        kinds = (("runtime", cell.runtime_ms), ("end-to-end", cell.end_to_end_ms))
        noisy.extend(f"{label} {kind} {stats.cv:.0%}" for kind, stats in kinds if stats is not None and stats.noisy)
        if cell.threads is not None and cell.threads.ok is False:
            warnings.append(
                f"{label}: asked for {cell.threads.requested} threads, the engine reports {cell.threads.reported}"
            )
        if cell.backend == "openvino" and "fp16" not in cell.mode and cell.precision not in ("", "float32", "f32"):
            warnings.append(f"{label}: OpenVINO ran float layers in {cell.precision}, not float32")
    if noisy:
        warnings.append(
            f"coefficient of variation above {NOISY_CV:.0%} ({', '.join(noisy)}): the machine was busy; "
            "compare ratios within this run (and the CPU-time medians), not absolute times"
        )
    return warnings


def _measure_preprocessing(
    configs: dict[str, tuple[InferenceClsConfig, str]], image: np.ndarray, settings: BenchSettings
) -> dict[str, LatencyStats]:
    """Preprocessing alone, three ways, interleaved: PaddleClas's plain steps, paddlecls_q.preprocess, the fast plan."""
    config = (configs.get("fp32") or configs.get("int8"))[0]
    reference = build_preprocessor(config, fast=False)
    candidates: dict[str, Callable[[], Any]] = {"paddlecls_q.preprocess": lambda: reference(image)}
    fast = compile_plan(reference)
    if fast is not None:
        plain = _plain_opencv_steps(fast)
        candidates = {"plain cv2 + numpy steps": lambda: plain(image), **candidates}
        buffer = np.empty_like(fast(image), dtype=np.float32)
        candidates["fast_preprocess plan"] = lambda: fast(image, out=buffer)
    count = min(settings.iters, 1000)
    timings = {name: _Timings(count) for name in candidates}
    steps = [(function, timings[name]) for name, function in candidates.items()]
    _run_cycles(steps, min(settings.warmup, 100), 0, timed=False)
    _run_cycles(steps, count, 0, timed=True)
    return {name: timing.wall_stats() for name, timing in timings.items()}


def _plain_opencv_steps(plan: FastPreprocessor) -> Callable[[np.ndarray], np.ndarray]:
    """PaddleClas's own code path (resize, crop, float normalize, transpose), the baseline of the speed goal."""
    scale = np.float32(1.0)
    mean = np.zeros((1, 1, 3), np.float32)
    std = np.ones((1, 1, 3), np.float32)
    for op in plan.transform_ops:
        if hasattr(op, "mean"):
            scale = np.float32(op.scale)
            mean = np.array(op.mean, np.float32).reshape((1, 1, 3))
            std = np.array(op.std, np.float32).reshape((1, 1, 3))

    def steps(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if plan.resize_short is not None:
            percent = float(plan.resize_short) / min(width, height)
            size = (round(width * percent), round(height * percent))
        else:
            size = plan.size
        resized = cv2.resize(image, size, interpolation=plan.interpolation)
        crop_width, crop_height = plan.crop_width or size[0], plan.crop_height or size[1]
        top, left = (size[1] - crop_height) // 2, (size[0] - crop_width) // 2
        cropped = resized[top : top + crop_height, left : left + crop_width, :]
        normalized = (cropped.astype("float32") * scale - mean) / std
        return np.ascontiguousarray(normalized.transpose((2, 0, 1)))

    return steps


# ---- environment ----------------------------------------------------------------------------------


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _cpu_info() -> tuple[str, set[str]]:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return platform.processor() or platform.machine(), set()
    model, flags = "", set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model or platform.processor(), flags


def describe_environment(threads: int, load_average_before: list[float] | None = None) -> dict[str, Any]:
    """The machine and software a result was measured on: CPU model and ISA flags, threads, package versions."""
    model, flags = _cpu_info()
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": model,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads": threads,
        "opencv_threads": threads,
        "load_average_before": load_average_before,
        "load_average_after": _load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
    }
