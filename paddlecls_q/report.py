"""Render bench results: the seed's two tables (markdown or rich), statistics, JSON, CSV and a PNG chart.

Every renderer reads `BenchResult`s and nothing else, so saved JSON re-renders to the same tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from paddlecls_q.bench import BACKEND_NAMES, BenchResult, CellResult
from paddlecls_q.errors import ConfigError, InputError
from paddlecls_q.registry import PRECISION_MODES, ReferenceFigures
from paddlecls_q.stats import NOISY_CV, LatencyStats

BENCH_SCHEMA = "paddlecls-q/bench"
MODE_TITLES = {"fp32": "FP32", "int8": "INT8", "int8+fp16": "INT8+FP16", "int8+fp16+pm": "INT8+FP16+PM"}
KIND_TITLES = {"runtime": "Runtime", "end_to_end": "End-to-end"}
SEED_SOURCE = (
    "FastDeploy's published figures: Xeon Gold 6271C (1 thread), Tesla T4 with TensorRT 8.4; mean of 1000 runs"
)
SEED_COLUMNS = [
    "model",
    "backend",
    "device",
    "FP32 (ms)",
    "INT8 (ms)",
    "INT8+FP16 (ms)",
    "INT8+FP16+PM (ms)",
    "max speedup",
    "FP32 top-1",
    "INT8 top-1",
    "quantization method",
]
NOT_EVALUATED = (
    "top-1 not evaluated: bench times one photo; `paddlecls-q quantize` with an accuracy section measures it"
)
STAT_COLUMNS = ["FP32 median", "best INT8 median", "speedup (median)", "speedup (CPU time)", "CV FP32 / INT8"]
CSV_COLUMNS = [
    "model",
    "backend",
    "device",
    "mode",
    "kind",
    "status",
    "reason",
    "count",
    "mean_ms",
    "median_ms",
    "p90_ms",
    "p99_ms",
    "min_ms",
    "max_ms",
    "stdev_ms",
    "cv",
    "cpu_median_ms",
    "threads_requested",
    "threads_reported",
    "parallelism",
    "float_precision",
    "top1_class",
    "cosine_to_fp32",
]


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _ratio3(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


class _Footnotes:
    """Numbered reasons for n/a and failed cells, each reason numbered once."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def mark(self, reason: str) -> str:
        if reason not in self.reasons:
            self.reasons.append(reason)
        return f"[{self.reasons.index(reason) + 1}]"

    def lines(self) -> list[str]:
        return [f"[{number}] {reason}" for number, reason in enumerate(self.reasons, 1)]


def cell_stats(cell: CellResult | None, kind: str) -> LatencyStats | None:
    """The `kind` latency statistics of a cell that ran (None otherwise)."""
    return getattr(cell, f"{kind}_ms") if cell is not None and cell.ran else None


def _median(cell: CellResult, kind: str) -> float:
    stats = cell_stats(cell, kind)
    return stats.median if stats is not None else math.inf


def _latency_cell(cell: CellResult | None, kind: str, notes: _Footnotes) -> str:
    if cell is None:
        return "not run"
    if cell.status == "n/a":
        return f"n/a {notes.mark(cell.reason)}"
    if cell.status == "failed":
        return f"failed {notes.mark(cell.reason)}"
    stats = cell_stats(cell, kind)
    flag = "*" if stats is not None and stats.noisy else ""
    return f"{_ms(stats.mean)}{flag}" if stats else ""


def _speedup_figures(result: BenchResult, backend: str, kind: str) -> dict[str, Any] | None:
    return result.summary()["speedup_per_backend"].get(backend, {}).get(kind)


