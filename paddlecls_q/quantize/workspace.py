"""Build the output in a hidden `.NAME.partial-PID` folder next to it; publish by rename only when complete."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Workspace:
    """A hidden `.NAME.partial-PID` folder next to the output, removed unless published."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.parent / f".{output.name}.partial-{os.getpid()}"
        self.published = False

    def __enter__(self) -> Workspace:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.output.parent.glob(f".{self.output.name}.partial-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir()
        return self

    def publish(self, folder: Path, target: Path) -> None:
        """Rename `folder` (inside the workspace) to `target`, replacing what is there."""
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.rename(target, old)
        os.rename(folder, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.published = True

    def __exit__(self, *exc: Any) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
