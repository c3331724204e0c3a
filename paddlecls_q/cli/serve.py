"""`paddlecls-q serve`: an HTTP service (raw-image /predict and KServe/Triton v2) on Ray Serve."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from paddlecls_q.cli.app import JSON_SCHEMA_VERSION, command, console, err_console, print_json, runtime_options
from paddlecls_q.config import BACKENDS, MAX_BATCH_SIZE, MAX_THREADS
from paddlecls_q.errors import ConfigError
from paddlecls_q.infer import resolve_model_dir


@command("serve")
def serve_command(
    model_dir: Annotated[Optional[Path], typer.Option("--model-dir", help="Paddle inference model folder.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Registry model name (see `models`).")] = None,
    quantized: Annotated[bool, typer.Option("--quantized", help="With --model: the downloaded INT8 model.")] = False,
    backend: Annotated[str, typer.Option("--backend", help=f"Engine: {', '.join(BACKENDS)}.")] = "ort",
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or gpu \\[default: gpu for trt/paddle-trt].")] = None,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads per replica's engine.")] = 1,
    host: Annotated[str, typer.Option("--host", help="Address to bind (0.0.0.0 to serve other machines).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="HTTP port.")] = 8000,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name in the v2 API \\[default: the folder's name].")] = None,
    replicas: Annotated[int, typer.Option("--replicas", min=1, max=MAX_THREADS, help="Engine replicas (Ray actors).")] = 1,
    max_batch_size: Annotated[
        int, typer.Option("--max-batch-size", min=1, max=MAX_BATCH_SIZE, help="Most images per engine call (1: no batching).")
    ] = 8,
    batch_wait_ms: Annotated[
        float, typer.Option("--batch-wait-ms", min=0, max=60_000, help="How long a batch waits to fill.")
    ] = 2.0,
    max_request_mb: Annotated[
        float, typer.Option("--max-request-mb", min=0.001, max=4096, help="Largest request body accepted.")
    ] = 20.0,
    label_file: Annotated[Optional[Path], typer.Option("--label-file", help="`<id> <name>` per line.")] = None,
    address: Annotated[
        Optional[str], typer.Option("--address", help="Ray cluster to deploy on \\[default: $RAY_ADDRESS, else a local Ray].")
    ] = None,
    direct_ingress: Annotated[
        Optional[bool],
        typer.Option(
            "--direct-ingress/--no-direct-ingress",
            help="Each replica also answers HTTP on its own port (--port + 1 up), skipping Ray's proxy: ~1 ms instead of "
            "~10 ms per request here. Ray's experimental feature \\[default: on with the local Ray this command starts; "
            "on a cluster its nodes' RAY_SERVE_ENABLE_DIRECT_INGRESS decides].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a model over HTTP on Ray Serve until Ctrl-C / SIGTERM, batching requests dynamically."""
    from paddlecls_q.model_files import find_model_files, load_inference_config
    from paddlecls_q.serve.app import (
        ServeSettings, enable_direct_ingress, ray_address, replica_ports, require_ray, run_server,
    )

    options = runtime_options(backend, device, threads)
    folder = resolve_model_dir(model_dir, model, quantized)
    load_inference_config(find_model_files(folder))  # a bad folder fails here, not in a replica
    local = ray_address(address) == "local"
    if direct_ingress and not local:
        raise ConfigError("--direct-ingress needs the local Ray this command starts; on a cluster start every node "
                          "with RAY_SERVE_ENABLE_DIRECT_INGRESS=1 instead")
    direct_ingress = local if direct_ingress is None else direct_ingress
    if direct_ingress:
        enable_direct_ingress(port, replicas)
    require_ray()
    settings = ServeSettings(
        model_dir=folder.resolve(),
        name=name or folder.name,
        options=options,
        replicas=replicas,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        max_request_mb=max_request_mb,
        label_file=label_file.resolve() if label_file else None,
        direct_ingress=direct_ingress,
    )

    def ready(url: str) -> None:
        ports = replica_ports(host, port, replicas) if direct_ingress else []
        console.print(
            f"serving {escape(settings.name)} ({escape(backend)}, {replicas} replica(s), batch <= {max_batch_size}) "
            f"at {escape(url)}/predict and {escape(url)}/v2/models/{escape(settings.name)}/infer"
            + (f"; replicas directly on port{'s' if len(ports) > 1 else ''} {', '.join(map(str, ports))}" if ports else "")
            + " — Ctrl-C to stop",
            highlight=False,
            soft_wrap=True,
        )

    run_server(settings, host, port, address, on_ready=ready)
    console.print("stopped", highlight=False)


def batch_size_summary(counts: dict[int, int]) -> str:
    """"1-16, mode 4" from the {engine batch size: answers} the server's x-batch-size header gave."""
    sizes = {size: n for size, n in counts.items() if size > 0}
    if not sizes:
        return "-"
    low, high, mode = min(sizes), max(sizes), max(sizes, key=lambda size: sizes[size])
    return str(low) if low == high else f"{low}-{high}, mode {mode}"


def bench_serve(
    url: str, image: Path, concurrency: str, seconds: float, requests: int | None, output_format: str,
    output: str | None, force: bool,
) -> None:
    """`bench --serve URL`: load runs at each concurrency against a running server, as a table, markdown or JSON."""
    from paddlecls_q.bench.settings import parse_counts
    from paddlecls_q.fsutil import checked_path, write_new_file
    from paddlecls_q.preprocess.image_io import read_file_bytes
    from paddlecls_q.serve.loadtest import bench_server

    if output_format not in ("table", "markdown", "json") or (output is not None and output_format == "table"):
        raise ConfigError(f"--format {output_format}: bench --serve prints a table, or writes markdown or json")
    target = checked_path(output, "--output") if output is not None else None
    if target is not None and target.exists() and not force:
        raise ConfigError(f"--output {target}: exists; pass --force to replace it")  # before minutes of load
    body = read_file_bytes(image)
    reports = bench_server(url, body, parse_counts(concurrency, "concurrency"), seconds, requests or 10**9)
    load = os.getloadavg()[0]
    payload: dict[str, Any] = {"url": url, "image": str(image), "seconds": seconds, "load_average_1min": load,
                               "runs": [asdict(report) for report in reports]}
    header = ("C", "requests", "requests/s", "p50 ms", "p90 ms", "p99 ms", "errors", "batch sizes seen")
    rows = [
        (str(r.concurrency), f"{r.requests:,}", f"{r.throughput:.1f}", f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}",
         f"{r.p99_ms:.2f}", str(sum(r.errors.values())), batch_size_summary(r.batch_sizes))
        for r in reports
    ]
    if output_format == "table":
        table = Table(title=f"{escape(url)}: {seconds:g} s per run, load average {load:.1f}")
        for name in header:
            table.add_column(name, justify="left" if name == "batch sizes seen" else "right")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
        return
    if output_format == "json" and target is None:
        print_json("bench-serve", payload)
        return
    if output_format == "json":
        text = json.dumps({"schema": "paddlecls-q/bench-serve", "version": JSON_SCHEMA_VERSION, **payload}, indent=2) + "\n"
    else:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows)]
        text = "\n".join(lines) + "\n"
    if target is None:
        typer.echo(text, nl=False)
        return
    write_new_file(target, text.encode("utf-8"), force)
    err_console.print(f"{output_format} written to {target}", highlight=False)
