"""The bench chart: per model, runtime and end-to-end latency per engine and precision, as a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paddlecls_q.bench import BACKEND_NAMES, BenchResult
from paddlecls_q.errors import ConfigError
from paddlecls_q.registry import PRECISION_MODES
from paddlecls_q.report import KIND_TITLES, MODE_TITLES, cell_stats

MODE_COLORS = {"fp32": "#4c72b0", "int8": "#dd8452", "int8+fp16": "#55a868", "int8+fp16+pm": "#c44e52"}


def plot(results: Sequence[BenchResult], path: Path) -> Path:
    """A PNG: per model, runtime and end-to-end median latency per engine and precision (bars from min to p90),
    the INT8 speedup over the same engine's FP32 above each INT8 bar, the seed's means as markers, and
    top-1 accuracy in the title when it is known."""
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--plot {path}: the chart is written as PNG; give a .png file name")
    figure = Figure(figsize=(13, 4.2 * max(1, len(results))), layout="constrained")
    axes = figure.subplots(max(1, len(results)), 2, squeeze=False)
    for row, result in enumerate(results):
        for column, kind in enumerate(("runtime", "end_to_end")):
            _plot_panel(axes[row][column], result, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def _plot_panel(axis: Any, result: BenchResult, kind: str) -> None:
    backends = [b for b in result.backends if any(c.ran for c in result.cells if c.backend == b)]
    modes = [m for m in PRECISION_MODES if any(c.ran and c.mode == m for c in result.cells)]
    width = 0.8 / max(1, len(modes))
    labelled: set[str] = set()
    for mode_index, mode in enumerate(modes):
        for backend_index, backend in enumerate(backends):
            cell = result.cell(backend, mode)
            stats = cell_stats(cell, kind)
            if stats is None:
                continue
            x = backend_index + (mode_index - (len(modes) - 1) / 2) * width
            axis.bar(
                x,
                stats.median,
                width * 0.9,
                color=MODE_COLORS.get(mode, "grey"),
                label=None if mode in labelled else MODE_TITLES[mode],
                yerr=[[stats.median - stats.min], [max(0.0, stats.p90 - stats.median)]],
                capsize=3,
                ecolor="#333333",
            )
            labelled.add(mode)
            reference = next((r for r in result.reference if r["backend"] == backend), None)
            seed_value = None
            if reference is not None:
                seed_value = reference["runtime_ms" if kind == "runtime" else "end_to_end_ms"][
                    PRECISION_MODES.index(mode)
                ]
            if seed_value is not None:
                label = None if "seed" in labelled else "seed (Xeon 6271C, mean)"
                axis.plot(x, seed_value, marker="x", color="black", markersize=8, linestyle="none", label=label)
                labelled.add("seed")
            fp32 = cell_stats(result.cell(backend, "fp32"), kind)
            if mode != "fp32" and fp32 is not None:
                axis.annotate(
                    f"{fp32.median / stats.median:.2f}×",
                    (x, max(stats.p90, seed_value or 0.0)),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    xytext=(0, 4),
                    textcoords="offset points",
                )
    axis.set_xticks(range(len(backends)), [BACKEND_NAMES.get(b, b) for b in backends])
    axis.set_ylabel("median latency (ms); bars: min to p90")
    threads = result.settings.get("threads")
    title = f"{result.model}: {KIND_TITLES[kind].lower()} latency, {threads} thread(s), {str(result.settings.get('device')).upper()}"
    accuracy = _accuracy_note(result)
    axis.set_title(title + (f"\n{accuracy}" if accuracy else ""), fontsize=10)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)


def _accuracy_note(result: BenchResult) -> str:
    parts = []
    for precision in ("fp32", "int8"):
        known = [(b, result.top1(b, precision)) for b in result.backends if result.top1(b, precision) is not None]
        if known:
            parts.append(
                f"{precision.upper()} top-1 " + ", ".join(f"{BACKEND_NAMES.get(b, b)} {v:.2f}" for b, v in known)
            )
    if not parts:
        return ""
    return " | ".join(parts) + (" (measured)" if result.accuracy else " (published)")
