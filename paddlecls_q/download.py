"""Fetch the prebuilt model tarballs into the cache: resumable, verified, safely unpacked.

Layout under `registry.cache_home()`:
    downloads/<tarball>          finished archives (`<tarball>.part` while downloading)
    models/<artifact.folder>/    unpacked models, i.e. `registry.model_dir(name, quantized)`
    manifest.json                sha256 recorded at first download where the registry has none
    locks/<tarball>.lock         one download of an artifact at a time (fcntl.flock)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import url2pathname

import httpx
from pydantic import Field

from paddlecls_q import __version__
from paddlecls_q.archive import ArchiveBudget, extract_archive, unsafe_path
from paddlecls_q.config import StrictModel, load_yaml, shorten, validate
from paddlecls_q.errors import ConfigError, DownloadError, InputError, ModelFormatError
from paddlecls_q.fsutil import (
    MAX_CONFIG_BYTES,
    AlreadyExistsError,
    checked_path,
    publish,
    read_bounded,
    remove_stale,
    sha256_file,
    staging_name,
)
from paddlecls_q.model_files import INFERENCE_CLS_YAML, find_model_files, load_inference_config
from paddlecls_q.registry import DEFAULT_HOST, ModelEntry, cache_home, get_model

logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO "HTTP Request" line is not ours to print

MIRROR_ENV = "PADDLECLS_Q_MIRROR"
MAX_RETRIES = 20
MAX_BACKOFF_S = 60.0
MANIFEST_NAME = "manifest.json"
CHUNK_BYTES = 1 << 16
VARIANTS = ("fp32", "quantized")
_HASH_ORIGIN = {
    "pinned": "pinned (--sha256)",
    "registry": "published",
    "tofu-verified": "recorded (trust on first use)",
}

# Called as progress(file name, bytes so far, total bytes or None when the server does not say).
ProgressCallback = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts and retry policy; retries wait backoff_s, 2*backoff_s, 4*backoff_s, ... (at most MAX_BACKOFF_S).

    A download also fails when it takes longer than `deadline_s` in all, or when, after the first
    `min_rate_window_s`, fewer than `min_rate_bytes_s` bytes a second arrive (a trickling server).
    """

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    retries: int = 4
    backoff_s: float = 1.0
    deadline_s: float = 6 * 3600.0
    min_rate_bytes_s: float = 1024.0
    min_rate_window_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout_s", "read_timeout_s", "deadline_s", "min_rate_window_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 7 * 86400):
                raise ConfigError(
                    f"{name.removesuffix('_s')}: must be a finite number of seconds in (0, 604800], got {value!r}"
                )
        if not (0 <= self.retries <= MAX_RETRIES):
            raise ConfigError(f"--retries must be between 0 and {MAX_RETRIES}, got {self.retries}")
        if not (math.isfinite(self.backoff_s) and self.backoff_s >= 0):
            raise ConfigError(f"backoff must be a finite number of seconds >= 0, got {self.backoff_s!r}")
        if not (math.isfinite(self.min_rate_bytes_s) and self.min_rate_bytes_s >= 0):
            raise ConfigError(f"minimum rate must be a finite number >= 0, got {self.min_rate_bytes_s!r}")


@dataclass(frozen=True)
class DownloadResult:
    """What `download_model` did for one artifact.

    `sha256_source` is "registry" (published hash), "pinned" (--sha256), "tofu-recorded" (no
    published hash: recorded now, trust on first use) or "tofu-verified" (matched the recorded one).
    """

    model: str
    variant: str
    url: str
    folder: Path
    archive: Path
    sha256: str
    sha256_source: str
    action: str  # "downloaded", "unpacked" (cached archive, folder rebuilt) or "cached" (nothing to do)
    size_bytes: int
    copied_from_fp32: tuple[str, ...] = ()


class _Retryable(Exception):
    """A failure worth another attempt (server error, short body)."""


class _TooSlow(Exception):
    """The overall deadline passed or the transfer rate fell below the minimum: no more attempts."""


def resolve_url(url: str, mirror: str | None = None) -> str:
    """`url` with the default host replaced by `mirror` or $PADDLECLS_Q_MIRROR (a URL or a local folder)."""
    mirror = mirror or os.environ.get(MIRROR_ENV)
    if not mirror or not url.startswith(DEFAULT_HOST + "/"):
        return url
    if "://" not in mirror:
        mirror = Path(mirror).expanduser().resolve().as_uri()
    return mirror.rstrip("/") + url[len(DEFAULT_HOST) :]


def manifest_path() -> Path:
    return cache_home() / MANIFEST_NAME


class ManifestEntry(StrictModel):
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    size_bytes: int = Field(ge=0)
    url: str