def seed_table(
    results: Sequence[BenchResult], kind: str, with_reference: bool = True
) -> tuple[list[str], list[list[str]], list[str]]:
    """The seed's table for `kind` ("runtime" or "end_to_end"): headers, rows, footnotes.

    Latency columns are means (the seed's statistic; `*` marks CV > 10%); max speedup is FP32 mean
    over the fastest INT8 variant's mean, as the seed defines it; then our median-based figures.
    """
    notes = _Footnotes()
    rows: list[list[str]] = []
    for result in results:
        device = str(result.settings.get("device", "cpu")).upper()
        for backend in result.backends:
            cells = {mode: result.cell(backend, mode) for mode in PRECISION_MODES}
            figures = _speedup_figures(result, backend, kind)
            fp32, int8_cells = cells["fp32"], [c for m, c in cells.items() if m != "fp32" and c is not None and c.ran]
            fp32_stats = cell_stats(fp32, kind)
            best_int8 = min(int8_cells, key=lambda c: _median(c, kind)) if int8_cells else None
            best_int8_stats = cell_stats(best_int8, kind)
            cv = ""
            if fp32_stats and best_int8_stats:
                cv = f"{fp32_stats.cv:.0%} / {best_int8_stats.cv:.0%}"
            fp32_top1, int8_top1 = result.top1(backend, "fp32"), result.top1(backend, "int8")
            rows.append(
                [
                    result.model,
                    BACKEND_NAMES.get(backend, backend),
                    device,
                    *(_latency_cell(cells[mode], kind, notes) for mode in PRECISION_MODES),
                    _ratio(figures["mean"]["speedup"]) if figures else "",
                    _percent(fp32_top1) if fp32_top1 is not None else f"n/a {notes.mark(NOT_EVALUATED)}",
                    _percent(int8_top1)
                    if int8_top1 is not None
                    else (f"n/a {notes.mark(NOT_EVALUATED)}" if result.int8_dir else ""),
                    result.quantization,
                    _ms(fp32_stats.median) if fp32_stats else "",
                    f"{_ms(best_int8_stats.median)} ({MODE_TITLES[best_int8.mode]})" if best_int8 and best_int8_stats else "",
                    _ratio(figures["median"]["speedup"]) if figures else "",
                    _ratio(figures["cpu_median"]["speedup"]) if figures and "cpu_median" in figures else "",
                    cv,
                ]
            )
        if with_reference:
            rows.extend(_reference_rows(result, kind))
    for result in results:
        if result.accuracy_source:
            notes.reasons.append(f"{result.model} top-1: {result.accuracy_source}")
        elif result.fp32_top1 is not None:
            notes.reasons.append(f"{result.model} top-1: the registry's published figures for these weights")
    return SEED_COLUMNS + STAT_COLUMNS, rows, notes.lines()


def _reference_rows(result: BenchResult, kind: str) -> list[list[str]]:
    """The seed's published rows for the engines this run measured."""
    rows = []
    fp32_top1 = _published_fp32_top1(result)
    for figures in result.reference:
        if figures["backend"] not in result.backends:
            continue
        latencies = tuple(figures["runtime_ms" if kind == "runtime" else "end_to_end_ms"])
        speedup = ReferenceFigures.max_speedup(latencies) if any(v is not None for v in latencies[1:]) else None
        rows.append(
            [
                f"{result.registry_model} (seed)",
                BACKEND_NAMES.get(figures["backend"], figures["backend"]),
                figures["device"].upper(),
                *("None" if value is None else f"{value:.2f}" for value in latencies),
                _ratio(speedup),
                _percent(fp32_top1),
                _percent(figures["int8_top1"]),
                "PTQ",
                *([""] * len(STAT_COLUMNS)),
            ]
        )
    return rows


def _published_fp32_top1(result: BenchResult) -> float | None:
    from paddlecls_q import registry

    if result.registry_model is None:
        return None
    try:
        return registry.get_model(result.registry_model).fp32_top1
    except ConfigError:
        return None


