"""`paddlecls-q quantize`: PaddleSlim PTQ or distillation QAT from one YAML config into a deployable folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from paddlecls_q.cli.app import command, console, err_console, print_json, styled
from paddlecls_q.config import QUANTIZE_METHODS, choice, load_quantize_config
from paddlecls_q.errors import AccuracyBudgetError


def _megabytes(size: int | None) -> str:
    return f"{size / 1e6:.2f} MB" if size else ""


def _print_report(report: dict[str, Any]) -> None:
    summary = Table(title=f"{report['method'].upper()} → {report['published_as']}", show_header=False)
    summary.add_column("what")
    summary.add_column("value")
    sizes = report["sizes_bytes"]
    trained = f", {report['train_iterations']} iterations" if report.get("train_iterations") else ""
    loss = report.get("final_distillation_loss")
    rows = [
        ("model", report["model_dir"]),
        ("images", f"{report['images_used']} of {report['images_found']} in {report['image_folder']}{trained}"),
        ("quantized layers", str(report["quantized_layers"])),
        ("kept in FP32", ", ".join(report["keep_fp32_layers"]) or "none"),
        ("params", f"{_megabytes(sizes.get('fp32_params'))} FP32 → {_megabytes(sizes.get('int8_params'))} INT8"),
        (
            "ONNX",
            ", ".join(f"{name[:-5]} {_megabytes(size)}" for name, size in sizes.items() if name.endswith("_onnx")),
        ),
        (
            "wall time",
            f"{report['wall_seconds']:.1f} s ({', '.join(f'{k} {v:.1f}' for k, v in report['stage_seconds'].items())})",
        ),
    ]
    if loss is not None:
        rows.insert(3, ("distillation loss", f"{loss:.4g}"))
    for row in rows:
        summary.add_row(*row)
    console.print(summary)
    accuracy = report.get("accuracy")
    if accuracy:
        table = Table(
            title=f"top-1 on {accuracy['images']} images of {accuracy['eval_list']} (budget {accuracy['max_drop']} pt)"
        )
        for column in ("engine", "FP32 top-1", "INT8 top-1", "drop (pt)", "INT8 img/s"):
            table.add_column(column, justify="left" if column == "engine" else "right")
        for row in accuracy["engines"]:
            style = "" if row["drop"] <= accuracy["max_drop"] + 1e-9 else "red"
            table.add_row(
                row["engine"],
                f"{row['fp32_top1']:.2f}",
                f"{row['int8_top1']:.2f}",
                f"{row['drop']:+.2f}",
                f"{row['int8_images_per_s']:.0f}",
                style=style,
            )
        console.print(table)
        console.print(f"INT8 top-1 spread across engines: {accuracy['int8_engine_spread']:.2f} pt")
    sensitivity = report.get("sensitivity")
    if sensitivity:
        ranked = ", ".join(f"{row['layer']} ({row['kl_gain']:.2e})" for row in sensitivity["ranking"][:8])
        console.print(f"most sensitive layers (KL gain when FP32): {ranked}")


def run_quantize(
    config_file: Path,
    method: str | None,
    output: str | Path | None,
    *,
    force: bool,
    allow_few: bool = False,
    sensitivity: bool = False,
    as_json: bool = False,
    fastdeploy: bool = False,
    device: str = "cpu",
) -> None:
    """Load the config (ours or FastDeploy's), quantize, print the report: shared by `quantize` and `compress`."""
    from paddlecls_q.fastdeploy_compat import calibration_summary
    from paddlecls_q.quantize import quantize

    def message(kind: str, text: str) -> None:
        prefix = styled("warning:", "yellow", text) if kind == "warning" else styled("note:", "cyan", text)
        err_console.print(prefix, highlight=False, soft_wrap=True)

    preset = "fastdeploy" if fastdeploy else "paddlecls-q"
    config = load_quantize_config(config_file, lambda text: message("warning", text), preset)
    if method is not None:
        method = choice(method, QUANTIZE_METHODS, "method")
    from paddlecls_q.quantize.paddle_patches import check_quantize_device

    check_quantize_device(device)  # a GPU this paddle can't give: one line before the config's work starts
    ptq = config.PTQ.model_dump()
    if config.resolve_method(method) == "ptq":
        message("info", calibration_summary(preset, ptq))
    try:
        report = quantize(
            config,
            method,
            output,
            force=force,
            allow_few=allow_few,
            sensitivity=sensitivity,
            progress=not as_json and err_console.is_terminal,
            on_message=message,
            device=device,
        )
    except AccuracyBudgetError as error:
        rejected = getattr(error, "report", None)
        if rejected is not None:
            if as_json:
                print_json("quantize", {**rejected.to_dict(), "calibration_preset": preset})
            else:
                _print_report(rejected.to_dict())
        raise
    if as_json:
        print_json("quantize", {**report.to_dict(), "calibration_preset": preset})
        return
    _print_report(report.to_dict())


@command("quantize", epilog="Example: paddlecls-q quantize --config configs/demo_ptq.yaml")
def quantize_command(
    config_file: Annotated[Path, typer.Option("--config", help="Quantize config (YAML; FastDeploy's format works).")],
    method: Annotated[
        str | None,
        typer.Option(
            "--method", help="ptq or qat (case and quotes ignored); default: the method of the config's one section."
        ),
    ] = None,
    output: Annotated[str | None, typer.Option("--output", help="Output folder; default: Global.output_dir.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the output folder if it exists.")] = False,
    allow_few: Annotated[
        bool, typer.Option("--allow-few", help="Use all images when the folder has fewer than configured.")
    ] = False,
    sensitivity: Annotated[
        bool,
        typer.Option("--sensitivity", help="Over budget: keep the most sensitive layers in FP32 until it holds."),
    ] = False,
    fastdeploy: Annotated[
        bool,
        typer.Option(
            "--fastdeploy",
            help="PTQ with FastDeploy's own calibration: 10 images, batch 1, op types conv2d/depthwise_conv2d/mul.",
        ),
    ] = False,
    device: Annotated[str, typer.Option("--device", help="Where PTQ/QAT run: cpu, gpu or gpu:N (needs paddlepaddle-gpu).")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Quantize a PaddleClas model to INT8 (PTQ or QAT) into a folder every engine can load."""
    run_quantize(
        config_file,
        method,
        output,
        force=force,
        allow_few=allow_few,
        sensitivity=sensitivity,
        as_json=as_json,
        fastdeploy=fastdeploy,
        device=device,
    )
