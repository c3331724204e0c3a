"""Read images and preprocess them exactly as PaddleClas `deploy/python/preprocess.py` does.

The four ops of an `inference_cls.yaml` (ResizeImage, CropImage, NormalizeImage, ToCHWImage) give
the same numbers as PaddleClas's (tests/paddleclas_reference.py holds a literal port that the tests
compare against). Where PaddleClas would crash, pick at random or feed the model garbage, the
config is refused up front with a ConfigError instead:

- `interpolation: random` (PaddleClas picks bilinear or bicubic at random for each image, a
  training augmentation): inference and INT8 calibration need one fixed interpolation.
- `interpolation: area` with `backend: pil` (not in PaddleClas's PIL table, a KeyError there).
- ops in an order whose layout does not fit (e.g. NormalizeImage `order: chw` without
  ToCHWImage before it), no NormalizeImage (a uint8 input), or an output that is not CHW.

`return_numpy` of ResizeImage is accepted and ignored: the values that reach the model are the same.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Callable, Sequence

# Pillow's own bomb check only warns below 2 × 89.5 M pixels; 64 M pixels is already ~200 MB as BGR.
MAX_IMAGE_PIXELS = 64_000_000
# OpenCV then refuses bigger images from their header, before allocating (read when cv2 is first imported).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from paddlecls_q.config import (  # noqa: E402
    CropImageOp,
    InferenceClsConfig,
    NormalizeImageOp,
    ResizeImageOp,
    StrictModel,
    ToCHWImageOp,
)
from paddlecls_q.errors import ConfigError, InputError, InputWarning  # noqa: E402
from paddlecls_q.fsutil import MAX_IMAGE_BYTES, read_bounded  # noqa: E402

# warnings.catch_warnings swaps process-wide filters; concurrent readers (evaluate's thread pool) must take turns.
_PILLOW_WARNINGS_LOCK = threading.Lock()

# PaddleClas's UnifiedResize tables ('random' is refused, see the module docstring).
CV2_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "bicubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}
PIL_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "lanczos": Image.Resampling.LANCZOS,
    "hamming": Image.Resampling.HAMMING,
}


def read_image(path: str | os.PathLike[str], grey: bool = False) -> np.ndarray:
    """Decode an image file to RGB uint8 HWC, as PaddleClas's `cv2.imread(path)[:, :, ::-1]` does.

    OpenCV's default IMREAD_COLOR makes every image 3-channel 8-bit (grey is repeated, alpha is
    dropped, 16-bit is scaled down, EXIF orientation is applied). The bytes are read by Python so
    that non-ASCII paths work, and the pixel count is checked from the header before decoding.

    With `grey`, an 8-bit greyscale PNG comes back as its H×W plane instead (what the RGB image
    repeats three times; FastPreprocessor takes it directly, a quarter less work on small images).
    """
    try:
        data = _read_bytes(path)
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


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
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


Step = Callable[[np.ndarray], np.ndarray]


class Preprocessor:
    """PaddleClas `PreProcess.transform_ops`: an RGB uint8 HWC image in, the model's CHW input out."""

    def __init__(self, transform_ops: Sequence[StrictModel], source: str = "PreProcess") -> None:
        self.transform_ops = tuple(transform_ops)
        self.output_dtype = _check_op_order(self.transform_ops, source)
        self._steps = _build_steps(self.transform_ops, source)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """One image → a contiguous CHW float32 array (float16 with NormalizeImage `output_fp16`)."""
        return np.ascontiguousarray(self._run(image))

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Images → an (N, C, H, W) array; every image must come out the same size."""
        if len(images) == 0:
            raise InputError("no images to preprocess")
        first = self._run(images[0])
        if len(images) == 1:
            return np.ascontiguousarray(first)[np.newaxis]
        batch = np.empty((len(images), *first.shape), first.dtype)
        batch[0] = first
        for index, image in enumerate(images[1:], start=1):
            output = self._run(image)
            if output.shape != first.shape:
                raise InputError(
                    f"images preprocess to different shapes, {first.shape} (image 0) and {output.shape}"
                    f" (image {index}); batching needs CropImage or a fixed ResizeImage size"
                )
            batch[index] = output
        return batch

    def _run(self, image: np.ndarray) -> np.ndarray:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            got = f"shape {image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
            raise InputError(f"expected an RGB image as an HxWx3 uint8 array (see read_image), got {got}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise InputError(f"empty image of shape {image.shape}")
        for step in self._steps:
            image = step(image)
        return image


def build_preprocessor(config: InferenceClsConfig, fast: bool = True) -> Preprocessor:
    """The Preprocessor of an `inference_cls.yaml` loaded with `load_inference_cls_yaml`.

    With `fast`, the common resize → crop → normalize → CHW chain runs as one compiled plan
    (fast_preprocess.py) that gives bit-identical output; other chains run op by op.
    """
    reference = Preprocessor(config.transform_ops, source=f"{config.source}: PreProcess")
    if not fast:
        return reference
    from paddlecls_q.fast_preprocess import compile_plan  # it imports this module

    return compile_plan(reference) or reference


def _op_where(source: str, index: int, op: StrictModel) -> str:
    return f"{source}.transform_ops.{index}.{type(op).__name__.removesuffix('Op')}"


def _check_op_order(ops: tuple[StrictModel, ...], source: str) -> np.dtype:
    """Follow the image layout through the ops; ConfigError where PaddleClas would crash or feed garbage."""
    layout, channels, dtype = "hwc", 3, np.dtype(np.uint8)
    for index, op in enumerate(ops):
        where = _op_where(source, index, op)
        if isinstance(op, (ResizeImageOp, CropImageOp)):
            if layout != "hwc":
                raise ConfigError(f"{where}: must come before ToCHWImage (it works on HWC images)")
            if isinstance(op, ResizeImageOp) and op.backend == "pil" and dtype != np.uint8:
                raise ConfigError(f"{where}: backend 'pil' resizes uint8 images only; put it before NormalizeImage")
        elif isinstance(op, NormalizeImageOp):
            wanted = "chw" if op.order == "chw" else "hwc"
            if layout != wanted:
                fix = "put ToCHWImage before it" if wanted == "chw" else "put it before ToCHWImage or set order: chw"
                raise ConfigError(f"{where}: order {op.order!r} expects a {wanted.upper()} image; {fix}")
            if channels != 3:
                raise ConfigError(f"{where}: needs a 3-channel image but an earlier NormalizeImage made it 4-channel")
            channels, dtype = op.channel_num, np.dtype(np.float16 if op.output_fp16 else np.float32)
        elif isinstance(op, ToCHWImageOp):
            if layout != "hwc":
                raise ConfigError(f"{where}: the image is already CHW")
            layout = "chw"
        else:
            raise ConfigError(f"{where}: unsupported preprocessing op")
    if layout != "chw":
        raise ConfigError(f"{source}.transform_ops: the model needs a CHW image; add ToCHWImage")
    if dtype == np.uint8:
        raise ConfigError(f"{source}.transform_ops: no NormalizeImage; the model needs a float input")
    return dtype


def _build_steps(ops: tuple[StrictModel, ...], source: str) -> list[Step]:
    """One step per op, except NormalizeImage next to ToCHWImage, which run as one fast exact step."""
    steps: list[Step] = []
    index = 0
    while index < len(ops):
        op, following = ops[index], ops[index + 1] if index + 1 < len(ops) else None
        if isinstance(op, NormalizeImageOp) and op.order != "chw" and isinstance(following, ToCHWImageOp):
            steps.append(_NormalizeToCHW(op))
            index += 2
            continue
        if isinstance(op, ToCHWImageOp) and isinstance(following, NormalizeImageOp) and following.order == "chw":
            steps.append(_NormalizeToCHW(following))
            index += 2
            continue
        if isinstance(op, ResizeImageOp):
            steps.append(_Resize(op, _op_where(source, index, op)))
        elif isinstance(op, CropImageOp):
            steps.append(_Crop(op))
        elif isinstance(op, NormalizeImageOp):
            steps.append(_Normalize(op))
        else:
            steps.append(_to_chw)
        index += 1
    return steps


class _Resize:
    """ResizeImage: `resize_short` (wins over `size`, as in PaddleClas) or `size` int | [w, h]."""

    def __init__(self, op: ResizeImageOp, where: str) -> None:
        self.resize_short = op.resize_short
        self.size = (op.size, op.size) if isinstance(op.size, int) else op.size
        table = CV2_INTERPOLATIONS if op.backend == "cv2" else PIL_INTERPOLATIONS
        name = op.interpolation or "bilinear"
        if name == "random":
            raise ConfigError(
                f"{where}: interpolation 'random' picks bilinear or bicubic at random for each image (a training"
                " augmentation); inference and calibration need a fixed one: set 'bilinear' or 'bicubic'"
            )
        if name not in table:
            raise ConfigError(
                f"{where}: interpolation {name!r} does not exist for backend {op.backend!r};"
                f" choose from {', '.join(table)}"
            )
        self.backend = op.backend
        self.interpolation = table[name]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image_height, image_width = image.shape[:2]
        if self.resize_short is not None:
            # Same float expression and round-half-to-even as PaddleClas, so sizes match to the pixel.
            percent = float(self.resize_short) / min(image_width, image_height)
            width, height = round(image_width * percent), round(image_height * percent)
        else:
            width, height = self.size
        if self.backend == "pil":
            return np.asarray(Image.fromarray(image).resize((width, height), self.interpolation))
        return cv2.resize(image, (width, height), interpolation=self.interpolation)


class _Crop:
    """CropImage: a centre crop of `size` int | [w, h]."""

    def __init__(self, op: CropImageOp) -> None:
        self.width, self.height = (op.size, op.size) if isinstance(op.size, int) else op.size

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image_height, image_width = image.shape[:2]
        if image_height < self.height or image_width < self.width:
            raise InputError(
                f"CropImage of {self.width}x{self.height} (w x h) is larger than the {image_width}x{image_height}"
                " image it gets; check the image size and ResizeImage"
            )
        left, top = (image_width - self.width) // 2, (image_height - self.height) // 2
        return image[top : top + self.height, left : left + self.width, :]


class _Normalize:
    """NormalizeImage on its own: PaddleClas's float32 expression, `(x * scale - mean) / std`."""

    def __init__(self, op: NormalizeImageOp) -> None:
        self.order, self.channel_num = op.order, op.channel_num
        shape = (3, 1, 1) if op.order == "chw" else (1, 1, 3)
        self.scale = np.float32(op.scale)
        self.mean = np.array(op.mean, dtype=np.float32).reshape(shape)
        self.std = np.array(op.std, dtype=np.float32).reshape(shape)
        self.output_dtype = np.float16 if op.output_fp16 else np.float32

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = (image.astype(np.float32) * self.scale - self.mean) / self.std
        if self.channel_num == 4:
            axis = 0 if self.order == "chw" else 2
            pad_shape = list(image.shape)
            pad_shape[axis] = 1
            image = np.concatenate((image, np.zeros(pad_shape, np.float32)), axis=axis)
        return image.astype(self.output_dtype)


