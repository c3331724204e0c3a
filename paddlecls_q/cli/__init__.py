"""`paddlecls-q` command line: each module here parses one command's options and prints its result."""

from paddlecls_q.cli.app import app


def _register_commands() -> None:
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if module.name != "app":
            importlib.import_module(f"{__name__}.{module.name}")


_register_commands()


def main() -> None:
    """The entry point: typer's usage errors (bad option, value out of range) become one line, exit 2."""
    import sys

    import typer

    from paddlecls_q.cli.app import error_line

    usage_error = typer.BadParameter.__mro__[1]  # click's UsageError, as the click this typer uses defines it

    try:
        code = app(standalone_mode=False)
    except usage_error as error:
        where = f"{error.ctx.command_path}: " if error.ctx is not None else ""
        error_line(where + error.format_message().replace("\n", " "))
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
