"""Filesystem rules shared by every command: no empty paths, bounded reads, no-replace publishing.

- `checked_path` refuses an empty or whitespace path (it would mean the current folder).
- `writable_folder` refuses a folder setting that names a file or a read-only place.
- `read_bounded` reads regular files only, up to a size cap (never /dev/zero or a FIFO).
- `publish` renames a finished file or folder into place; without `force` it refuses, at
  the moment of the rename, to replace anything that exists (renameat2 RENAME_NOREPLACE).
- `remove_stale` is the one rule for leftovers of killed runs: `.<name>.partial-*` siblings.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import stat
import uuid
from pathlib import Path
from typing import Any

from paddlecls_q.errors import ConfigError, InputError

MAX_CONFIG_BYTES = 4 << 20
MAX_IMAGE_BYTES = 256 << 20
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


class AlreadyExistsError(FileExistsError):
    """`publish` found the target present at the moment of the rename."""


def checked_path(value: str | os.PathLike[str], what: str) -> Path:
    """`value` as a Path; ConfigError when it is empty or only whitespace."""
    text = os.fspath(value)
    if not text.strip():
        raise ConfigError(f"{what}: an empty path is not allowed (got {text!r})")
    return Path(text).expanduser()


def writable_folder(path: Path, what: str) -> Path:
    """`path`, if it is or can become a folder this process writes into; a ConfigError naming `what` if not.

    Nothing is left behind: the nearest part of `path` that exists must be a folder in which a probe folder
    can be made (and is removed at once) — permission bits alone pass root on /proc or a read-only mount.
    """
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what} {path}: {existing} is not a folder")
    probe = existing / f".paddlecls-q-probe-{uuid.uuid4().hex}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError:
        raise ConfigError(f"{what} {path}: {existing} is not writable") from None
    return Path(path)


def read_bounded(path: str | os.PathLike[str], max_bytes: int = MAX_CONFIG_BYTES, what: str = "file") -> bytes:
    """The bytes of the regular file `path`; InputError for a non-regular file or one over `max_bytes`."""
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the fstat below refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{path}: {what} not found") from None
    except OSError as error:
        raise InputError(f"{path}: cannot open {what}: {error.strerror or error}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{path}: is a folder, not a {what} file")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: {what} is not a regular file")
        if info.st_size > max_bytes:
            raise InputError(f"{path}: {what} is {info.st_size} bytes, more than the {max_bytes}-byte limit")
        chunks, total = [], 0
        while True:  # plain system calls: a small file is one read of its size (+1 to see the end)
            chunk = os.read(
                fd, min(max(info.st_size - total, 0) + 1 if total <= info.st_size else 1 << 16, max_bytes + 1)
            )
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise InputError(f"{path}: {what} grew past the {max_bytes}-byte limit while being read")
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _libc_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.renameat2
    except (OSError, AttributeError):
        return None


_renameat2 = _libc_renameat2()


def rename_no_replace(source: Path, target: Path) -> None:
    """Rename `source` to `target`, failing with AlreadyExistsError if `target` exists (checked atomically)."""
    if _renameat2 is not None:
        result = _renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise AlreadyExistsError(errno.EEXIST, "already exists", str(target))
        if code not in (errno.EINVAL, errno.ENOSYS):  # EINVAL/ENOSYS: filesystem lacks the flag
            raise OSError(code, os.strerror(code), str(target))
    if Path(source).is_dir() and not Path(source).is_symlink():
        # mkdir is atomic and claims the name; a rename onto an empty folder then replaces only it.
        try:
            os.mkdir(target)
        except FileExistsError:
            raise AlreadyExistsError(errno.EEXIST, "already exists", str(target)) from None
        os.rename(source, target)
        return
    try:
        os.link(source, target)  # fails if target exists
    except FileExistsError:
        raise AlreadyExistsError(errno.EEXIST, "already exists", str(target)) from None
    os.unlink(source)


def remove(path: Path) -> None:
    """Delete a file, link or folder; missing is fine."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def publish(staging: Path, target: Path, *, force: bool = False) -> None:
    """Move the finished `staging` to `target`.

    Without `force`, an existing `target` (even one created while the job ran) is never touched:
    AlreadyExistsError. With `force`, the old one is moved aside and deleted only after the new one is in place.
    """
    staging, target = Path(staging), Path(target)
    try:
        rename_no_replace(staging, target)
        return
    except AlreadyExistsError:
        if not force:
            raise
    old = staging_name(target)
    os.rename(target, old)
    try:
        rename_no_replace(staging, target)
    except OSError:
        os.rename(old, target)
        raise
    remove(old)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_new_file(path: Path, force: bool = False) -> None:
    """Refuse early what `write_new_file` would refuse at the end: a non-file there, or a file without `force`."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: exists and is not a regular file")
    if path.exists() and not force:
        raise InputError(f"{path}: already exists; pass --force to replace it")


def write_new_file(path: Path, data: bytes, force: bool = False) -> None:
    """Write `data` to `path` through a staging file; an existing `path` is replaced only with `force`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_file():
        raise InputError(f"{path}: exists and is not a regular file")
    staging = staging_name(path)
    try:
        staging.write_bytes(data)
        publish(staging, path, force=force)
    except AlreadyExistsError:
        raise InputError(f"{path}: already exists; pass --force to replace it") from None
    finally:
        remove(staging)


def remove_stale(target: Path) -> None:
    """Delete `.<target.name>.partial-<pid>-*` siblings whose process is gone (left by a killed run)."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        pid = stale.name.removeprefix(f".{target.name}.partial-").split("-", 1)[0]
        if not (pid.isdigit() and _alive(int(pid)) and int(pid) != 0):
            remove(stale)


def staging_name(target: Path) -> Path:
    """A fresh hidden sibling of `target` to build into; `remove_stale` knows its pattern."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
