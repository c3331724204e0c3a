"""`paddlecls-q demo`: the main job on the bundled model, offline — data, PTQ, latency and top-1 per engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paddlecls_q.cli.app import styled, command, console, dropped_note, err_console, fitted_table, print_json

EXAMPLE = "Example: paddlecls-q demo   (what `make demo` runs; about a minute on 2 cores)"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _pair(first: float | None, second: float | None) -> str:
    return f"{_ms(first)} / {_ms(second)}"


@command("demo", epilog=EXAMPLE)
def demo_command(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="PTQ config \\[default: the repository's configs/demo_ptq.yaml].")
    ] = None,
    iters: Annotated[int, typer.Option("--iters", help="Timed iterations per engine and precision.")] = 300,
    force: Annotated[bool, typer.Option("--force", help="Replace the data and output folders if they exist.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of the table.")] = False,
) -> None:
    """Write Fashion-MNIST, quantize the bundled model (PTQ), and show what INT8 bought on each CPU engine.

    Earlier output is reused when it is what this demo writes; anything else in the way needs --force.
    """
    from paddlecls_q.demo import REPO_CONFIG, run_demo

    if iters < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--iters")

    def say(kind: str, text: str) -> None:
        if not as_json:
            label, style = {"warning": ("warning:", "yellow"), "reuse": ("reusing", "cyan")}.get(kind, ("·", "cyan"))
            err_console.print(styled(label, style, text), highlight=False, soft_wrap=True)

    result = run_demo(config_file or REPO_CONFIG, force=force, iters=iters, warmup=max(1, iters // 10), say=say)
    rows = result.rows()
    prediction = result.prediction
    infer_line = (
        f"infer {Path(prediction.image).name} (INT8, OpenVINO): class {prediction.class_ids[0]} "
        f"{prediction.labels[0]} ({prediction.scores[0]:.3f})"
    )
    if as_json:
        print_json(
            "demo",
            {
                "data": str(result.data_dir),
                "int8_dir": str(result.int8_dir),
                "engines": rows,
                "infer": prediction.__dict__,
                "reused": result.reused,
                "seconds": result.seconds,
                "bench": result.bench.to_dict(),
            },
        )
        return
    headers = ["engine", "runtime ms\nFP32 / INT8", "end-to-end ms\nFP32 / INT8", "max\nspeedup", "top-1 %\nFP32 / INT8"]
    table_rows = [
        [
            row["engine"],
            _pair(row["fp32_runtime_ms"], row["int8_runtime_ms"]),
            _pair(row["fp32_end_to_end_ms"], row["int8_end_to_end_ms"]),
            _ms(row["max_speedup_runtime"]),
            f"{_ms(row['fp32_top1'])} / {_ms(row['int8_top1'])}",
        ]
        for row in rows
    ]
    model = Path(result.bench.fp32_dir).name
    table, dropped = fitted_table(
        f"{model}: FP32 vs PTQ INT8, 1 thread, mean of {iters} calls; top-1 on the 10,000 test images",
        headers,
        table_rows,
        left=("engine",),
        drop_order=("end-to-end ms\nFP32 / INT8",),
    )
    console.print(table)
    dropped_note(dropped)
    console.print(infer_line, highlight=False)
