"""What a bench run found: per-cell latency statistics, the run's result record, and its summary and warnings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from paddlecls_q.bench.settings import BACKEND_NAMES
from paddlecls_q.stats import NOISY_CV, LatencyStats, ratio

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
        values: dict[str, Any] = {name: data.get(name) for name in cls.__dataclass_fields__ if name in data}
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
    # paddlecls_q.bench.throughput's records: engine × precision, peak RSS, images/s per threads × batch size.
    throughput: list[dict[str, Any]] = field(default_factory=list)
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
            if not c.ran or c.runtime_ms is None or c.end_to_end_ms is None:
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

def measured_accuracy(report: dict[str, Any]) -> tuple[dict[str, dict[str, float]], str]:
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


def compare_to_fp32(cells: list[CellResult], probabilities: dict[int, np.ndarray]) -> None:
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


def run_warnings(cells: list[CellResult]) -> list[str]:
    warnings: list[str] = []
    noisy: list[str] = []
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
        if "fp16" not in cell.mode and cell.precision not in ("", "fp32", "float32", "f32"):
            warnings.append(f"{label}: {BACKEND_NAMES[cell.backend]} ran float layers in {cell.precision}, not float32")
    if noisy:
        warnings.append(
            f"coefficient of variation above {NOISY_CV:.0%} ({', '.join(noisy)}): the machine was busy; "
            "compare ratios within this run (and the CPU-time medians), not absolute times"
        )
    return warnings