def statistics_table(results: Sequence[BenchResult]) -> tuple[list[str], list[list[str]]]:
    """Every measured cell and kind of call: mean, median, p90, p99, min, CV and the CPU time per call (ms)."""
    headers = ["model", "backend", "precision", "measured", "mean", "median", "p90", "p99", "min", "CV", "CPU median"]
    rows = []
    for result in results:
        for cell in result.cells:
            if not cell.ran:
                continue
            for kind, title in (("runtime", "runtime"), ("end_to_end", "end-to-end"), ("bare", "bare engine loop")):
                stats: LatencyStats | None = getattr(cell, f"{kind}_ms")
                if stats is None:
                    continue
                cpu: LatencyStats | None = getattr(cell, f"{kind}_cpu_ms")
                rows.append(
                    [
                        result.model,
                        BACKEND_NAMES.get(cell.backend, cell.backend),
                        MODE_TITLES.get(cell.mode, cell.mode),
                        title,
                        _ms(stats.mean),
                        _ms(stats.median),
                        _ms(stats.p90),
                        _ms(stats.p99),
                        _ms(stats.min),
                        f"{stats.cv:.1%}" + ("*" if stats.cv > NOISY_CV else ""),
                        _ms(cpu.median) if cpu else "",
                    ]
                )
    return headers, rows


def engines_table(results: Sequence[BenchResult]) -> tuple[list[str], list[list[str]]]:
    """What each engine really ran: threads asked and reported, measured parallelism, float math, agreement, files."""
    headers = [
        "model",
        "backend",
        "precision",
        "threads asked → reported",
        "parallelism",
        "float math",
        "top-1 class",
        "cos vs FP32",
        "preprocessing",
        "model file",
    ]
    rows = []
    for result in results:
        for cell in result.cells:
            if not cell.ran:
                continue
            threads = cell.threads
            reported = (
                ""
                if threads is None
                else f"{threads.requested} → {'?' if threads.reported is None else threads.reported}"
            )
            if threads is not None and threads.ok is False:
                reported += " (mismatch)"
            rows.append(
                [
                    result.model,
                    BACKEND_NAMES.get(cell.backend, cell.backend),
                    MODE_TITLES.get(cell.mode, cell.mode),
                    reported,
                    "" if threads is None or threads.parallelism is None else f"{threads.parallelism:.2f}",
                    cell.precision,
                    "" if cell.top1_class is None else str(cell.top1_class),
                    "" if cell.cosine_to_fp32 is None else f"{cell.cosine_to_fp32:.4f}",
                    cell.preprocessor,
                    _model_file(result, cell),
                ]
            )
    return headers, rows


def _model_file(result: BenchResult, cell: CellResult) -> str:
    """The file the engine loaded: its ONNX file, or the Paddle program, as folder/name."""
    model = cell.engine.get("model")
    if model:
        return f"{Path(model).parent.name}/{Path(model).name}"
    folder = result.fp32_dir if cell.mode == "fp32" else result.int8_dir
    return f"{Path(str(folder)).name}/inference.pdmodel"


def ratio_lines(result: BenchResult) -> list[str]:
    """The goals of the speed work as measured in this run: speedup, e2e/runtime, wrapper overhead, preprocessing."""
    summary = result.summary()
    lines = []
    overall = summary["speedup_overall"]["runtime"]
    if overall:
        median, mean = overall["median"], overall["mean"]
        cpu = overall.get("cpu_median")
        lines.append(
            f"INT8 speedup, best FP32 engine / best INT8 engine (runtime): **{median['speedup']:.2f}×** by median "
            f"({BACKEND_NAMES[median['fp32_backend']]} FP32 {median['fp32_ms']:.2f} ms / "
            f"{BACKEND_NAMES[median['int8_backend']]} {MODE_TITLES[median['int8_mode']]} {median['int8_ms']:.2f} ms); "
            f"{mean['speedup']:.2f}× by mean" + (f"; {cpu['speedup']:.2f}× by CPU-time median" if cpu else "")
        )
    end_to_end = summary["speedup_overall"]["end_to_end"]
    if end_to_end:
        lines.append(f"INT8 speedup end to end: {end_to_end['median']['speedup']:.2f}× by median")
    for label, figures in summary["cells"].items():
        backend, mode = label.split(" ", 1)
        name = f"{BACKEND_NAMES.get(backend, backend)} {MODE_TITLES.get(mode, mode)}"
        end_to_end = figures["end_to_end_over_runtime"]
        added = figures["end_to_end_minus_runtime_ms"]
        cpu = _ratio3(figures["end_to_end_over_runtime_cpu"])
        parts = [f"end-to-end / runtime {end_to_end:.3f} ({added:+.2f} ms; by CPU time {cpu})"]
        if figures["runtime_over_bare"] is not None:
            parts.append(
                f"runtime / bare engine loop {figures['runtime_over_bare']:.3f} "
                f"(by CPU time {_ratio3(figures['runtime_over_bare_cpu'])})"
            )
        lines.append(f"{name}: " + ", ".join(parts))
    if result.preprocessing_ms:
        measured = ", ".join(f"{name} {stats.median:.3f} ms" for name, stats in result.preprocessing_ms.items())
        lines.append(f"preprocessing of the photo to the model input (median): {measured}")
    return lines


