"""Build the output in a hidden `.NAME.partial-PID-*` folder next to it; publish by a no-replace rename only when complete."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from paddlecls_q import fsutil
from paddlecls_q.errors import ConfigError


class Workspace:
    """A hidden `.NAME.partial-PID-*` folder next to the output (fsutil's one staging rule), removed unless published."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = fsutil.staging_name(output)
        self.published = False

    def __enter__(self) -> Workspace:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        fsutil.remove_stale(self.output)
        self.path.mkdir()
        return self

    def publish(self, folder: Path, target: Path, force: bool) -> None:
        """Rename `folder` (inside the workspace) to `target`; an existing one is replaced only with `force`."""
        try:
            fsutil.publish(folder, target, force=force)
        except fsutil.AlreadyExistsError:
            raise ConfigError(
                f"{target}: already exists (checked at publish time); pass --force to replace it"
            ) from None
        self.published = True

    def __exit__(self, *exc: Any) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
