"""Read image files as PaddleClas does (`cv2.imread(path)[:, :, ::-1]`), refusing bombs and non-images with an InputError."""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path

# Pillow's own bomb check only warns below 2 × 89.5 M pixels; 64 M pixels is already ~200 MB as BGR.
MAX_IMAGE_PIXELS = 64_000_000
# OpenCV then refuses bigger images from their header, before allocating (read when cv2 is first imported).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from paddlecls_q.errors import InputError, InputWarning  # noqa: E402
from paddlecls_q.fsutil import MAX_IMAGE_BYTES, read_bounded  # noqa: E402

# The file suffixes that image folders are searched for (infer, data sets, calibration folders).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

# warnings.catch_warnings swaps process-wide filters; concurrent readers (evaluate's thread pool) must take turns.
_PILLOW_WARNINGS_LOCK = threading.Lock()


def read_image(path: str | os.PathLike[str], grey: bool = False) -> np.ndarray:
    """Decode an image file to RGB uint8 HWC, as PaddleClas's `cv2.imread(path)[:, :, ::-1]` does.

    OpenCV's default IMREAD_COLOR makes every image 3-channel 8-bit (grey is repeated, alpha is
    dropped, 16-bit is scaled down, EXIF orientation is applied). The bytes are read by Python so
    that non-ASCII paths work, and the pixel count is checked from the header before decoding.

    With `grey`, an 8-bit greyscale PNG comes back as its H×W plane instead (what the RGB image
    repeats three times; FastPreprocessor takes it directly, a quarter less work on small images).
    """
    try:
        data = read_file_bytes(path)
    except FileNotFoundError:
        raise InputError(f"{path}: image not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not an image file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read the file ({error.strerror or error})") from None
    if not data:
        raise InputError(f"{path}: empty file (0 bytes), not an image")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:  # a JPEG without its end marker
        warnings.warn(f"{path}: truncated JPEG (no end marker); the missing part decodes as grey", InputWarning, 2)
    try:
        flags = cv2.IMREAD_GRAYSCALE if grey and _is_grey_png(data) else cv2.IMREAD_COLOR
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        bgr = None  # OpenCV raises on images over OPENCV_IO_MAX_IMAGE_PIXELS; the size check below says so
    if bgr is None or bgr.shape[0] * bgr.shape[1] > MAX_IMAGE_PIXELS:
        # Also catches a process that imported cv2 before us, where OpenCV's own limit is 2**30 pixels.
        _check_pixel_count(path, data)
        if bgr is not None:
            raise InputError(f"{path}: image too large: {bgr.shape[1]}x{bgr.shape[0]}, the limit is {MAX_IMAGE_PIXELS:,} pixels")
        raise InputError(f"{path}: not an image OpenCV can decode (corrupt file or unsupported format)")
    return bgr if bgr.ndim == 2 else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _is_grey_png(data: bytes) -> bool:
    """An 8-bit greyscale PNG, from its IHDR chunk (bit depth 8, colour type 0)."""
    return data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and data[24:26] == b"\x08\x00"


def read_file_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole file: regular files only, at most MAX_IMAGE_BYTES (never /dev/zero or a FIFO)."""
    return read_bounded(path, MAX_IMAGE_BYTES, "image")


def _check_pixel_count(path: str | os.PathLike[str], data: bytes) -> None:
    """Refuse images over MAX_IMAGE_PIXELS, naming their size (Pillow reads only the header)."""
    try:
        with _PILLOW_WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, with our own message
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as error:
        raise InputError(f"{path}: image too large ({error})") from None
    except (OSError, ValueError, SyntaxError):
        return
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{path}: image too large: {width}x{height} = {width * height:,} pixels, "
            f"the limit is {MAX_IMAGE_PIXELS:,} pixels"
        )


def list_images(path: Path, *, allow_file: bool = False) -> list[Path]:
    """The image files at `path`, or an InputError saying what is wrong.

    The one rule for every command: a folder gives every image file under it, recursively, sorted
    by path, skipping hidden files (name starting with "."); an image is a file whose suffix is in
    IMAGE_SUFFIXES. A single file is accepted as itself only with `allow_file` (`infer --image`).
    """
    what = "image path" if allow_file else "image folder"
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if not path.is_dir():
        if allow_file:
            return [path]
        raise InputError(f"{path}: not a folder (give a folder of images)")
    files = sorted(item for item in path.rglob("*") if item.is_file() and not item.name.startswith("."))
    images = [item for item in files if item.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        if not files:
            raise InputError(f"{path}: {what} is empty")
        shown = ", ".join(item.name for item in files[:3]) + (", ..." if len(files) > 3 else "")
        raise InputError(
            f"{path}: holds no images ({len(files)} other files: {shown}); "
            f"image types: {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return images
