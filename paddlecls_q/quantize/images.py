"""Calibration and training images: finding them (`list_images`, the one rule for the whole CLI) and preprocessing them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from paddlecls_q.config import PREPROCESS_NAMES, did_you_mean, load_inference_cls_yaml
from paddlecls_q.errors import ConfigError, InputError, PaddleClsQError
from paddlecls_q.model_files import INFERENCE_CLS_YAML
from paddlecls_q.quantize.progress import Progress, raise_if_interrupted

# Preprocessed images kept in memory between passes (PTQ hist/KL read the data twice, QAT every epoch).
IMAGE_CACHE_BYTES = 1 << 30


class CalibrationImages:
    """The chosen images, decoded and preprocessed with the model's own inference_cls.yaml ops."""

    def __init__(self, paths: list[Path], model_folder: Path, preprocess_name: str) -> None:
        from paddlecls_q.preprocess import build_preprocessor

        if preprocess_name not in PREPROCESS_NAMES:
            raise ConfigError(
                f"unknown preprocess {preprocess_name!r}{did_you_mean(preprocess_name, PREPROCESS_NAMES)}"
            )
        self.paths = paths
        self.preprocess = build_preprocessor(load_inference_cls_yaml(model_folder / INFERENCE_CLS_YAML))
        self._cache: dict[int, np.ndarray] = {}
        self._cache_limit = 0

    def check(self, progress: Progress) -> None:
        """Decode every image once: a non-image or broken file is an error before any work starts."""
        task = progress.add("reading images", len(self.paths))
        for index in range(len(self.paths)):
            self.tensor(index)
            progress.advance(task)
        progress.done(task)

    def tensor(self, index: int) -> np.ndarray:
        from paddlecls_q.preprocess import read_image

        raise_if_interrupted()
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        path = self.paths[index]
        try:
            tensor = self.preprocess(read_image(path))
        except PaddleClsQError as error:
            raise InputError(f"{path}: not a usable image ({error})") from None
        except Exception as error:  # cv2/PIL raise assorted types on corrupt data
            raise InputError(f"{path}: not a usable image ({type(error).__name__}: {error})") from None
        if not self._cache_limit:
            self._cache_limit = max(1, IMAGE_CACHE_BYTES // max(tensor.nbytes, 1))
        if len(self._cache) < self._cache_limit:
            self._cache[index] = tensor
        return tensor

    def batch(self, indices: list[int] | np.ndarray) -> np.ndarray:
        return np.stack([self.tensor(int(i)) for i in indices]).astype(np.float32, copy=False)