def throughput_table(results: Sequence[BenchResult]) -> tuple[list[str], list[list[str]]]:
    """Images/s per engine × precision × thread count, one column per batch size, and the child's peak RSS."""
    sizes = sorted({rate["batch"] for result in results for record in result.throughput for rate in record["rates"]})
    headers = ["model", "engine", "precision", "threads", *(f"batch {size} (img/s)" for size in sizes), "peak RSS (MiB)"]
    rows: list[list[str]] = []
    for result in results:
        for record in result.throughput:
            names = [result.model, BACKEND_NAMES[record["backend"]], MODE_TITLES.get(record["mode"], record["mode"])]
            rss = f"{record['peak_rss_mib']:.0f}" if record.get("peak_rss_mib") else "—"
            if record["status"] != "ok":
                rows.append([*names, "—", *(["—"] * len(sizes)), f"failed: {record['reason']}"])
                continue
            for threads in dict.fromkeys(rate["threads"] for rate in record["rates"]):
                by_size = {rate["batch"]: rate for rate in record["rates"] if rate["threads"] == threads}
                cells = []
                for size in sizes:
                    rate = by_size.get(size)
                    value = rate["images_per_second"] if rate else None
                    cells.append("—" if value is None else f"{value:.1f}" if value < 100 else f"{value:.0f}")
                rows.append([*names, str(threads), *cells, rss])
    return headers, rows


THROUGHPUT_NOTE = (
    "Images/s: batch size / median wall time of the engine call on the preprocessed photo repeated batch-size times "
    "(preprocessing excluded). Each engine × precision ran in its own spawned child process, one after another; "
    "peak RSS is that child's high-water mark (VmHWM) over all its thread counts and batch sizes (Python, NumPy and OpenCV "
    "included). `—`: the engine refused that batch size."
)


def _markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def clean(text: str) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| " + " | ".join(clean(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(clean(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _settings_line(result: BenchResult) -> str:
    settings = result.settings
    return (
        f"{result.model}: {settings['iters']} timed iterations after {settings['warmup']} warm-up, "
        f"{settings['threads']} thread(s), {settings['schedule']} schedule (blocks of {settings['block']}), "
        f"photo {Path(settings['image']).name}; took {result.seconds:.0f} s"
    )


