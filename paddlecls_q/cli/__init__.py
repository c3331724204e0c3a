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
    app()
