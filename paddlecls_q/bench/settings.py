"""What a bench run measures: its validated settings, the models it compares, and which cells can run here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from paddlecls_q import registry
from paddlecls_q.config import (
    BACKENDS,
    GPU_BACKENDS,
    Backend,
    Device,
    Iterations,
    StrictModel,
    Threads,
    WarmupIterations,
    choice,
    parse_device,
    validate,
)
from paddlecls_q.errors import ConfigError, ModelFormatError
from paddlecls_q.model_files import ModelFiles, find_model_files
from paddlecls_q.registry import PRECISION_MODES, ModelEntry, PrecisionMode
from paddlecls_q.runtime import PADDLE_PROGRAM_BACKENDS

CPU_BACKENDS = tuple(backend for backend in BACKENDS if backend not in GPU_BACKENDS)
Mode = PrecisionMode
# The reduced-precision GPU modes each engine has a switch for in paddlecls-q.
GPU_MODE_SUPPORT = {"trt": {"int8+fp16", "int8+fp16+pm"}, "paddle-trt": {"int8+fp16", "int8+fp16+pm"}}
BACKEND_NAMES = {
    "paddle": "Paddle Inference",
    "ort": "ONNX Runtime",
    "openvino": "OpenVINO",
    "trt": "TensorRT",
    "paddle-trt": "Paddle-TensorRT",
}
# The CPU engines that paddlecls-q does not run on the GPU.
CPU_ONLY_BACKENDS = ("paddle", "openvino")
# Folder-name suffixes that don't change which registry model a folder holds.
_NAME_SUFFIXES = ("_infer", "_ptq", "_qat", "_int8", "_fp32", "_quant", "_quantized", "_ssld")


class BenchSettings(StrictModel):
    """What to measure and how; validated like every other config (ConfigError on bad values)."""

    backends: tuple[Backend, ...] = CPU_BACKENDS
    device: Device = "cpu"
    threads: Threads = 1
    iters: Iterations = 1000
    warmup: WarmupIterations = 100
    modes: tuple[Mode, ...] = PRECISION_MODES
    image: Path = registry.DEFAULT_PHOTO
    schedule: Literal["interleaved", "sequential"] = "interleaved"
    block: Iterations = 10
    bare_loop: bool = True
    cache_dir: Path | None = None
    gpu_id: int = Field(default=0, ge=0, le=63)
    # Throughput (measured only when batch sizes are given): images/s per batch size × thread count, and peak RSS.
    batch_sizes: tuple[Annotated[int, Field(ge=1, le=1024)], ...] = ()
    threads_list: tuple[Threads, ...] = ()
    throughput_images: Iterations = 64


def parse_choices(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A comma-separated list of choices (case-insensitive, duplicates dropped) or a ConfigError."""
    items = [item for item in str(text).split(",") if item.strip()]
    if not items:
        raise ConfigError(f"no {what} given; choose from {', '.join(allowed)}")
    return tuple(dict.fromkeys(choice(item, allowed, what) for item in items))


def make_settings(**values: Any) -> BenchSettings:
    """BenchSettings from CLI-style values; `backends`/`modes` may be comma-separated strings."""
    if isinstance(values.get("backends"), str):
        values["backends"] = parse_choices(values["backends"], BACKENDS, "backend")
    if isinstance(values.get("modes"), str):
        values["modes"] = parse_choices(values["modes"], PRECISION_MODES, "mode")
    for key, what in (("batch_sizes", "batch size"), ("threads_list", "thread count")):
        if isinstance(values.get(key), str):
            values[key] = parse_counts(values[key], what)
    if values.get("device") is not None:
        try:
            values["device"], values["gpu_id"] = parse_device(str(values["device"]))
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if values.get("backends") is None:
        values["backends"] = GPU_BACKENDS if values.get("device") == "gpu" else CPU_BACKENDS
    return validate(BenchSettings, {key: value for key, value in values.items() if value is not None}, "command line")


def parse_counts(text: str, what: str) -> tuple[int, ...]:
    """"1,8,32" → (1, 8, 32), duplicates dropped; a ConfigError naming the bad item."""
    counts: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            counts.append(int(item))
        except ValueError:
            raise ConfigError(f"{what} {item!r} is not a whole number (give e.g. 1,8,32)") from None
    if not counts:
        raise ConfigError(f"no {what} given (give e.g. 1,8,32)")
    return tuple(dict.fromkeys(counts))


@dataclass(frozen=True)
class BenchModels:
    """The FP32 model, its INT8 version (if any) and what the registry knows about them."""

    name: str
    fp32: ModelFiles
    int8: ModelFiles | None
    int8_missing: str = ""
    entry: ModelEntry | None = None
    published_fp32: bool = False  # the registry's own FP32 tarball: its published top-1 applies
    published_int8: bool = False  # the registry's own INT8 tarball: its published INT8 top-1 applies


