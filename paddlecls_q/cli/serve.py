"""`paddlecls-q serve`: an HTTP service (raw-image /predict and KServe/Triton v2) on Ray Serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from paddlecls_q.cli.app import command, console, runtime_options
from paddlecls_q.config import BACKENDS, MAX_BATCH_SIZE, MAX_THREADS
from paddlecls_q.infer import resolve_model_dir


@command("serve")
def serve_command(
    model_dir: Annotated[Optional[Path], typer.Option("--model-dir", help="Paddle inference model folder.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Registry model name (see `models`).")] = None,
    quantized: Annotated[bool, typer.Option("--quantized", help="With --model: the downloaded INT8 model.")] = False,
    backend: Annotated[str, typer.Option("--backend", help=f"Engine: {', '.join(BACKENDS)}.")] = "ort",
    device: Annotated[Optional[str], typer.Option("--device", help="cpu or gpu [default: gpu for trt/paddle-trt].")] = None,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads per replica's engine.")] = 1,
    host: Annotated[str, typer.Option("--host", help="Address to bind (0.0.0.0 to serve other machines).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="HTTP port.")] = 8000,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name in the v2 API [default: the folder's name].")] = None,
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
        Optional[str], typer.Option("--address", help="Ray cluster to deploy on [default: $RAY_ADDRESS, else a local Ray].")
    ] = None,
) -> None:
    """Serve a model over HTTP on Ray Serve until Ctrl-C / SIGTERM, batching requests dynamically."""
    from paddlecls_q.model_files import find_model_files, load_inference_config
    from paddlecls_q.serve.app import ServeSettings, require_ray, run_server

    options = runtime_options(backend, device, threads)
    folder = resolve_model_dir(model_dir, model, quantized)
    load_inference_config(find_model_files(folder))  # a bad folder fails here, not in a replica
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
    )

    def ready(url: str) -> None:
        console.print(
            f"serving {escape(settings.name)} ({escape(backend)}, {replicas} replica(s), batch <= {max_batch_size}) "
            f"at {escape(url)}/predict and {escape(url)}/v2/models/{escape(settings.name)}/infer — Ctrl-C to stop",
            highlight=False,
            soft_wrap=True,
        )

    run_server(settings, host, port, address, on_ready=ready)
    console.print("stopped", highlight=False)
