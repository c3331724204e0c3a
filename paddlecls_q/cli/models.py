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


@command("models")
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
    for column in ("name", "description", "input", "classes", "FP32 top-1", "FP32 tarball", "INT8 tarball", "local"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            entry.name,
            entry.description,
            "x".join(map(str, entry.input_shape)),
            str(entry.num_classes),
            f"{entry.fp32_top1:.2f}" if entry.fp32_top1 else "",
            entry.fp32.url if entry.fp32 else "bundled",
            entry.quantized.url if entry.quantized else "",
            local(entry.name, False) or "not downloaded",
        )
    console.print(table)
    reference = Table(title="Seed's published figures (FastDeploy; Xeon Gold 6271C 1 thread, Tesla T4 TensorRT 8.4)")
    for column in ("model", "backend", "device", "kind", *registry.PRECISION_MODES, "max speedup", "INT8 top-1"):
        reference.add_column(column)
    for entry in entries:
        for row in entry.reference:
            for kind, latencies in (("runtime ms", row.runtime_ms), ("end-to-end ms", row.end_to_end_ms)):
                reference.add_row(
                    entry.name, row.backend, row.device, kind, *map(_ms, latencies),
                    f"{row.max_speedup(latencies):.2f}", f"{row.int8_top1:.2f}",
                )
    console.print(reference)
