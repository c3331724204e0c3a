"""The one config module: typed, validated settings shared by every command.

Every YAML file goes through `load_yaml` (safe_load only) and every mapping through
`validate`, which turns pydantic errors into one line naming file, key and value, with a
"did you mean" suggestion for unknown keys.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from paddlecls_q.errors import ConfigError

BACKENDS = ("paddle", "ort", "openvino", "trt", "paddle-trt")
GPU_BACKENDS = ("trt", "paddle-trt")
Backend = Literal["paddle", "ort", "openvino", "trt", "paddle-trt"]
Device = Literal["cpu", "gpu"]

Model = TypeVar("Model", bound=BaseModel)


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...]) -> str:
    """A "; did you mean 'x'?" suffix when a close candidate exists, else ""."""
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    """Validate a CLI choice (case-insensitive) with a did-you-mean suggestion."""
    normalized = value.strip().strip("'\"").lower()
    if normalized not in allowed:
        raise ConfigError(f"unknown {what} {value!r}{did_you_mean(normalized, allowed)}; choose from {', '.join(allowed)}")
    return normalized


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are validated, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _key_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


def validate(model: type[Model], data: Any, source: str) -> Model:
    """Build `model` from `data`, or raise ConfigError "source: key 'a.b' ..." for the first problem."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        key = _key_path(first["loc"])
        if first["type"] == "extra_forbidden":
            parent = model
            for part in first["loc"][:-1]:
                field = parent.model_fields.get(str(part)) if isinstance(parent, type) else None
                annotation = getattr(field, "annotation", None)
                parent = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
            known = list(parent.model_fields) if parent is not None else []
            name = str(first["loc"][-1])
            raise ConfigError(f"{source}: unknown key {key!r}{did_you_mean(name, known)}") from None
        message = first["msg"].removeprefix("Value error, ")
        where = f"key {key!r}" if key else "value"
        raise ConfigError(f"{source}: {where}: {message} (got {first.get('input')!r})") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with yaml.safe_load; every failure is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))?\s*$")


def parse_scale(value: float | int | str) -> float:
    """Parse NormalizeImage's `scale` ("1.0/255.0", "0.00392157" or a number) without eval."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _FRACTION.match(str(value))
    if not match or (match.group(2) is not None and float(match.group(2)) == 0):
        raise ValueError(f"scale must be a number or 'a/b', got {value!r}")
    numerator = float(match.group(1))
    return numerator / float(match.group(2)) if match.group(2) else numerator


# ---- inference_cls.yaml (PaddleClas's deploy config) -------------------------------------------


class ResizeImageOp(StrictModel):
    resize_short: int | None = Field(default=None, gt=0)
    size: int | tuple[int, int] | None = None
    interpolation: Literal["nearest", "bilinear", "bicubic", "area", "lanczos", "random"] | None = None
    backend: Literal["cv2", "pil"] = "cv2"
    return_numpy: bool = True

    @model_validator(mode="after")
    def _one_size(self) -> ResizeImageOp:
        if self.resize_short is None and self.size is None:
            raise ValueError("ResizeImage needs resize_short or size")
        sizes = [self.size] if isinstance(self.size, int) else list(self.size or [])
        if any(s <= 0 for s in sizes):
            raise ValueError(f"ResizeImage size must be positive, got {self.size}")
        return self


class CropImageOp(StrictModel):
    size: int | tuple[int, int]

    @field_validator("size")
    @classmethod
    def _positive(cls, size: int | tuple[int, int]) -> int | tuple[int, int]:
        if min([size] if isinstance(size, int) else size) <= 0:
            raise ValueError(f"CropImage size must be positive, got {size}")
        return size


class NormalizeImageOp(StrictModel):
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    order: Literal["chw", "hwc", ""] = "chw"
    channel_num: Literal[3, 4] = 3
    output_fp16: bool = False

    @field_validator("scale", mode="before")
    @classmethod
    def _scale(cls, value: Any) -> float:
        return parse_scale(value)

    @field_validator("std")
    @classmethod
    def _nonzero_std(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if 0 in std:
            raise ValueError("std must not contain 0")
        return std


class ToCHWImageOp(StrictModel):
    pass


TRANSFORM_OPS: dict[str, type[StrictModel]] = {
    "ResizeImage": ResizeImageOp,
    "CropImage": CropImageOp,
    "NormalizeImage": NormalizeImageOp,
    "ToCHWImage": ToCHWImageOp,
}


class InferenceClsConfig(StrictModel):
    """What paddlecls-q uses of an `inference_cls.yaml`: the preprocessing ops and the top-k setup."""

    transform_ops: tuple[StrictModel, ...]
    topk: int = 5
    class_id_map_file: str | None = None
    source: Path


def _parse_transform_op(item: Any, index: int, source: str) -> StrictModel:
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(f"{source}: key 'PreProcess.transform_ops.{index}': expected one op name, got {item!r}")
    (name, params), = item.items()
    if name not in TRANSFORM_OPS:
        raise ConfigError(
            f"{source}: unsupported preprocessing op {name!r} in PreProcess.transform_ops"
            f"{did_you_mean(name, list(TRANSFORM_OPS))}; supported: {', '.join(TRANSFORM_OPS)}"
        )
    return validate(TRANSFORM_OPS[name], params or {}, f"{source}: PreProcess.transform_ops.{index}.{name}")


def load_inference_cls_yaml(path: str | Path) -> InferenceClsConfig:
    """Parse an `inference_cls.yaml` (PaddleClas deploy format) into validated preprocessing ops."""
    path = Path(path)
    data = load_yaml(path)
    source = str(path)
    preprocess = data.get("PreProcess")
    if not isinstance(preprocess, dict) or not isinstance(preprocess.get("transform_ops"), list):
        raise ConfigError(f"{source}: missing key 'PreProcess.transform_ops'")
    ops = tuple(_parse_transform_op(item, i, source) for i, item in enumerate(preprocess["transform_ops"]))
    topk_section = (data.get("PostProcess") or {}).get("Topk") or {}
    if not isinstance(topk_section, dict):
        raise ConfigError(f"{source}: key 'PostProcess.Topk' must be a mapping")
    topk = topk_section.get("topk", 5)
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 1:
        raise ConfigError(f"{source}: key 'PostProcess.Topk.topk': must be a positive integer (got {topk!r})")
    return InferenceClsConfig(
        transform_ops=ops, topk=topk, class_id_map_file=topk_section.get("class_id_map_file"), source=path
    )


# ---- runtime options shared by infer, eval and bench --------------------------------------------


class RuntimeOptions(StrictModel):
    """How to run a model: engine, device, threads and the precision switches of the seed's tables."""

    backend: Backend = "ort"
    device: Device = "cpu"
    threads: int = Field(default=1, ge=1, le=256)
    fp16: bool = False
    pinned_memory: bool = False
    cache_dir: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_device(cls, data: Any) -> Any:
        """GPU-only backends default to the GPU, the others to the CPU."""
        if isinstance(data, dict) and data.get("device") is None:
            data = {**data, "device": "gpu" if data.get("backend") in GPU_BACKENDS else "cpu"}
        return data

    @model_validator(mode="after")
    def _device_fits_backend(self) -> RuntimeOptions:
        if self.backend in GPU_BACKENDS and self.device != "gpu":
            raise ValueError(f"backend {self.backend!r} runs on the GPU only; use --device gpu")
        if self.device == "cpu" and (self.fp16 or self.pinned_memory):
            raise ValueError("--fp16 and --pinned-memory need --device gpu")
        return self