class Manifest(StrictModel):
    version: Literal[1] = 1
    artifacts: dict[str, ManifestEntry] = {}


def read_manifest() -> dict[str, Any]:
    """The recorded artifacts, keyed by tarball name: {"sha256", "size_bytes", "url"}, each validated."""
    path = manifest_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(read_bounded(path, MAX_CONFIG_BYTES, "download manifest"))
    except ValueError as error:
        raise ConfigError(f"{path}: unreadable download manifest ({shorten(str(error))}); repair or delete it") from None
    manifest = validate(Manifest, data, f"{path} (the download manifest; repair or delete it)")
    return {name: entry.model_dump() for name, entry in manifest.artifacts.items()}


def _record_hash(filename: str, url: str, sha256: str, size_bytes: int) -> None:
    with _locked("manifest"):
        artifacts = read_manifest()
        artifacts[filename] = {"sha256": sha256, "size_bytes": size_bytes, "url": url}
        path = manifest_path()
        staging = path.with_name(f".{MANIFEST_NAME}.tmp")
        try:
            staging.write_text(json.dumps({"version": 1, "artifacts": artifacts}, indent=2, sort_keys=True) + "\n")
            os.replace(staging, path)
        except OSError as error:
            _remove(staging)
            raise DownloadError(f"{path}: cannot write the download manifest: {error.strerror or error}") from None


def _make_dirs(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"{path}: cannot create folder: {error.strerror or error}") from None


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Hold an exclusive lock file, so that concurrent downloads of one artifact take turns."""
    path = cache_home() / "locks" / f"{name}.lock"
    _make_dirs(path.parent)
    try:
        handle = path.open("a+b")
    except OSError as error:
        raise DownloadError(f"{path}: cannot open lock file: {error.strerror or error}") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- fetching one file ----------------------------------------------------------------------------


def _content_range_start(response: httpx.Response) -> int:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else -1


def _fetch_once(
    client: httpx.Client,
    url: str,
    partial: Path,
    label: str,
    progress: ProgressCallback | None,
    settings: HttpSettings,
    started: float,
) -> None:
    """One GET, appending to `partial` from where it stops; raises _Retryable if the body came up short."""
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with client.stream("GET", url, headers=headers) as response:
        status = response.status_code
        if status == 416 and offset:  # the partial file is as long as the file or longer: start over
            partial.unlink()
            return _fetch_once(client, url, partial, label, progress, settings, started)
        if status in (408, 429) or status >= 500:
            raise _Retryable(f"HTTP {status} {response.reason_phrase}")
        if not response.is_success:
            raise DownloadError(f"{url}: HTTP {status} {response.reason_phrase}")
        if status == 206 and _content_range_start(response) != offset:
            partial.unlink(missing_ok=True)
            raise _Retryable("the server answered a different byte range than asked")
        if status != 206:
            offset = 0  # the server ignored Range and sends the whole file: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        done = offset
        attempt_started = time.monotonic()
        with partial.open("ab" if offset else "wb") as handle:
            for chunk in response.iter_raw():  # unbuffered: bytes before a dropped connection are kept
                handle.write(chunk)
                done += len(chunk)
                _check_pace(settings, started, attempt_started, done - offset)
                if progress:
                    progress(label, done, total)
    if total is not None and done < total:
        raise _Retryable(f"connection closed after {done} of {total} bytes")


def _check_pace(settings: HttpSettings, started: float, attempt_started: float, received: int) -> None:
    """Raise _TooSlow past the overall deadline, or when this attempt's average rate is below the minimum."""
    now = time.monotonic()
    if now - started > settings.deadline_s:
        raise _TooSlow(f"took longer than the {settings.deadline_s:g} s deadline")
    elapsed = now - attempt_started
    if elapsed > settings.min_rate_window_s and received / elapsed < settings.min_rate_bytes_s:
        raise _TooSlow(f"too slow: {received / elapsed:.0f} B/s, under the minimum {settings.min_rate_bytes_s:g} B/s")


def _fetch_http(url: str, partial: Path, label: str, settings: HttpSettings, progress: ProgressCallback | None) -> None:
    timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
    headers = {"User-Agent": f"paddlecls-q/{__version__}", "Accept-Encoding": "identity"}
    attempts = settings.retries + 1
    problem = ""
    started = time.monotonic()
    with httpx.Client(timeout=timeout, headers=headers, follow_redirects=True) as client:
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(settings.backoff_s * 2 ** min(attempt - 1, 30), MAX_BACKOFF_S))
            try:
                _fetch_once(client, url, partial, label, progress, settings, started)
                return
            except _TooSlow as error:
                problem = str(error)
                break
            except _Retryable as error:
                problem = str(error)
            except httpx.TimeoutException:
                problem = f"timed out (connect {settings.connect_timeout_s:g} s, read {settings.read_timeout_s:g} s)"
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as error:
                raise DownloadError(f"{url}: {error}") from None
            except httpx.TransportError as error:
                problem = f"network error: {str(error) or type(error).__name__}"
    resume = f"; run again to resume from {partial}" if partial.exists() and partial.stat().st_size else ""
    raise DownloadError(f"{url}: {problem} (gave up after {attempt + 1} attempts){resume}")


