"""Progress bars on stderr and Ctrl-C handling that survives libraries swallowing KeyboardInterrupt."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Progress:
    """rich progress bars on stderr, or nothing when progress is off."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        self.totals: dict[Any, int | None] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )

    def __enter__(self) -> Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def add(self, description: str, total: int | None) -> Any:
        if self.bar is None:
            return None
        task = self.bar.add_task(description, total=total, note="")
        self.totals[task] = total
        return task

    def advance(self, task: Any, steps: int = 1, note: str | None = None) -> None:
        if self.bar is not None and task is not None:
            if note is None:
                self.bar.update(task, advance=steps)
            else:
                self.bar.update(task, advance=steps, note=note)

    def done(self, task: Any) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, completed=self.totals[task])


_INTERRUPTED = threading.Event()


def raise_if_interrupted() -> None:
    """Re-raise a Ctrl-C that third-party code swallowed (PaddleSlim has bare `except:` clauses)."""
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def handle_interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt and stay raised: the data loaders and stage boundaries
    raise it again if a library swallowed it, so the temporary folder is always removed promptly."""

    def handler(signum: int, frame: Any) -> None:
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    _INTERRUPTED.clear()
    previous: dict[signal.Signals, Any] = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM):
            current = signal.getsignal(number)
            if current is signal.SIG_IGN:  # e.g. a background job of a non-interactive shell
                continue
            previous[number] = signal.signal(number, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