def _name_key(name: str) -> str:
    key = name.lower().replace("-", "_")
    stripped = True
    while stripped:
        stripped = False
        for suffix in _NAME_SUFFIXES:
            if key.endswith(suffix) and len(key) > len(suffix):
                key, stripped = key[: -len(suffix)], True
    return key


def match_registry_model(folder_name: str) -> ModelEntry | None:
    """The registry model a folder name refers to ("ResNet50_vd_infer", "mobilenetv1_ssld_ptq", "MobileNetV1")."""
    key = _name_key(folder_name)
    for entry in registry.MODELS.values():
        names = [entry.name] + [artifact.folder for artifact in (entry.fp32, entry.quantized) if artifact]
        if any(_name_key(name) == key for name in names):
            return entry
    return None


def resolve_models(model_dir: Path | None, int8_dir: Path | None, model: str | None) -> BenchModels:
    """Check the model folders (`--model-dir [--int8-dir]` or `--model NAME`) before any engine loads."""
    if (model_dir is None) == (model is None):
        raise ConfigError("give exactly one of --model-dir DIR or --model NAME")
    entry: ModelEntry | None = None
    published_fp32 = published_int8 = False
    int8_missing = ""
    if model is None:
        assert model_dir is not None  # exactly one of the two, checked above
    else:
        entry = registry.get_model(model)
        model_dir = registry.model_dir(entry.name)
        if not model_dir.is_dir():
            raise ConfigError(
                f"model {entry.name!r} is not downloaded yet ({model_dir}); run `paddlecls-q download {entry.name}`"
            )
        published_fp32 = entry.bundled_dir is None and entry.fp32_top1 is not None
        if int8_dir is None:
            if entry.quantized is None:
                int8_missing = (
                    f"model {entry.name!r} has no prebuilt INT8 version; run `paddlecls-q quantize` and pass --int8-dir"
                )
            else:
                candidate = registry.model_dir(entry.name, quantized=True)
                if candidate.is_dir():
                    int8_dir, published_int8 = candidate, True
                else:
                    int8_missing = f"INT8 model not downloaded; run `paddlecls-q download {entry.name} --quantized`"
    fp32 = find_model_files(model_dir)
    if fp32.is_quantized:
        raise ModelFormatError(
            f"{model_dir}: --model-dir holds a quantized model; pass the FP32 model there and this one as --int8-dir"
        )
    if entry is None:
        entry = match_registry_model(Path(model_dir).resolve().name)
    int8 = None
    if int8_dir is not None:
        int8 = find_model_files(int8_dir)
        if not int8.is_quantized:
            raise ModelFormatError(
                f"{int8_dir}: --int8-dir is not a quantized model (no quantize/dequantize ops); make one with `paddlecls-q quantize`"
            )
    elif not int8_missing:
        int8_missing = "no INT8 model given (--int8-dir)"
    name = entry.name if model is not None and entry is not None else Path(model_dir).resolve().name
    return BenchModels(
        name=name,
        fp32=fp32,
        int8=int8,
        int8_missing=int8_missing,
        entry=entry,
        published_fp32=published_fp32,
        published_int8=published_int8 and int8 is not None,
    )


def not_available_reason(backend: str, mode: str, settings: BenchSettings, models: BenchModels) -> str:
    """Why this engine × precision can't run here, or "" when it can."""
    if mode != "fp32" and models.int8 is None:
        return models.int8_missing
    files = models.fp32 if mode == "fp32" else models.int8
    if backend in PADDLE_PROGRAM_BACKENDS and files is not None and files.format == "onnx":
        return f"{BACKEND_NAMES[backend]} reads Paddle programs; {files.folder.name} is an ONNX model"
    if backend in GPU_BACKENDS and settings.device != "gpu":
        return f"{BACKEND_NAMES[backend]} runs on the GPU only (--device gpu)"
    if backend in CPU_ONLY_BACKENDS and settings.device == "gpu":
        return f"{BACKEND_NAMES[backend]} runs on the CPU only in paddlecls-q"
    if mode in ("int8+fp16", "int8+fp16+pm"):
        if settings.device != "gpu":
            what = "FP16 kernels and pinned memory" if mode.endswith("+pm") else "FP16 kernels"
            return f"{what} need --device gpu (no FP16 on the CPU engines)"
        if mode not in GPU_MODE_SUPPORT.get(backend, set()):
            return f"{BACKEND_NAMES[backend]} has no {'pinned-memory' if mode.endswith('+pm') else 'FP16'} switch in paddlecls-q"
    return ""

