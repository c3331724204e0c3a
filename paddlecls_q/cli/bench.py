"""`paddlecls-q bench`: the seed's runtime and end-to-end latency tables, measured on this machine."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from paddlecls_q import bench, chart, registry, report
from paddlecls_q.bench import BenchModels, BenchResult, BenchSettings
from paddlecls_q.cli.app import JSON_SCHEMA_VERSION, command, console, dropped_note, err_console, fit_table, print_json, styled
from paddlecls_q.fsutil import check_new_file, checked_path, write_new_file
from paddlecls_q.config import BACKENDS, choice
from paddlecls_q.errors import BackendUnavailableError, ConfigError
from paddlecls_q.registry import PRECISION_MODES

FORMATS = ("table", "markdown", "json", "csv")
# Columns a narrow terminal loses first, for every console table `render_rich` makes (all are in the markdown).
NARROW_DROP_ORDER = (
    "quantization method",
    "INT8+FP16+PM (ms)",
    "INT8+FP16 (ms)",
    "device",
    "p99",
    "p90",
    "mean",
    "min",
    "CV",  # the seed tables' `*` still flags a CV above 10%
    "parallelism",
    "float math",
    "top-1 class",
    "model",  # last: the seed's own rows are told apart by "(seed)" in it, and by being dim
)


@command("bench", epilog="Example: paddlecls-q bench --model-dir paddlecls_q/assets/demo_fashion_mnist --int8-dir out/demo_ptq --iters 200")
def bench_command(
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="FP32 model folder: Paddle inference model or ONNX (inference.onnx), with inference_cls.yaml.")] = None,
    int8_dir: Annotated[
        Path | None, typer.Option("--int8-dir", help="Its INT8 version (the output of `paddlecls-q quantize`).")
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Registry model name (downloaded FP32 and INT8).")
    ] = None,
    backends: Annotated[
        str | None,
        typer.Option("--backends", help=f"Comma-separated engines: {','.join(BACKENDS)} \\[default: the device's]."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or gpu.")] = "cpu",
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for every engine and for preprocessing.")] = 1,
    iters: Annotated[int, typer.Option("--iters", help="Timed iterations per engine and precision (at most 1,000,000).")] = 1000,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed iterations first.")] = 100,
    image: Annotated[Path, typer.Option("--image", help="Photo to time (decoded once).")] = registry.DEFAULT_PHOTO,
    modes: Annotated[str, typer.Option("--modes", help=f"Comma-separated: {','.join(PRECISION_MODES)}.")] = ",".join(
        PRECISION_MODES
    ),
    output_format: Annotated[str, typer.Option("--format", help=f"Output: {', '.join(FORMATS)}.")] = "table",
    output: Annotated[
        str | None,
        typer.Option("--output", help="Write the output to this file instead of stdout (new file; see --force)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --output file.")] = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="Also draw a PNG chart here.")] = None,
    schedule: Annotated[
        str,
        typer.Option("--schedule", help="interleaved (round-robin in blocks; fair on a busy machine) or sequential."),
    ] = "interleaved",
    block: Annotated[int, typer.Option("--block", help="Iterations per turn of the interleaved schedule.")] = 10,
    bare_loop: Annotated[
        bool,
        typer.Option("--bare-loop/--no-bare-loop", help="Also time the engine's own API, to show the wrapper's cost."),
    ] = True,
    batch_sizes: Annotated[
        str | None,
        typer.Option(
            "--batch-sizes",
            help="Also measure throughput (images/s) at these batch sizes, e.g. 1,8,32, and each engine's peak RSS.",
        ),
    ] = None,
    threads_list: Annotated[
        str | None,
        typer.Option("--threads-list", help="Thread counts for the throughput runs, e.g. 1,2 \\[default: --threads]."),
    ] = None,
    throughput_images: Annotated[
        int, typer.Option("--throughput-images", help="Images per throughput point (at least 3 calls each).")
    ] = 64,
    from_json: Annotated[
        list[Path] | None,
        typer.Option("--from-json", help="Render saved `--format json` results (repeatable) instead of measuring."),
    ] = None,
    title: Annotated[str | None, typer.Option("--title", help="Heading of the markdown document.")] = None,
    serve_url: Annotated[
        str | None,
        typer.Option("--serve", help="Load-test a running `paddlecls-q serve` at this URL instead (POSTs --image to /predict)."),
    ] = None,
    concurrency: Annotated[str, typer.Option("--concurrency", help="With --serve: concurrent clients per run, e.g. 1,8,32.")] = "1,8,32",
    seconds: Annotated[float, typer.Option("--seconds", help="With --serve: how long each run lasts.")] = 10.0,
    requests: Annotated[int | None, typer.Option("--requests", help="With --serve: stop a run after this many requests.")] = None,
) -> None:
    """Time FP32 and INT8 on each engine: runtime and end-to-end latency, statistics and speedups."""
    output_format = choice(output_format, FORMATS, "format")
    target = checked_path(output, "--output") if output is not None else None
    if target is not None:  # before minutes of measuring, not after
        check_new_file(target, force)
    if serve_url is not None:
        from paddlecls_q.cli.serve import bench_serve

        if model_dir is not None or int8_dir is not None or model is not None or from_json:
            raise ConfigError("--serve load-tests a running server; don't combine it with --model-dir/--int8-dir/--model/--from-json")
        bench_serve(serve_url, image, concurrency, seconds, requests, output_format, output, force)
        return
    if from_json:
        if model_dir is not None or int8_dir is not None or model is not None:
            raise ConfigError("--from-json renders saved results; don't combine it with --model-dir/--int8-dir/--model")
        results = [result for path in from_json for result in report.load_json(path, JSON_SCHEMA_VERSION)]
    else:
        settings = bench.make_settings(
            backends=backends,
            device=device,
            threads=threads,
            iters=iters,
            warmup=warmup,
            modes=modes,
            image=image,
            schedule=choice(schedule, ("interleaved", "sequential"), "schedule"),
            block=block,
            bare_loop=bare_loop,
            batch_sizes=batch_sizes,
            threads_list=threads_list,
            throughput_images=throughput_images,
        )
        if threads_list is not None and batch_sizes is None:
            raise ConfigError("--threads-list sets the throughput runs' threads; give --batch-sizes too")
        if plot is not None and plot.suffix.lower() != ".png":
            raise ConfigError(f"--plot {plot}: the chart is written as PNG; give a .png file name")
        models = bench.resolve_models(model_dir, int8_dir, model)
        result = _measure(models, settings)
        if not any(cell.ran for cell in result.cells):
            reasons = "; ".join(f"{cell.backend} {cell.mode}: {cell.reason}" for cell in result.cells)
            raise BackendUnavailableError(f"nothing could run: {reasons}")
        results = [result]
        for warning in result.warnings:
            err_console.print(styled("warning:", "yellow", warning), highlight=False, soft_wrap=True)
    _write(results, output_format, target, title, force)
    if plot is not None:
        chart.plot(results, plot)
        err_console.print(f"chart written to {plot}", highlight=False)


def _measure(models: BenchModels, settings: BenchSettings) -> BenchResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("timing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("bench", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return bench.run_benchmark(models, settings, progress=advance)


def _write(results: list[BenchResult], output_format: str, output: Path | None, title: str | None, force: bool) -> None:
    if output_format == "table" and output is None:
        for renderable in report.render_rich(results):
            dropped = fit_table(renderable, NARROW_DROP_ORDER) if isinstance(renderable, Table) else []
            console.print(renderable)
            dropped_note(dropped, "--format markdown or --json")
        return
    if output_format == "json" and output is None:
        print_json("bench", report.json_payload(results))
        return
    if output_format == "json":
        text = json.dumps(report.json_document(results, JSON_SCHEMA_VERSION), indent=2, default=str) + "\n"
    elif output_format == "csv":
        text = report.render_csv(results)
    elif output_format == "table":  # the console tables as plain text
        recorder = Console(record=True, width=200, file=io.StringIO(), markup=False, emoji=False)
        for renderable in report.render_rich(results):
            recorder.print(renderable)
        text = recorder.export_text()
    else:
        text = report.render_markdown(results, title)
    if output is None:
        typer.echo(text, nl=False)
        return
    write_new_file(output, text.encode("utf-8"), force)
    err_console.print(f"{output_format} written to {output}", highlight=False)
