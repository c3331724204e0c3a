"""`paddlecls-q eval`: top-1 / top-k of a model (and of its INT8 twin) on a labelled data set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from paddlecls_q.cli.app import command, console, dropped_note, err_console, fitted_table, print_json, runtime_options, styled
from paddlecls_q.config import BACKENDS, MAX_BATCH_SIZE
from paddlecls_q.errors import ConfigError
from paddlecls_q.infer import resolve_model_dir

CHANGED_ROWS_SHOWN = 20


@command("eval", epilog="Example: paddlecls-q eval --model demo --compare out/demo_ptq --data out/data/fashion_mnist --backend openvino")
def eval_command(
    data: Annotated[
        Path, typer.Option("--data", help="Val list (`path label` lines) or a folder of class sub-folders.")
    ],
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Model folder: Paddle inference model or ONNX (inference.onnx), with inference_cls.yaml.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Registry model name (see `models`).")] = None,
    compare_dir: Annotated[
        Path | None,
        typer.Option("--compare", help="A second model (the INT8 folder) to compare with: same images, one decode."),
    ] = None,
    backend: Annotated[str, typer.Option("--backend", help=f"Engine: {', '.join(BACKENDS)}.")] = "ort",
    device: Annotated[
        str | None, typer.Option("--device", help="cpu or gpu \\[default: gpu for trt/paddle-trt].")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for the engine.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per engine call (if the model allows).")] = 32,
    topk: Annotated[int, typer.Option("--topk", help="k of the top-k accuracy.")] = 5,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only N images.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="An unreadable image is an error.")] = False,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Decoding threads (processes for paddle); default: what fits beside --threads."),
    ] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="GPU: let the engine run FP16 kernels.")] = False,
    pinned_memory: Annotated[bool, typer.Option("--pinned-memory", help="GPU: pinned host buffers.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Run on Ray Data, an actor pool of engine replicas.")] = False,
    replicas: Annotated[int, typer.Option("--replicas", help="With --ray: engine replicas.")] = 1,
    address: Annotated[str | None, typer.Option("--address", help="With --ray: Ray cluster \\[default: local].")] = None,
) -> None:
    """Measure top-1 / top-k accuracy and images/s on a labelled data set; with --compare, the INT8 drop."""
    from paddlecls_q.datasets import load_dataset
    from paddlecls_q.evaluate import compare, evaluate_models

    options = runtime_options(backend, device, threads, fp16, pinned_memory)
    for name, value in (("--batch-size", batch_size), ("--topk", topk), ("--limit", limit), ("--workers", workers)):
        if value is not None and value < 1:
            raise typer.BadParameter("must be at least 1", param_hint=name)
    most_workers = 2 * (os.cpu_count() or 1)  # decoders beyond that only cost memory
    if batch_size > MAX_BATCH_SIZE:
        raise ConfigError(f"--batch-size must be at most {MAX_BATCH_SIZE}, got {batch_size}")
    if workers is not None and workers > most_workers:
        raise ConfigError(f"--workers must be at most {most_workers} on this machine (2 x CPUs), got {workers}")
    folder = resolve_model_dir(model_dir, model)
    dataset = load_dataset(data, limit)
    progress = not as_json and err_console.is_terminal
    folders = [folder] if compare_dir is None else [folder, compare_dir]
    if ray:
        from paddlecls_q.serve.batch import evaluate_on_ray

        results = [evaluate_on_ray(f, dataset, options, batch_size, topk, strict, replicas, address) for f in folders]
    else:
        results = evaluate_models(folders, dataset, options, batch_size, topk, strict, progress, workers)
    comparison = compare(results[0], results[1], dataset) if len(results) == 2 else None
    if as_json:
        print_json(
            "eval",
            {
                "data": {
                    "path": str(data),
                    "layout": dataset.layout,
                    "images": len(dataset),
                    "num_classes": dataset.num_classes,
                },
                "model": results[0].to_dict(),
                "compare": results[1].to_dict() if len(results) == 2 else None,
                "comparison": comparison.to_dict() if comparison else None,
            },
        )
        return
    k = results[0].topk
    headers = ["model", "engine", "batch", "images", "top-1 %", f"top-{k} %", "images/s", "unreadable"]
    rows = [
        [
            Path(result.model_dir).name,
            str(result.engine.get("engine", result.engine.get("backend"))),
            str(result.engine["batch_size"]),
            str(result.count),
            f"{result.top1:.2f}",
            f"{result.top5:.2f}",
            f"{result.images_per_s:,.0f}",
            str(len(result.unreadable)),
        ]
        for result in results
    ]
    table, dropped = fitted_table(
        f"{data} ({len(dataset)} images, {dataset.layout})",
        headers,
        rows,
        left=("model", "engine"),
        drop_order=("unreadable", "images", "batch"),
    )
    console.print(table)
    dropped_note(dropped)
    for result in results:
        for message in result.unreadable[:10]:
            console.print(styled("unreadable:", "yellow", message), highlight=False)
        if len(result.unreadable) > 10:
            console.print(
                styled(f"... and {len(result.unreadable) - 10} more unreadable images (see --json)", "yellow")
            )
    if comparison is None:
        return
    console.print(
        f"top-1 drop: {comparison.top1_drop:+.2f} points, top-{k} drop: {comparison.top5_drop:+.2f} points; "
        f"top-1 changed on {len(comparison.changed)} images ({comparison.now_wrong} now wrong, "
        f"{comparison.now_right} now right)",
        highlight=False,
    )
    if comparison.changed:
        names = dataset.class_names or []
        changed = Table(title="Images whose top-1 changed")
        for column in ("image", "label", "FP32 top-1", "INT8 top-1"):
            changed.add_column(column)

        def named(class_id: int) -> str:
            return f"{class_id} {names[class_id]}" if class_id < len(names) else str(class_id)

        for row in comparison.changed[:CHANGED_ROWS_SHOWN]:
            changed.add_row(
                str(Path(row.image).relative_to(dataset.root))
                if Path(row.image).is_relative_to(dataset.root)
                else row.image,
                named(row.label),
                named(row.reference),
                named(row.candidate),
            )
        console.print(changed)
        if len(comparison.changed) > CHANGED_ROWS_SHOWN:
            console.print(f"... and {len(comparison.changed) - CHANGED_ROWS_SHOWN} more (see --json)")