def _copy_local(url: str, partial: Path, label: str, progress: ProgressCallback | None) -> None:
    source = Path(url2pathname(urlparse(url).path))
    if not source.is_file():
        raise DownloadError(f"{url}: file not found")
    total, done = source.stat().st_size, 0
    with source.open("rb") as reader, partial.open("wb") as writer:
        for block in iter(lambda: reader.read(CHUNK_BYTES), b""):
            writer.write(block)
            done += len(block)
            if progress:
                progress(label, done, total)


def fetch(
    url: str,
    target: Path,
    *,
    expected_sha256: str | None = None,
    settings: HttpSettings = HttpSettings(),
    progress: ProgressCallback | None = None,
) -> str:
    """Download `url` (http, https or file) to `target` through `target.part`, resuming a partial file.

    The file is renamed into place only once complete and, if `expected_sha256` is given, verified;
    a mismatch deletes it. Returns the file's sha256.
    """
    partial = target.with_name(target.name + ".part")
    try:
        if urlparse(url).scheme == "file":
            _copy_local(url, partial, target.name, progress)
        else:
            _fetch_http(url, partial, target.name, settings, progress)
        digest = sha256_file(partial)
        if expected_sha256 and digest != expected_sha256.lower():
            partial.unlink()
            raise DownloadError(
                f"{url}: sha256 mismatch (expected {expected_sha256}, got {digest}); deleted the download"
            )
        os.replace(partial, target)
    except OSError as error:  # the local disk: full, read-only, ...
        with contextlib.suppress(OSError):
            partial.unlink()
        raise DownloadError(f"{url}: saving to {partial} failed: {error.strerror or error}") from None
    return digest


# ---- one model ------------------------------------------------------------------------------------


def _is_complete(folder: Path, quantized: bool) -> bool:
    try:
        find_model_files(folder)
    except ModelFormatError:
        return False
    return not quantized or (folder / INFERENCE_CLS_YAML).is_file()


