"""The typer app every command module registers on, and the one place errors become exit codes."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

try:  # typer 0.2x ships its own copy of click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # older typer runs on click itself
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment]

from paddlecls_q.config import BACKENDS, RuntimeOptions, choice, validate
from paddlecls_q.errors import PaddleClsQError



class OneLineErrors(TyperGroup):
    """The command group: a bad option value (typer's range checks, BadParameter) is one red line and exit 2."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone_mode = kwargs.get("standalone_mode", True)
        kwargs["standalone_mode"] = False  # errors come back here instead of typer's boxed message
        try:
            result = super().main(*args, **kwargs)
        except UsageError as error:
            if type(error).__name__ == "NoArgsIsHelpError":  # `paddlecls-q` alone: the help text
                error.show()
            else:
                err_console.print(f"[bold red]error:[/] {escape(error.format_message())}", highlight=False, soft_wrap=True)
            if not standalone_mode:
                raise
            sys.exit(error.exit_code)
        except ClickException as error:
            if not standalone_mode:
                raise
            error.show()
            sys.exit(error.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            err_console.print("Aborted!", highlight=False)
            sys.exit(1)
        if standalone_mode:
            sys.exit(result if isinstance(result, int) else 0)
        return result


app = typer.Typer(
    name="paddlecls-q",
    cls=OneLineErrors,
    help="Quantize PaddleClas classifiers to INT8, deploy them on Paddle Inference, ONNX Runtime, "
    "OpenVINO or TensorRT, and measure what INT8 bought.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    epilog="Example: paddlecls-q demo   ·   shell completion: paddlecls-q --install-completion",
)
console = Console()
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from paddlecls_q import __version__

        typer.echo(f"paddlecls-q {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Quantize PaddleClas classifiers to INT8, deploy them on Paddle Inference, ONNX Runtime, OpenVINO or
    TensorRT, and measure what INT8 bought."""

JSON_SCHEMA_VERSION = 1


def command(
    name: str | None = None, *, group: typer.Typer | None = None, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a CLI command (on `group`, a sub-app, if given) whose domain errors print one red line and exit."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **inner: Any) -> Any:
            try:
                return function(*args, **inner)
            except PaddleClsQError as error:
                err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
                raise typer.Exit(error.exit_code) from None
            except KeyboardInterrupt:
                err_console.print("[bold red]interrupted[/]")
                raise typer.Exit(130) from None

        return (group or app).command(name, **kwargs)(wrapper)

    return decorate


def print_json(kind: str, payload: dict[str, Any]) -> None:
    """Machine output: one JSON document with a stable, versioned envelope."""
    document = {"schema": f"paddlecls-q/{kind}", "version": JSON_SCHEMA_VERSION, **payload}
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def runtime_options(
    backend: str,
    device: str | None,
    threads: int,
    fp16: bool = False,
    pinned_memory: bool = False,
    batch_size: int = 1,
) -> RuntimeOptions:
    """Validated engine options from the CLI flags shared by infer, eval and bench."""
    values = {
        "backend": choice(backend, BACKENDS, "backend"),
        "device": device or None,
        "threads": threads,
        "fp16": fp16,
        "pinned_memory": pinned_memory,
        "batch_size": batch_size,
    }
    return validate(RuntimeOptions, values, "command line")


def fit_table(table: Table, drop_order: tuple[str, ...], width: int | None = None) -> list[str]:
    """Remove `table`'s columns named in `drop_order`, in that order, until it fits `width` (default: the console's).

    Cells that still don't fit fold. Returns the headers removed, for a "see --json" note.
    """
    width = width or console.width
    dropped: list[str] = []

    def fits() -> bool:
        title, table.title = table.title, None
        try:
            return console.measure(table, options=console.options.update_width(10_000)).maximum < width - 1
        finally:
            table.title = title

    for header in drop_order:
        if fits():
            break
        for column in list(table.columns):
            if column.header == header:
                table.columns.remove(column)
                dropped.append(header)
    if table.columns:
        table.columns[0].no_wrap = True
    return dropped


def fitted_table(
    title: str,
    headers: list[str],
    rows: list[list[str]],
    *,
    left: tuple[str, ...] = (),
    drop_order: tuple[str, ...] = (),
    width: int | None = None,
    **table_options: Any,
) -> tuple[Table, list[str]]:
    """A rich table of plain-text rows (escaped) that fits `width`, dropping columns as `fit_table` does."""
    table = Table(title=title, title_justify="left", **table_options)
    for header in headers:
        table.add_column(header, justify="left" if header in left else "right", overflow="fold")
    for row in rows:
        table.add_row(*(escape(value) for value in row))
    return table, fit_table(table, drop_order, width)


def dropped_note(dropped: list[str], detail: str = "--json") -> None:
    """One dim line naming the columns a narrow terminal hid, and where to see them."""
    if dropped:
        names = ", ".join(header.replace("\n", " ") for header in dropped)
        console.print(f"[dim]hidden at {console.width} columns: {names} (see {detail})[/]", highlight=False)
