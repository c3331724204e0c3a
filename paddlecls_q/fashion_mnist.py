"""Read Fashion-MNIST from Debian's `dataset-fashion-mnist` package (gzipped IDX files)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

import numpy as np

from paddlecls_q.errors import InputError

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one Fashion-MNIST uses.


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzipped or not) as a uint8 array of the shape its header declares."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise InputError(f"{path}: can't read IDX file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise InputError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != _UBYTE:
        raise InputError(f"{path}: IDX data type 0x{raw[2]:02x} is not unsigned bytes (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise InputError(f"{path}: IDX header truncated or has no dimensions")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise InputError(f"{path}: IDX data has {len(raw) - header} bytes, header {shape} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape).copy()


def load_split(split: Literal["train", "test"], root: str | Path = DEFAULT_ROOT) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×28×28 uint8) and labels (N int64) of the train (60k) or test (10k) split."""
    if split not in _SPLIT_PREFIX:
        raise InputError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    prefix = _SPLIT_PREFIX[split]
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise InputError(f"{path} not found: install Fashion-MNIST with `apt-get install dataset-fashion-mnist`")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise InputError(f"{images_path}: expected N×28×28 images, got shape {images.shape}")
    if labels.shape != (images.shape[0],) or labels.max(initial=0) >= len(CLASS_NAMES):
        raise InputError(f"{labels_path}: expected {images.shape[0]} labels in 0..9, got shape {labels.shape}")
    return images, labels.astype(np.int64)
