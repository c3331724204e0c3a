"""The typer app every command module registers on, and the one place errors become exit codes."""

from __future__ import annotations

import errno
import functools
import json
import signal
import sys
import threading
import warnings
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
from rich.text import Text

from paddlecls_q.config import BACKENDS, RuntimeOptions, choice, validate
from paddlecls_q.errors import InputWarning, PaddleClsQError



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
                error_line(error.format_message().replace("\n", " "))
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
# Markup and emoji codes off: file names, labels and yaml text are user-controlled, so no string is ever
# parsed as markup; styles come only from `styled`.
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)


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


def styled(label: str, style: str, text: object = "") -> Text:
    """`label` in `style`, then `text` verbatim: the one way CLI output is coloured."""
    return Text.assemble((label, style), " " if text != "" else "", str(text))


def error_line(text: object) -> None:
    err_console.print(styled("error:", "bold red", text), highlight=False, soft_wrap=True)


def os_error_text(error: OSError) -> str:
    """One line for a filesystem failure: the path(s) and the system's reason."""
    reason = error.strerror or errno.errorcode.get(error.errno or 0) or str(error)
    where = ": ".join(str(name) for name in (error.filename, error.filename2) if name is not None)
    return f"{where}: {reason}" if where else reason


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as an exception so that every `finally`/cleanup of the command runs."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    if issubclass(category, InputWarning):
        err_console.print(styled("warning:", "yellow", message), highlight=False, soft_wrap=True)
    else:
        _default_show_warning(message, category, *args, **kwargs)


_default_show_warning = warnings.showwarning


def command(
    name: str | None = None, *, group: typer.Typer | None = None, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a CLI command (on `group`, a sub-app, if given) whose domain errors print one red line and exit."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **inner: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _raise_terminated)
            warnings.showwarning = _show_warning
            try:
                return function(*args, **inner)
            except PaddleClsQError as error:
                error_line(error)
                raise typer.Exit(error.exit_code) from None
            except OSError as error:  # disk full, read-only, a file where a folder should be, ...
                error_line(os_error_text(error))
                raise typer.Exit(2) from None
            except Terminated:
                err_console.print(styled("terminated", "bold red"))
                raise typer.Exit(143) from None
            except KeyboardInterrupt:
                err_console.print(styled("interrupted", "bold red"))
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
        console.print(styled(f"hidden at {console.width} columns: {names} (see {detail})", "dim"), highlight=False)
