"""Backends behind one interface; each engine is imported only when its backend is asked for."""

from __future__ import annotations

import importlib
import warnings

from paddlecls_q.config import BACKENDS, RuntimeOptions, choice
from paddlecls_q.errors import InputWarning, ModelFormatError
from paddlecls_q.model_files import ModelFiles, read_quantize_report
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


# What full-range int8 weights cost on a CPU without VNNI, per CPU engine: real MobileNetV2 quantized with
# PTQ.weight_range: full, 900 val images on an AVX2 CPU (docs/accuracy.md, "A file quantized for VNNI").
_FULL_RANGE_COST = {
    "ort": "ONNX Runtime's u8 x s8 kernels saturate there (real MobileNetV2: -8.9 points of top-1 instead of 0.0)",
    "openvino": "OpenVINO's u8 x s8 kernels saturate there (real MobileNetV2: -13.8 points of top-1 instead of +0.1)",
    "paddle": "oneDNN halves those weights there and rounds them again (real MobileNetV2: -0.8 points instead of -0.3)",
}


def full_range_warning(files: ModelFiles, backend: str, device: str) -> str | None:
    """Why an INT8 folder quantized for a VNNI CPU loses accuracy on this one, if it does (None otherwise)."""
    from paddlecls_q.environment import vnni_flags

    if device != "cpu" or backend not in _FULL_RANGE_COST:
        return None
    encodings = read_quantize_report(files.folder).get("encodings")
    encoding = encodings.get(backend) if isinstance(encodings, dict) else None
    if not isinstance(encoding, dict) or encoding.get("full_range_weights") is not True or vnni_flags():
        return None
    return (
        f"{files.folder}: its {backend} file has full-range int8 weights (quantize_report.json, "
        f"encodings.{backend}: quantized on a CPU with VNNI, or with PTQ.weight_range: full) and this CPU has no VNNI: "
        f"{_FULL_RANGE_COST[backend]}; quantize again on this CPU, or with PTQ.weight_range: reduced"
    )


def create_runtime(files: ModelFiles, options: RuntimeOptions) -> Runtime:
    """Load `files` on the engine named by `options.backend`."""
    backend = choice(options.backend, BACKENDS, "backend")
    if backend in PADDLE_PROGRAM_BACKENDS and files.format == "onnx":
        readers = "|".join(name for name in BACKENDS if name not in PADDLE_PROGRAM_BACKENDS)
        raise ModelFormatError(f"{files.program}: is an ONNX model; use --backend {readers} ({backend} reads Paddle programs)")
    warning = full_range_warning(files, backend, options.device)
    if warning:
        warnings.warn(warning, InputWarning, stacklevel=2)
    module_name, class_name = _BACKEND_CLASSES[backend]
    runtime_class = getattr(importlib.import_module(module_name), class_name)
    return runtime_class(files, options)


__all__ = ["PADDLE_PROGRAM_BACKENDS", "BareCall", "ReportedThreads", "Runtime", "create_runtime", "full_range_warning"]
