"""`paddlecls-q models`: the registry, with the seed's published figures."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer
from rich.table import Table

from paddlecls_q import registry
from paddlecls_q.cli.app import command, console, print_json


def _ms(value: float | None) -> str:
    return "None" if value is None else f"{value:.2f}"


@command("models", epilog="Example: paddlecls-q models --json")
def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """List the models paddlecls-q knows, where they come from and the seed's reference figures."""
    entries = list(registry.MODELS.values())

    def local(name: str, quantized: bool) -> str:
        try:
            folder = registry.model_dir(name, quantized)
        except Exception:
            return ""
        return str(folder) if folder.is_dir() else ""

    if as_json:
        models = []
        for entry in entries:
            record = dataclasses.asdict(entry)
            record["fp32_dir"] = local(entry.name, False)
            record["quantized_dir"] = local(entry.name, True) if entry.quantized else ""
            models.append(record)
        print_json("models", {"cache": str(registry.cache_home()), "models": models})
        return
    table = Table(title="Models")
    table.add_column("name", no_wrap=True)
    for column in ("input", "classes", "FP32 top-1", "tarballs", "local"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        tarballs = [a.url.rsplit("/", 1)[-1] for a in (entry.fp32, entry.quantized) if a] or ["bundled"]
        table.add_row(
            entry.name,
            "x".join(map(str, entry.input_shape)),
            str(entry.num_classes),
            f"{entry.fp32_top1:.2f}" if entry.fp32_top1 else "",
            "\n".join(tarballs),
            local(entry.name, False) or "not downloaded",
        )
    console.print(table)
    reference = Table(title="Seed's figures: FastDeploy, Xeon 6271C 1 thread / Tesla T4 TensorRT 8.4")
    reference.add_column("model", no_wrap=True)
    reference.add_column("engine", no_wrap=True)
    for column in ("runtime ms FP32 / INT8 / +FP16 / +PM", "max x", "end-to-end ms", "max x", "INT8 top-1"):
        reference.add_column(column)
    for entry in entries:
        for row in entry.reference:
            reference.add_row(
                entry.name,
                f"{row.backend} {row.device}",
                " / ".join(map(_ms, row.runtime_ms)),
                f"{row.max_speedup(row.runtime_ms):.2f}",
                " / ".join(map(_ms, row.end_to_end_ms)),
                f"{row.max_speedup(row.end_to_end_ms):.2f}",
                f"{row.int8_top1:.2f}",
            )
    console.print(reference)
