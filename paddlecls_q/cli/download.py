"""`paddlecls-q download`: fetch the prebuilt FP32 / INT8 tarballs into the cache."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from paddlecls_q.cli.app import command, console, err_console, print_json, styled
from paddlecls_q.archive import ArchiveBudget
from paddlecls_q.download import DownloadResult, HttpSettings, download, manifest_path
from paddlecls_q.errors import ConfigError

_HASH_NOTES = {
    "registry": "matches the published sha256",
    "pinned": "matches --sha256",
    "tofu-verified": "matches the sha256 recorded at first download (trust on first use)",
    "tofu-recorded": "no published sha256: recorded it in {manifest} (trust on first use); "
    "later downloads are checked against it",
}


def _summary(results: list[DownloadResult]) -> None:
    table = Table("model", "variant", "status", "size")
    table.add_column("folder", overflow="fold")
    for result in results:
        size = f"{result.size_bytes / 1e6:.1f} MB"
        table.add_row(result.model, result.variant, result.action, size, str(result.folder))
    console.print(table)
    for result in results:
        note = _HASH_NOTES[result.sha256_source].format(manifest=manifest_path())
        style = "yellow" if result.sha256_source == "tofu-recorded" else "green"
        console.print(f"{result.archive.name} sha256 {result.sha256}", highlight=False)
        console.print(styled("  " + note, style), highlight=False)
        if result.copied_from_fp32:
            console.print(f"  copied {', '.join(result.copied_from_fp32)} from the FP32 model", highlight=False)


@command("download", epilog="Example: paddlecls-q download ResNet50_vd --quantized")
def download_command(
    name: Annotated[str, typer.Argument(help="Model name, e.g. ResNet50_vd or MobileNetV1_ssld.")],
    quantized: Annotated[bool, typer.Option("--quantized", help="The prebuilt INT8 (PTQ) model.")] = False,
    fp32: Annotated[bool, typer.Option("--fp32", help="The FP32 model (the default).")] = False,
    all_variants: Annotated[bool, typer.Option("--all", help="Both the FP32 and the INT8 model.")] = False,
    dest: Annotated[
        str | None, typer.Option("--dest", metavar="DIR", help="Put the model folder under DIR, not in the cache.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Fetch and unpack again even when cached.")] = False,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror",
            metavar="URL",
            help="Replace the download host (also $PADDLECLS_Q_MIRROR); http(s)://, file:// or a folder.",
        ),
    ] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Pin the archive's sha256 (one variant only).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Connect and read timeout, seconds.")] = 30.0,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Retries after a network error.")] = 4,
    max_unpacked_mb: Annotated[
        int, typer.Option("--max-unpacked-mb", min=1, help="Refuse an archive that unpacks to more than this.")
    ] = ArchiveBudget().max_total_bytes >> 20,
    max_members: Annotated[int, typer.Option("--max-members", min=1, help="Refuse an archive with more members.")] = (
        ArchiveBudget().max_members
    ),
    max_ratio: Annotated[
        float,
        typer.Option(
            "--max-ratio", min=1, max=1e6, help="Refuse an archive that unpacks to more than this many times its size."
        ),
    ] = ArchiveBudget().max_ratio,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")] = False,
) -> None:
    """Download a prebuilt model into the cache, verified and unpacked, ready for `infer --model NAME`."""
    if quantized + fp32 + all_variants > 1:
        raise ConfigError("choose one of --quantized, --fp32, --all")
    variants = ("fp32", "quantized") if all_variants else ("quantized",) if quantized else ("fp32",)
    if sha256 and len(variants) > 1:
        raise ConfigError("--sha256 pins one archive; use it with --fp32 or --quantized, not --all")
    settings = HttpSettings(connect_timeout_s=timeout, read_timeout_s=timeout, retries=retries)
    show_progress = not json_output and err_console.is_terminal
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    bar = Progress(*columns, TimeRemainingColumn(), console=err_console) if show_progress else None
    tasks: dict[str, TaskID] = {}

    def on_progress(label: str, done: int, total: int | None) -> None:
        if bar is None:
            return
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total)
        bar.update(tasks[label], completed=done, total=total)

    with bar or nullcontext():
        results = download(
            name,
            variants,
            dest=dest,
            force=force,
            mirror=mirror,
            sha256=sha256,
            settings=settings,
            progress=on_progress if bar else None,
            budget=ArchiveBudget(max_unpacked_mb << 20, max_members, max_ratio),
        )
    if json_output:
        print_json("download", {"manifest": manifest_path(), "models": [_as_json(r) for r in results]})
    else:
        _summary(results)


def _as_json(result: DownloadResult) -> dict[str, object]:
    return {
        "model": result.model,
        "variant": result.variant,
        "action": result.action,
        "folder": str(result.folder),
        "archive": str(result.archive),
        "url": result.url,
        "size_bytes": result.size_bytes,
        "sha256": result.sha256,
        "sha256_source": result.sha256_source,
        "trust_on_first_use": result.sha256_source.startswith("tofu"),
        "copied_from_fp32": list(result.copied_from_fp32),
    }
