"""Backends behind one interface; each engine is imported only when its backend is asked for."""

from __future__ import annotations

import importlib

from paddlecls_q.config import BACKENDS, RuntimeOptions, choice
from paddlecls_q.errors import ModelFormatError
from paddlecls_q.model_files import ModelFiles
from paddlecls_q.runtime.base import BareCall, ReportedThreads, Runtime

_BACKEND_CLASSES = {
    "paddle": ("paddlecls_q.runtime.paddle_backend", "PaddleRuntime"),
    "ort": ("paddlecls_q.runtime.ort_backend", "OrtRuntime"),
    "openvino": ("paddlecls_q.runtime.openvino_backend", "OpenVinoRuntime"),
    "trt": ("paddlecls_q.runtime.trt_backend", "TensorRtRuntime"),
    "paddle-trt": ("paddlecls_q.runtime.paddle_trt_backend", "PaddleTrtRuntime"),
}
assert tuple(_BACKEND_CLASSES) == BACKENDS
# The engines that read a Paddle program; the others read ONNX (an ONNX model folder, or paddle2onnx's export).
PADDLE_PROGRAM_BACKENDS = ("paddle", "paddle-trt")


def create_runtime(files: ModelFiles, options: RuntimeOptions) -> Runtime:
    """Load `files` on the engine named by `options.backend`."""
    backend = choice(options.backend, BACKENDS, "backend")
    if backend in PADDLE_PROGRAM_BACKENDS and files.format == "onnx":
        readers = "|".join(name for name in BACKENDS if name not in PADDLE_PROGRAM_BACKENDS)
        raise ModelFormatError(f"{files.program}: is an ONNX model; use --backend {readers} ({backend} reads Paddle programs)")
    module_name, class_name = _BACKEND_CLASSES[backend]
    runtime_class = getattr(importlib.import_module(module_name), class_name)
    return runtime_class(files, options)


__all__ = ["PADDLE_PROGRAM_BACKENDS", "BareCall", "ReportedThreads", "Runtime", "create_runtime"]
