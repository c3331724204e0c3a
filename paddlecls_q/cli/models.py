"""`paddlecls-q models`: the registry, with the seed's published figures."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer
from rich import box

from paddlecls_q import registry
from paddlecls_q.cli.app import command, console, dropped_note, fitted_table, print_json


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


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
    headers = ["name", "input", "classes", "FP32 top-1", "tarballs", "local"]
    rows = []
    for entry in entries:
        tarballs = [a.url.rsplit("/", 1)[-1] for a in (entry.fp32, entry.quantized) if a] or ["bundled"]
        rows.append(
            [
                entry.name,
                "x".join(map(str, entry.input_shape)),
                str(entry.num_classes),
                f"{entry.fp32_top1:.2f}" if entry.fp32_top1 else "",
                "\n".join(tarballs),
                "bundled" if entry.bundled_dir else local(entry.name, False) or "not downloaded",
            ]
        )
    table, dropped = fitted_table("Models", headers, rows, left=("name", "tarballs", "local"), drop_order=("tarballs",))
    console.print(table)
    dropped_note(dropped)
    modes = ("FP32", "INT8", "+FP16", "+PM")
    headers = ["model", "engine", *modes, "max x", *(f"e2e {mode}" for mode in modes), "e2e max x", "INT8\ntop-1"]
    # Narrow terminals lose the end-to-end columns first (all of them are in --json).
    rows = [
        [
            entry.name,
            row.backend if row.device == ("gpu" if row.backend in ("trt", "paddle-trt") else "cpu") else f"{row.backend} {row.device}",
            *map(_ms, row.runtime_ms),
            f"{row.max_speedup(row.runtime_ms):.2f}",
            *map(_ms, row.end_to_end_ms),
            f"{row.max_speedup(row.end_to_end_ms):.2f}",
            f"{row.int8_top1:.2f}",
        ]
        for entry in entries
        for row in entry.reference
    ]
    end_to_end = tuple(header for header in headers if header.startswith("e2e"))
    reference, dropped = fitted_table(
        "Seed's figures (runtime ms), FastDeploy: ort, paddle on a Xeon 6271C, 1 thread; trt, paddle-trt on a Tesla T4 (TensorRT 8.4)",
        headers,
        rows,
        left=("model", "engine"),
        drop_order=end_to_end,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    console.print(reference)
    dropped_note(dropped)
