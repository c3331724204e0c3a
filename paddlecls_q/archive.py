"""Safe extraction of `.tar`, `.tgz`/`.tar.gz` and `.zip` model archives.

Every member is checked before anything is written: no absolute paths, no `..`, no link that
points outside the archive, no device files or FIFOs. Tar members then go through tarfile's
`data` filter as a second line of defence.
"""

from __future__ import annotations

import posixpath
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from paddlecls_q.errors import DownloadError

ARCHIVE_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".zip")


@dataclass(frozen=True)
class ArchiveBudget:
    """How much an archive may unpack to: total bytes, member count, and unpacked/archive size ratio."""

    max_total_bytes: int = 2 << 30
    max_members: int = 10_000
    max_ratio: float = 100.0

    def check(self, archive: Path, sizes: list[int]) -> None:
        """DownloadError when the members' declared sizes break the budget (checked before writing)."""
        total, packed = sum(sizes), max(archive.stat().st_size, 1)
        if len(sizes) > self.max_members:
            raise DownloadError(
                f"{archive}: {len(sizes)} members, more than the limit of {self.max_members} (--max-members)"
            )
        if total > self.max_total_bytes:
            raise DownloadError(
                f"{archive}: unpacks to {total} bytes, more than the limit of {self.max_total_bytes} (--max-unpacked-mb)"
            )
        if total > (1 << 20) and total / packed > self.max_ratio:
            raise DownloadError(
                f"{archive}: unpacks to {total / packed:.0f}x its size, more than the limit of {self.max_ratio:g}x "
                "(--max-ratio)"
            )


def unsafe_path(name: str) -> str | None:
    """Why a member path may not be written under the destination, or None when it is fine."""
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        return "absolute path"
    if ".." in normalized.split("/"):
        return "path with '..'"
    return None


def _link_escapes(member_name: str, target: str, symbolic: bool) -> bool:
    """Whether a link target leaves the archive root (symlinks are relative to their folder)."""
    if unsafe_path(target) == "absolute path":
        return True
    base = posixpath.dirname(member_name) if symbolic else ""
    resolved = posixpath.normpath(posixpath.join(base, target.replace("\\", "/")))
    return resolved == ".." or resolved.startswith("../")


def _check_tar_member(member: tarfile.TarInfo) -> str | None:
    reason = unsafe_path(member.name)
    if reason:
        return reason
    if member.issym() and _link_escapes(member.name, member.linkname, symbolic=True):
        return f"symlink pointing outside the archive ({member.linkname})"
    if member.islnk() and _link_escapes(member.name, member.linkname, symbolic=False):
        return f"hard link pointing outside the archive ({member.linkname})"
    if member.isdev():
        return "device file or FIFO"
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        return "unsupported member type"
    return None


def _check_zip_member(info: zipfile.ZipInfo) -> str | None:
    reason = unsafe_path(info.filename)
    if reason:
        return reason
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink"
    if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "device file or FIFO"
    return None


def extract_archive(archive: Path, destination: Path, budget: ArchiveBudget = ArchiveBudget()) -> None:
    """Unpack `archive` into the existing folder `destination`, refusing any unsafe member.

    Raises:
        DownloadError: naming the archive (and the member) when it is unreadable or unsafe.
    """
    archive, destination = Path(archive), Path(destination)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as bundle:
                for info in bundle.infolist():
                    reason = _check_zip_member(info)
                    if reason:
                        raise DownloadError(f"{archive}: refusing to extract member {info.filename!r}: {reason}")
                budget.check(archive, [info.file_size for info in bundle.infolist()])
                bundle.extractall(destination)
            return
        if not hasattr(tarfile, "data_filter"):
            raise DownloadError(f"{archive}: this Python lacks tarfile's 'data' filter; use Python 3.10.12+ or 3.11.4+")
        with tarfile.open(archive) as bundle:
            members = []
            for member in bundle:  # headers one by one: a 100k-member archive stops at the limit
                members.append(member)
                if len(members) > budget.max_members:
                    budget.check(archive, [m.size for m in members])
            for member in members:
                reason = _check_tar_member(member)
                if reason:
                    raise DownloadError(f"{archive}: refusing to extract member {member.name!r}: {reason}")
            budget.check(archive, [m.size for m in members if m.isfile()])
            bundle.extractall(destination, members=members, filter="data")
    except tarfile.FilterError as error:
        raise DownloadError(f"{archive}: refusing to extract: {error}") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as error:
        raise DownloadError(f"{archive}: not a readable .tar, .tgz or .zip archive ({error})") from None
    except OSError as error:
        raise DownloadError(f"{archive}: extracting into {destination} failed: {error.strerror or error}") from None