def render_markdown(results: Sequence[BenchResult], title: str | None = None) -> str:
    """The seed's two tables ("Runtime Benchmark", "End-to-end Benchmark") plus statistics, ratios and the machine."""
    parts = [f"# {title}\n"] if title else []
    for kind, heading in (("runtime", "Runtime Benchmark"), ("end_to_end", "End-to-end Benchmark")):
        headers, rows, notes = seed_table(results, kind)
        parts.append(f"### {heading}\n")
        parts.append(_markdown_table(headers, rows) + "\n")
        explanation = (
            "Latency columns: mean ms of the timed iterations (the seed's statistic; `*` = CV above 10%). "
            "Max speedup: FP32 mean / fastest INT8 variant's mean, as the seed defines it. "
            f"Rows marked (seed): {SEED_SOURCE}."
        )
        parts.append("\n".join([explanation, *(f"- {note}" for note in notes)]) + "\n")
    headers, rows = statistics_table(results)
    parts.append("### Latency statistics (ms)\n")
    parts.append(_markdown_table(headers, rows) + "\n")
    parts.append(
        "Runtime: the engine call on the preprocessed photo. End-to-end: preprocess the decoded photo → engine → "
        "probabilities → top-k (decoding excluded). Bare engine loop: the engine's own API called directly. "
        "CPU median: process CPU time per call, which preemption by other processes does not inflate. `*`: CV above 10%.\n"
    )
    headers, rows = engines_table(results)
    parts.append("### Engines as they ran\n")
    parts.append(_markdown_table(headers, rows) + "\n")
    parts.append(
        "Threads: the count each engine reports back after loading (ONNX Runtime session options, OpenVINO's "
        "compiled-model INFERENCE_NUM_THREADS, Paddle's cpu_math_library_num_threads), and parallelism = process CPU "
        "time / calling-thread CPU time over the timed calls (1.00: one thread did all the work). Float math: the "
        "precision the engine used for float layers. Cos vs FP32: cosine similarity of the INT8 scores with the same "
        "engine's FP32 scores on the photo.\n"
    )
    if any(result.throughput for result in results):
        headers, rows = throughput_table(results)
        parts.append("### Throughput and memory\n")
        parts.append(_markdown_table(headers, rows) + "\n")
        parts.append(THROUGHPUT_NOTE + "\n")
    parts.append("### Ratios\n")
    for result in results:
        parts.append(f"**{result.model}**\n")
        parts.append("\n".join(f"- {line}" for line in ratio_lines(result)) + "\n")
    parts.append("### Machine and settings\n")
    parts.append("\n".join(f"- {line}" for line in environment_lines(results)) + "\n")
    warnings = [f"{result.model}: {warning}" for result in results for warning in result.warnings]
    if warnings:
        parts.append("### Warnings\n")
        parts.append("\n".join(f"- {warning}" for warning in warnings) + "\n")
    return "\n".join(parts)


def environment_lines(results: Sequence[BenchResult]) -> list[str]:
    lines = []
    if results:
        environment = results[0].environment
        flags = environment.get("cpu_flags", {})
        present = ", ".join(flag for flag, on in flags.items() if on) or "none of the tracked ones"
        absent = ", ".join(flag for flag, on in flags.items() if not on)
        lines.append(
            f"CPU: {environment.get('cpu_model')} ({environment.get('logical_cpus')} logical CPUs); "
            f"ISA flags present: {present}" + (f"; absent: {absent}" if absent else "")
        )
        peak = environment.get("conv_peak")
        if peak:
            lines.append(
                f"INT8 / FP32 compute on this CPU: {peak['int8_over_fp32']:.2f}x ({peak['int8_gmacs']:.1f} vs "
                f"{peak['fp32_gmacs']:.1f} G multiply-adds/s; {peak['what']}): the most INT8 can buy on dense convs"
            )
        packages = ", ".join(f"{name} {version}" for name, version in environment.get("packages", {}).items())
        lines.append(f"Python {environment.get('python')} on {environment.get('platform')}; {packages}")
    for result in results:
        environment = result.environment
        lines.append(
            _settings_line(result)
            + f"; load average before {environment.get('load_average_before')}, after {environment.get('load_average_after')}"
        )
    return lines


def render_rich(results: Sequence[BenchResult]) -> list[Any]:
    """Rich renderables for the console: the two seed tables (seed columns only), statistics, engines, ratios."""
    from rich.table import Table
    from rich.text import Text

    def table(title: str, headers: list[str], rows: list[list[str]], left: tuple[str, ...]) -> Table:
        rendered = Table(title=title, title_justify="left")
        for header in headers:
            rendered.add_column(header, justify="left" if header in left else "right")
        for row in rows:
            rendered.add_row(*row, style="dim" if row[0].endswith("(seed)") else "")
        return rendered

    renderables: list[Any] = []
    left = (
        "model",
        "backend",
        "device",
        "quantization method",
        "precision",
        "measured",
        "float math",
        "preprocessing",
        "model file",
    )
    for kind, heading in (("runtime", "Runtime Benchmark"), ("end_to_end", "End-to-end Benchmark")):
        headers, rows, notes = seed_table(results, kind)
        count = len(SEED_COLUMNS)
        renderables.append(
            table(f"{heading} (mean ms; * = CV > 10%)", headers[:count], [r[:count] for r in rows], left)
        )
        renderables.extend(Text(note, style="dim") for note in notes)
    headers, rows = statistics_table(results)
    renderables.append(table("Latency statistics (ms)", headers[1:], [r[1:] for r in rows], left))
    headers, rows = engines_table(results)
    renderables.append(table("Engines as they ran", headers[1:8], [r[1:8] for r in rows], left))
    if any(result.throughput for result in results):
        headers, rows = throughput_table(results)
        # Narrow headers (batch sizes as bare numbers, named in the title): the table fits 80 columns.
        short = [header.removeprefix("batch ").removesuffix(" (img/s)") for header in headers[:-1]] + ["RSS MiB"]
        sizes = ", ".join(header for header in short if header.isdigit())
        title = f"Throughput: images/s at batch {sizes}; peak RSS"
        renderables.append(table(title, short, rows, left + ("engine",)))
    for result in results:
        renderables.append(Text(result.model, style="bold"))
        renderables.extend(Text(f"  {line.replace('**', '')}") for line in ratio_lines(result))
    renderables.extend(Text(line, style="dim") for line in environment_lines(results))
    return renderables


