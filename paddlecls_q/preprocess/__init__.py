"""Image → model input, exactly as PaddleClas preprocesses: one interface, two implementations.

- image_io.py: read_image (decode a file as PaddleClas does) and IMAGE_SUFFIXES.
- reference.py: Preprocessor, the ops of an `inference_cls.yaml` run one by one (any supported chain).
- fast.py: FastPreprocessor, the common resize → crop → normalize → CHW chain compiled into one
  bit-identical plan (compile_plan returns None for other chains).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

# image_io first: it sets OpenCV's pixel limit before cv2 is imported.
from paddlecls_q.preprocess.image_io import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, list_images, read_image
from paddlecls_q.preprocess.reference import CV2_INTERPOLATIONS, PIL_INTERPOLATIONS, Preprocessor  # noqa: I001
from paddlecls_q.preprocess.fast import FastPreprocessor, compile_plan

from paddlecls_q.config import InferenceClsConfig


class ImagePreprocessor(Protocol):
    """What infer, evaluate, bench and quantize call: Preprocessor and FastPreprocessor both honour it."""

    transform_ops: tuple
    output_dtype: np.dtype
    reads_grey: bool  # whether it also takes H×W greyscale planes (`read_image(path, grey=True)`)

    def __call__(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """One RGB uint8 HWC image → the model's contiguous CHW input (into `out` when given)."""
        ...

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Images → an (N, C, H, W) array; every image must come out the same size."""
        ...

    def fill_batch(self, images: Sequence[np.ndarray], out: np.ndarray) -> bool:
        """Greyscale images → out[:len(images)] in one pass when it can; False (nothing written) otherwise."""
        ...


def reference_preprocessor(config: InferenceClsConfig) -> Preprocessor:
    """The op-by-op Preprocessor of an `inference_cls.yaml` (what compile_plan compiles)."""
    return Preprocessor(config.transform_ops, source=f"{config.source}: PreProcess")


def build_preprocessor(config: InferenceClsConfig, fast: bool = True) -> ImagePreprocessor:
    """The preprocessing of an `inference_cls.yaml` loaded with `load_inference_cls_yaml`.

    With `fast`, the common resize → crop → normalize → CHW chain runs as one compiled plan
    (FastPreprocessor, bit-identical output); other chains, or `fast=False`, run op by op (Preprocessor).
    """
    reference = reference_preprocessor(config)
    if not fast:
        return reference
    return compile_plan(reference) or reference


__all__ = [
    "CV2_INTERPOLATIONS",
    "IMAGE_SUFFIXES",
    "list_images",
    "MAX_IMAGE_PIXELS",
    "PIL_INTERPOLATIONS",
    "FastPreprocessor",
    "ImagePreprocessor",
    "Preprocessor",
    "build_preprocessor",
    "compile_plan",
    "read_image",
    "reference_preprocessor",
]
