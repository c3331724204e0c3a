"""Test-only literal port of PaddleClas `deploy/python/preprocess.py` (the classification ops) and its image read.

Source: https://github.com/PaddlePaddle/PaddleClas deploy/python/preprocess.py and deploy/python/predict_cls.py,
Copyright (c) 2020 PaddlePaddle Authors, Apache License 2.0. Kept as close to the original as possible so the
tests compare paddlecls_q.preprocess with what PaddleClas computes; only the paddle/detection imports are gone,
and the undefined `logger` of the unknown-backend branch is replaced by an exception.
"""

# The original's idioms are kept on purpose, so that the port reads line by line against it.
# ruff: noqa: UP004, RUF015, RUF046, TRY002

import random
from functools import partial

import cv2
import numpy as np
from PIL import Image


def read_image(img_path):
    """predict_cls.py: `img = cv2.imread(img_path)`, then `img = img[:, :, ::-1]`."""
    img = cv2.imread(str(img_path))
    return img[:, :, ::-1]


def create_operators(params):
    assert isinstance(params, list), "operator config should be a list"
    ops = []
    for operator in params:
        assert isinstance(operator, dict) and len(operator) == 1, "yaml format error"
        op_name = list(operator)[0]
        param = {} if operator[op_name] is None else operator[op_name]
        op = globals()[op_name](**param)
        ops.append(op)
    return ops


def run_operators(ops, img):
    for op in ops:
        img = op(img)
    return img


class UnifiedResize(object):
    def __init__(self, interpolation=None, backend="cv2", return_numpy=True):
        _cv2_interp_from_str = {
            "nearest": cv2.INTER_NEAREST,
            "bilinear": cv2.INTER_LINEAR,
            "area": cv2.INTER_AREA,
            "bicubic": cv2.INTER_CUBIC,
            "lanczos": cv2.INTER_LANCZOS4,
            "random": (cv2.INTER_LINEAR, cv2.INTER_CUBIC),
        }
        _pil_interp_from_str = {
            "nearest": Image.NEAREST,
            "bilinear": Image.BILINEAR,
            "bicubic": Image.BICUBIC,
            "box": Image.BOX,
            "lanczos": Image.LANCZOS,
            "hamming": Image.HAMMING,
            "random": (Image.BILINEAR, Image.BICUBIC),
        }

        def _cv2_resize(src, size, resample):
            if isinstance(resample, tuple):
                resample = random.choice(resample)
            return cv2.resize(src, size, interpolation=resample)

        def _pil_resize(src, size, resample, return_numpy=True):
            if isinstance(resample, tuple):
                resample = random.choice(resample)
            if isinstance(src, np.ndarray):
                pil_img = Image.fromarray(src)
            else:
                pil_img = src
            pil_img = pil_img.resize(size, resample)
            if return_numpy:
                return np.asarray(pil_img)
            return pil_img

        if backend.lower() == "cv2":
            if isinstance(interpolation, str):
                interpolation = _cv2_interp_from_str[interpolation.lower()]
            # compatible with opencv < version 4.4.0
            elif interpolation is None:
                interpolation = cv2.INTER_LINEAR
            self.resize_func = partial(_cv2_resize, resample=interpolation)
        elif backend.lower() == "pil":
            if isinstance(interpolation, str):
                interpolation = _pil_interp_from_str[interpolation.lower()]
            elif interpolation is None:
                interpolation = Image.BILINEAR
            self.resize_func = partial(_pil_resize, resample=interpolation, return_numpy=return_numpy)
        else:
            raise ValueError(f"unknown backend {backend}")  # the original logs (with an undefined logger)

    def __call__(self, src, size):
        if isinstance(size, list):
            size = tuple(size)
        return self.resize_func(src, size)


class OperatorParamError(ValueError):
    pass


class ResizeImage(object):
    def __init__(self, size=None, resize_short=None, interpolation=None, backend="cv2", return_numpy=True):
        if resize_short is not None and resize_short > 0:
            self.resize_short = resize_short
            self.w = None
            self.h = None
        elif size is not None:
            self.resize_short = None
            self.w = size if type(size) is int else size[0]
            self.h = size if type(size) is int else size[1]
        else:
            raise OperatorParamError("invalid params for ReisizeImage for both 'size' and 'resize_short' are None")

        self._resize_func = UnifiedResize(interpolation=interpolation, backend=backend, return_numpy=return_numpy)

    def __call__(self, img):
        if isinstance(img, np.ndarray):
            img_h, img_w = img.shape[:2]
        else:
            img_w, img_h = img.size

        if self.resize_short is not None:
            percent = float(self.resize_short) / min(img_w, img_h)
            w = int(round(img_w * percent))
            h = int(round(img_h * percent))
        else:
            w = self.w
            h = self.h
        return self._resize_func(img, (w, h))


class CropImage(object):
    def __init__(self, size):
        if type(size) is int:
            self.size = (size, size)
        else:
            self.size = size  # (h, w)

    def __call__(self, img):
        w, h = self.size
        img_h, img_w = img.shape[:2]

        if img_h < h or img_w < w:
            raise Exception(
                f"The size({h}, {w}) of CropImage must be greater than size({img_h}, {img_w}) of image. "
                "Please check image original size and size of ResizeImage if used."
            )

        w_start = (img_w - w) // 2
        h_start = (img_h - h) // 2

        w_end = w_start + w
        h_end = h_start + h
        return img[h_start:h_end, w_start:w_end, :]


class NormalizeImage(object):
    def __init__(self, scale=None, mean=None, std=None, order="chw", output_fp16=False, channel_num=3):
        if isinstance(scale, str):
            scale = eval(scale)  # as in PaddleClas; only test literals reach it here
        assert channel_num in [3, 4], "channel number of input image should be set to 3 or 4."
        self.channel_num = channel_num
        self.output_dtype = "float16" if output_fp16 else "float32"
        self.scale = np.float32(scale if scale is not None else 1.0 / 255.0)
        self.order = order
        mean = mean if mean is not None else [0.485, 0.456, 0.406]
        std = std if std is not None else [0.229, 0.224, 0.225]

        shape = (3, 1, 1) if self.order == "chw" else (1, 1, 3)
        self.mean = np.array(mean).reshape(shape).astype("float32")
        self.std = np.array(std).reshape(shape).astype("float32")

    def __call__(self, img):
        if isinstance(img, Image.Image):
            img = np.array(img)

        assert isinstance(img, np.ndarray), "invalid input 'img' in NormalizeImage"

        img = (img.astype("float32") * self.scale - self.mean) / self.std

        if self.channel_num == 4:
            img_h = img.shape[1] if self.order == "chw" else img.shape[0]
            img_w = img.shape[2] if self.order == "chw" else img.shape[1]
            pad_zeros = np.zeros((1, img_h, img_w)) if self.order == "chw" else np.zeros((img_h, img_w, 1))
            img = (
                np.concatenate((img, pad_zeros), axis=0)
                if self.order == "chw"
                else np.concatenate((img, pad_zeros), axis=2)
            )
        return img.astype(self.output_dtype)


class ToCHWImage(object):
    def __init__(self):
        pass

    def __call__(self, img):
        if isinstance(img, Image.Image):
            img = np.array(img)

        return img.transpose((2, 0, 1))
