"""`paddlecls-q compress`: FastDeploy's documented command line (`fastdeploy compress ...`), mapped onto `quantize`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paddlecls_q.cli.app import command
from paddlecls_q.cli.quantize import run_quantize


@command("compress")
def compress_command(
    config_path: Annotated[Path, typer.Option("--config_path", help="Compress config (FastDeploy's of any era, or ours).")],
    method: Annotated[str, typer.Option("--method", help="'PTQ' or 'QAT' (case and quotes ignored).")],
    save_dir: Annotated[Path, typer.Option("--save_dir", help="Output folder (FastDeploy's default: ./output).")] = Path(
        "output"
    ),
    devices: Annotated[
        str, typer.Option("--devices", help="cpu, gpu or gpu:N (FastDeploy defaults to gpu; gpu needs paddlepaddle-gpu).")
    ] = "cpu",
    fastdeploy: Annotated[
        bool,
        typer.Option("--fastdeploy", help="PTQ with FastDeploy's calibration: 10 images, batch 1, conv2d/depthwise_conv2d/mul."),
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace --save_dir if it exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """FastDeploy's `compress` command: the same options, run by `quantize` (relative paths: see docs/quantize.md)."""
    run_quantize(
        config_path, method, save_dir, force=force, as_json=as_json, fastdeploy=fastdeploy, device=devices
    )