class _NormalizeToCHW:
    """NormalizeImage and ToCHWImage (either order) in one pass, bit-identical to running them apart.

    Normalizing is per channel and elementwise, so on uint8 input each channel is a 256-entry table
    computed with PaddleClas's float32 expression: the same values, ~20x faster than the arithmetic.
    """

    def __init__(self, op: NormalizeImageOp) -> None:
        self.channel_num = op.channel_num
        self.output_dtype = np.float16 if op.output_fp16 else np.float32
        self.scale = np.float32(op.scale)
        self.mean = np.array(op.mean, dtype=np.float32)
        self.std = np.array(op.std, dtype=np.float32)
        values = np.arange(256, dtype=np.float32)
        self.tables = [(values * self.scale - self.mean[c]) / self.std[c] for c in range(3)]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        output = np.zeros((self.channel_num, height, width), np.float32)
        if image.dtype == np.uint8:
            for channel, plane in enumerate(cv2.split(image)):
                cv2.LUT(plane, self.tables[channel], dst=output[channel])
        else:  # after another NormalizeImage: PaddleClas's arithmetic, one channel at a time
            for channel in range(3):
                plane = image[:, :, channel].astype(np.float32)
                output[channel] = (plane * self.scale - self.mean[channel]) / self.std[channel]
        return output if self.output_dtype == np.float32 else output.astype(self.output_dtype)


def _to_chw(image: np.ndarray) -> np.ndarray:
    """ToCHWImage: HWC → CHW."""
    return image.transpose((2, 0, 1))
