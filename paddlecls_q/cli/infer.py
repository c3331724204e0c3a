"""`paddlecls-q infer`: top-k classes of images on one engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from paddlecls_q.cli.app import command, console, err_console, print_json, runtime_options, styled
from paddlecls_q.config import BACKENDS
from paddlecls_q.errors import ConfigError
from paddlecls_q.infer import Classifier, resolve_model_dir
from paddlecls_q.preprocess.image_io import list_images


@command("infer", epilog="Example: paddlecls-q infer --model demo --image paddlecls_q/assets/images/fashion_mnist_test_0.png --backend ort")
def infer_command(
    image: Annotated[Path, typer.Option("--image", help="Image file, or a folder of images (searched recursively, hidden files skipped).")],
    model_dir: Annotated[Optional[Path], typer.Option("--model-dir", help="Model folder: Paddle inference model or ONNX (inference.onnx), with inference_cls.yaml.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Registry model name (see `models`).")] = None,
    quantized: Annotated[bool, typer.Option("--quantized", help="With --model: the downloaded INT8 model.")] = False,
    backend: Annotated[str, typer.Option("--backend", help=f"Engine: {', '.join(BACKENDS)}.")] = "ort",
    device: Annotated[
        Optional[str], typer.Option("--device", help="cpu or gpu \\[default: gpu for trt/paddle-trt].")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", help="CPU threads for the engine.")] = 1,
    topk: Annotated[Optional[int], typer.Option("--topk", help="Classes per image \\[default: the yaml's topk].")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="GPU: let the engine run FP16 kernels.")] = False,
    pinned_memory: Annotated[bool, typer.Option("--pinned-memory", help="GPU: pinned host buffers.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per engine call (throughput in images/s).")] = 1,
    label_file: Annotated[Optional[Path], typer.Option("--label-file", help="`<id> <name>` per line.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Run on Ray Data (--image: folder, list file or glob).")] = False,
    replicas: Annotated[int, typer.Option("--replicas", help="With --ray: engine replicas.")] = 1,
    output: Annotated[Optional[Path], typer.Option("--output", help="With --ray: predictions .jsonl or .parquet.")] = None,
    address: Annotated[Optional[str], typer.Option("--address", help="With --ray: Ray cluster \\[default: local].")] = None,
    force: Annotated[bool, typer.Option("--force", help="With --ray: overwrite --output.")] = False,
) -> None:
    """Classify images with a Paddle inference or ONNX model on the chosen engine."""
    if batch_size < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--batch-size")
    options = runtime_options(backend, device, threads, fp16, pinned_memory, batch_size)
    if topk is not None and topk < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--topk")
    folder = resolve_model_dir(model_dir, model, quantized)
    if ray:
        from paddlecls_q.serve.batch import image_paths, infer_on_ray

        if output is None:
            raise ConfigError("--ray writes its predictions to a file: give --output FILE.jsonl or FILE.parquet")
        paths = image_paths(image)
        failed = infer_on_ray(paths, folder, options, topk, replicas, output, address=address, label_file=label_file, force=force)
        console.print(f"{len(paths)} predictions ({failed} unreadable) written to {escape(str(output))}", highlight=False)
        return
    paths = list_images(image, allow_file=True)
    classifier = Classifier(folder, options, label_file)
    predictions = classifier.classify(paths, topk or classifier.config.topk, batch_size)
    seconds = classifier.engine_seconds
    throughput = {
        "batch_size": batch_size,
        "images": len(predictions),
        "engine_seconds": seconds,
        "images_per_s": len(predictions) / seconds if seconds > 0 else None,
    }
    for warning in classifier.warnings:
        err_console.print(styled("warning:", "yellow", warning), highlight=False, soft_wrap=True)
    if as_json:
        print_json(
            "infer",
            {
                "model_dir": str(folder),
                "engine": classifier.runtime.engine_info(),
                "throughput": throughput,
                "predictions": [prediction.__dict__ for prediction in predictions],
            },
        )
        return
    table = Table(title=f"{folder.name} · {classifier.runtime.engine_info()['engine']}")
    for column in ("image", "rank", "class id", "score", "label"):
        table.add_column(column, justify="right" if column in ("rank", "class id", "score") else "left")
    for prediction in predictions:
        for rank, (class_id, score, label) in enumerate(
            zip(prediction.class_ids, prediction.scores, prediction.labels), 1
        ):
            table.add_row(
                Path(prediction.image).name if rank == 1 else "", str(rank), str(class_id), f"{score:.5f}", label
            )
    console.print(table)
    if throughput["images_per_s"]:
        console.print(
            f"{len(predictions)} images, batch {batch_size}: {throughput['images_per_s']:.1f} images/s "
            f"(preprocessing + engine, {seconds * 1000 / len(predictions):.2f} ms/image; decoding excluded)"
        )
