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
from rich.text import Text

from paddlecls_q.config import BACKENDS, RuntimeOptions, choice, validate
from paddlecls_q.errors import InputWarning, PaddleClsQError

app = typer.Typer(
    name="paddlecls-q",
    help="Quantize PaddleClas classifiers to INT8, deploy them on Paddle Inference, ONNX Runtime, "
    "OpenVINO or TensorRT, and measure what INT8 bought.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Markup and emoji codes off: file names, labels and yaml text are user-controlled, so no string is ever
# parsed as markup; styles come only from `styled`.
console = Console(markup=False, emoji=False)
err_console = Console(stderr=True, markup=False, emoji=False)

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
    backend: str, device: str | None, threads: int, fp16: bool = False, pinned_memory: bool = False
) -> RuntimeOptions:
    """Validated engine options from the CLI flags shared by infer, eval and bench."""
    values = {
        "backend": choice(backend, BACKENDS, "backend"),
        "device": choice(device, ("cpu", "gpu"), "device") if device else None,
        "threads": threads,
        "fp16": fp16,
        "pinned_memory": pinned_memory,
    }
    return validate(RuntimeOptions, values, "command line")