def json_payload(results: Sequence[BenchResult]) -> dict[str, Any]:
    """The bench document's body (`print_json("bench", ...)` adds the versioned envelope)."""
    return {"results": [result.to_dict() for result in results]}


def json_document(results: Sequence[BenchResult], version: int) -> dict[str, Any]:
    return {"schema": BENCH_SCHEMA, "version": version, **json_payload(results)}


def load_json(path: Path, version: int) -> list[BenchResult]:
    """Results saved with `--format json`, for re-rendering; InputError on anything else."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a JSON file ({error})") from None
    if not isinstance(document, dict) or document.get("schema") != BENCH_SCHEMA:
        raise InputError(f"{path}: not a paddlecls-q bench result (schema {BENCH_SCHEMA!r} expected)")
    if document.get("version") != version:
        raise InputError(f"{path}: bench result version {document.get('version')!r}, this paddlecls-q reads {version}")
    try:
        return [BenchResult.from_dict(item) for item in document["results"]]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: malformed bench result ({type(error).__name__}: {error})") from None


def render_csv(results: Sequence[BenchResult]) -> str:
    """One row per model × engine × precision × kind of call (n/a and failed cells as one row with the reason)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        device = result.settings.get("device", "cpu")
        for cell in result.cells:
            base = {
                "model": result.model,
                "backend": cell.backend,
                "device": device,
                "mode": cell.mode,
                "status": cell.status,
            }
            if not cell.ran:
                writer.writerow({**base, "reason": cell.reason})
                continue
            for kind in ("runtime", "end_to_end", "bare"):
                stats: LatencyStats | None = getattr(cell, f"{kind}_ms")
                if stats is None:
                    continue
                cpu: LatencyStats | None = getattr(cell, f"{kind}_cpu_ms")
                threads = cell.threads
                writer.writerow(
                    {
                        **base,
                        "kind": kind,
                        "count": stats.count,
                        "mean_ms": f"{stats.mean:.4f}",
                        "median_ms": f"{stats.median:.4f}",
                        "p90_ms": f"{stats.p90:.4f}",
                        "p99_ms": f"{stats.p99:.4f}",
                        "min_ms": f"{stats.min:.4f}",
                        "max_ms": f"{stats.max:.4f}",
                        "stdev_ms": f"{stats.stdev:.4f}",
                        "cv": f"{stats.cv:.4f}",
                        "cpu_median_ms": f"{cpu.median:.4f}" if cpu else "",
                        "threads_requested": threads.requested if threads else "",
                        "threads_reported": "" if threads is None or threads.reported is None else threads.reported,
                        "parallelism": ""
                        if threads is None or threads.parallelism is None
                        else f"{threads.parallelism:.3f}",
                        "float_precision": cell.precision,
                        "top1_class": "" if cell.top1_class is None else cell.top1_class,
                        "cosine_to_fp32": "" if cell.cosine_to_fp32 is None else f"{cell.cosine_to_fp32:.6f}",
                    }
                )
    return buffer.getvalue()
