"""`paddlecls-q data fashion-mnist`: real labelled images, offline, in PaddleClas's data set format."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from paddlecls_q.cli.app import app, command, console, err_console, print_json
from paddlecls_q.config import choice

if TYPE_CHECKING:
    from paddlecls_q.datasets import FashionSplit

data_app = typer.Typer(help="Write labelled data sets for eval and calibration.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@command("fashion-mnist", group=data_app, epilog="Example: paddlecls-q data fashion-mnist --out out/data/fashion_mnist --split both")
def fashion_mnist_command(
    out: Annotated[str, typer.Option("--out", help="Folder to create (images/, val_list.txt, label_list.txt).")],
    split: Annotated[str, typer.Option("--split", help="test (10k, val_list.txt), train (60k) or both.")] = "test",
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N images of each split.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace DIR if it exists.")] = False,
    idx_dir: Annotated[
        Path | None,
        typer.Option("--idx-dir", help="Folder of the IDX .gz files (default: /usr/share/datasets/fashion-mnist)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Convert Debian's dataset-fashion-mnist into a PaddleClas image folder (PNG + lists)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from paddlecls_q.datasets import write_fashion_mnist

    split = cast("FashionSplit", choice(split, ("test", "train", "both"), "split"))
    per_split = {"test": 10_000, "train": 60_000}
    total = sum(min(limit or n, n) for name, n in per_split.items() if split in (name, "both"))
    show = not as_json and err_console.is_terminal
    with Progress(
        TextColumn("writing PNGs"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=not show,
    ) as progress:
        task = progress.add_task("", total=total)
        written = write_fashion_mnist(
            out,
            split,
            limit,
            force,
            idx_dir,
            on_progress=lambda n: progress.advance(task, n),
        )
    if as_json:
        print_json(
            "data",
            {"folder": str(written.folder), "images": written.images, "lists": [str(p) for p in written.lists]},
        )
        return
    counts = ", ".join(f"{count} {name}" for name, count in written.images.items())
    console.print(f"wrote {counts} images to {written.folder}")
    for path in written.lists:
        console.print(f"  {path}")
    console.print(f"  {written.folder / 'label_list.txt'}")