def _top_folder(staging: Path, name: str) -> Path:
    """The unpacked model: <name>/, else the archive's only folder, else the archive root."""
    if (staging / name).is_dir():
        return staging / name
    entries = list(staging.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return staging


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _label_file(inference_cls_yaml: Path) -> str | None:
    """The label file `PostProcess.Topk.class_id_map_file` names, if it is a plain relative path."""
    topk = (load_yaml(inference_cls_yaml).get("PostProcess") or {}).get("Topk") or {}
    name = topk.get("class_id_map_file") if isinstance(topk, dict) else None
    return name if isinstance(name, str) and name and not unsafe_path(name) else None


def _copy_fp32_config(entry: ModelEntry, unpacked: Path, fp32_folder: Path) -> tuple[str, ...]:
    """Copy inference_cls.yaml (and the label file it names, if present) from the FP32 folder."""
    source = fp32_folder / INFERENCE_CLS_YAML
    if not source.is_file():
        raise DownloadError(f"{fp32_folder}: {INFERENCE_CLS_YAML} is missing; the quantized {entry.name} needs it")
    shutil.copy2(source, unpacked / INFERENCE_CLS_YAML)
    copied = [INFERENCE_CLS_YAML]
    label = _label_file(source)
    if label and (fp32_folder / label).is_file():
        (unpacked / label).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(fp32_folder / label, unpacked / label)
        copied.append(label)
    return tuple(copied)


def _install(
    archive: Path, folder: Path, fill_in: Callable[[Path], tuple[str, ...]], force: bool, budget: ArchiveBudget
) -> tuple[str, ...]:
    """Unpack into a hidden folder next to `folder`, check it is a model, then publish it (no-replace without `force`)."""
    remove_stale(folder)  # left by a killed run
    try:
        staging = staging_name(folder)
        staging.mkdir()
    except OSError as error:
        raise DownloadError(f"{folder.parent}: cannot write: {error.strerror or error}") from None
    try:
        extract_archive(archive, staging, budget)
        unpacked = _top_folder(staging, folder.name)
        try:
            files = find_model_files(unpacked)
        except ModelFormatError as error:
            raise DownloadError(f"{archive}: does not unpack to a loadable model ({error})") from None
        copied = fill_in(unpacked)
        if files.inference_cls_yaml.is_file():  # a hostile yaml (sizes, ops) is refused before it is installed
            try:
                load_inference_config(files)
            except (ConfigError, ModelFormatError) as error:
                raise DownloadError(f"{archive}: unpacks to an unusable {INFERENCE_CLS_YAML} ({error})") from None
        publish(unpacked, folder, force=force)
        return copied
    except AlreadyExistsError:
        raise DownloadError(f"{folder}: already exists; not replacing it without --force") from None
    except OSError as error:
        raise DownloadError(f"{archive}: installing into {folder} failed: {error.strerror or error}") from None
    finally:
        _remove(staging)


def download_model(
    name: str,
    *,
    quantized: bool = False,
    dest: str | Path | None = None,
    force: bool = False,
    mirror: str | None = None,
    sha256: str | None = None,
    settings: HttpSettings = HttpSettings(),
    progress: ProgressCallback | None = None,
    budget: ArchiveBudget = ArchiveBudget(),
) -> DownloadResult:
    """Make the FP32 or quantized model of `name` ready at `registry.model_dir(name, quantized)` (or `dest/<folder>`).

    A second call is a verified no-op; `force` fetches and unpacks again. A quantized tarball
    without inference_cls.yaml gets it from the FP32 model, which is downloaded if needed.
    """
    entry = get_model(name)
    variant = "quantized" if quantized else "fp32"
    artifact = entry.quantized if quantized else entry.fp32
    if artifact is None:
        why = "is bundled with paddlecls-q" if entry.bundled_dir else f"has no prebuilt {variant} tarball"
        raise ConfigError(f"model {entry.name!r} {why}; nothing to download")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ConfigError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    url = resolve_url(artifact.url, mirror)
    filename = artifact.url.rsplit("/", 1)[-1]
    parent = checked_path(dest, "--dest") if dest is not None else cache_home() / "models"
    folder = parent / artifact.folder
    archive = cache_home() / "downloads" / filename
    _make_dirs(parent)
    _make_dirs(archive.parent)

    with _locked(filename):
        recorded = read_manifest().get(filename, {}).get("sha256")
        if sha256:
            expected, source = sha256.lower(), "pinned"
        elif artifact.sha256:
            expected, source = artifact.sha256.lower(), "registry"
        else:
            expected, source = recorded, "tofu-verified" if recorded else "tofu-recorded"
        if force:  # the cached archive stays until a new one is verified (fetch renames over it)
            _remove(archive.with_name(archive.name + ".part"))
        action = "cached"
        if archive.exists() and not archive.is_file():
            raise InputError(f"{archive}: the cached archive is not a regular file; remove it")
        if archive.exists() and not force:
            digest = sha256_file(archive)
            if expected and digest != expected:
                _remove(archive)
                raise DownloadError(
                    f"{archive}: cached file does not match the {_HASH_ORIGIN[source]} sha256 {expected} "
                    f"(got {digest}); deleted it, run the download again"
                )
        else:
            digest = fetch(url, archive, expected_sha256=expected, settings=settings, progress=progress)
            action = "downloaded"

        def fill_in(unpacked: Path) -> tuple[str, ...]:
            if not quantized or (unpacked / INFERENCE_CLS_YAML).is_file():
                return ()
            fp32 = download_model(
                entry.name, dest=dest, mirror=mirror, settings=settings, progress=progress, budget=budget
            )
            return _copy_fp32_config(entry, unpacked, fp32.folder)

        copied: tuple[str, ...] = ()
        if force or action == "downloaded" or not _is_complete(folder, quantized):
            try:
                # The cache's models/ is ours to rebuild; a folder under --dest is the user's: kept unless --force.
                copied = _install(archive, folder, fill_in, force or dest is None, budget)
            except DownloadError:
                if source == "tofu-recorded":  # never trusted: the next run fetches it again
                    _remove(archive)
                raise
            action = "downloaded" if action == "downloaded" else "unpacked"
        if recorded != digest:  # trust on first use records only an archive that verified and unpacked
            _record_hash(filename, url, digest, archive.stat().st_size)
    return DownloadResult(
        model=entry.name,
        variant=variant,
        url=url,
        folder=folder,
        archive=archive,
        sha256=digest,
        sha256_source=source,
        action=action,
        size_bytes=archive.stat().st_size,
        copied_from_fp32=copied,
    )


def download(name: str, variants: tuple[str, ...] = ("fp32",), **options: Any) -> list[DownloadResult]:
    """`download_model` for each variant ("fp32", "quantized"), FP32 first."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    return [download_model(name, quantized=v == "quantized", **options) for v in VARIANTS if v in variants]
