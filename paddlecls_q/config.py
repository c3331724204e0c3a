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


# ---- quantize config ----------------------------------------------------------------------------
# A validated superset of FastDeploy's auto-compression config (tools/common_tools/auto_compression):
# its Global / Distillation / QuantAware / TrainConfig / PTQ sections load unchanged, and
# paddlecls-q adds calibration counts, layers kept in FP32, BatchNorm freezing and `accuracy`.

QUANTIZE_METHODS = ("ptq", "qat")
CALIBRATION_METHODS = ("avg", "abs_max", "hist", "KL", "mse", "emd")
# Preprocess names a config may give; each maps to "the model's own inference_cls.yaml" (never eval'd).
PREPROCESS_NAMES = ("cls_image_preprocess", "inference_cls_yaml")
ACCURACY_ENGINES = ("paddle", "ort", "openvino")
_NONE_WORDS = ("none", "null", "~", "")


def _none_word_to_empty(value: Any) -> Any:
    """FastDeploy writes `skip_tensor_list: None`, which YAML reads as the string 'None'."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        return ()
    if isinstance(value, str):
        return (value,)
    return value


class QuantizeGlobal(StrictModel):
    """FastDeploy's `Global` section, plus where to write and which layers stay FP32."""

    model_dir: Path
    format: str = "paddle"
    model_filename: str = "inference.pdmodel"
    params_filename: str = "inference.pdiparams"
    image_path: Path | None = None
    qat_image_path: Path | None = None
    ptq_image_path: Path | None = None
    input_list: tuple[str, ...] = ()
    qat_preprocess: str = "cls_image_preprocess"
    ptq_preprocess: str = "cls_image_preprocess"
    qat_batch_size: int = Field(default=32, ge=1)
    output_dir: Path | None = None
    keep_fp32_layers: tuple[str, ...] = ()
    seed: int = 0

    @field_validator("format")
    @classmethod
    def _paddle_only(cls, value: str) -> str:
        if value.strip().lower() != "paddle":
            raise ValueError(
                f"format {value!r} is not supported: paddlecls-q quantizes Paddle inference models "
                "(convert ONNX models with x2paddle first)"
            )
        return "paddle"

    @field_validator("qat_preprocess", "ptq_preprocess")
    @classmethod
    def _known_preprocess(cls, value: str) -> str:
        if value not in PREPROCESS_NAMES:
            raise ValueError(
                f"unknown preprocess {value!r}{did_you_mean(value, PREPROCESS_NAMES)}; known: "
                f"{', '.join(PREPROCESS_NAMES)} (each means the model's own inference_cls.yaml)"
            )
        return value

    @field_validator("input_list", "keep_fp32_layers", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return _none_word_to_empty(value)


class DistillationSection(StrictModel):
    """Teacher (the FP32 model) → student distillation used by QAT."""

    alpha: float = Field(default=1.0, gt=0)
    loss: Literal["l2", "soft_label"] = "l2"
    node: tuple[str, ...] = ()

    @field_validator("node", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return _none_word_to_empty(value)


class QuantAwareSection(StrictModel):
    """PaddleSlim quant-aware training settings (ACT's `QuantAware`)."""

    use_pact: bool = False
    activation_bits: Literal[8] = 8
    weight_bits: Literal[8] = 8
    is_full_quantize: bool = False
    onnx_format: bool = True
    activation_quantize_type: Literal["moving_average_abs_max", "range_abs_max", "abs_max"] = "moving_average_abs_max"
    weight_quantize_type: Literal["channel_wise_abs_max", "abs_max"] = "channel_wise_abs_max"
    not_quant_pattern: tuple[str, ...] = ("skip_quant",)
    quantize_op_types: tuple[str, ...] = ("conv2d", "depthwise_conv2d")

    @field_validator("onnx_format")
    @classmethod
    def _onnx_format(cls, value: bool) -> bool:
        if not value:
            raise ValueError("onnx_format must be true: the engines read Q/DQ (ONNX-format) quantized models")
        return value


class LearningRate(StrictModel):
    """A constant rate, or a paddle.optimizer.lr schedule by class name."""

    type: Literal["Constant", "CosineAnnealingDecay", "PiecewiseDecay", "ExponentialDecay", "StepDecay"] = "Constant"
    learning_rate: float | None = Field(default=None, gt=0)
    T_max: int | None = Field(default=None, ge=1)
    eta_min: float | None = Field(default=None, ge=0)
    boundaries: tuple[int, ...] | None = None
    values: tuple[float, ...] | None = None
    gamma: float | None = Field(default=None, gt=0)
    step_size: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _number_is_constant(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"type": "Constant", "learning_rate": value}
        return value

    @model_validator(mode="after")
    def _required_parameters(self) -> LearningRate:
        required = {
            "Constant": ("learning_rate",),
            "CosineAnnealingDecay": ("learning_rate", "T_max"),
            "PiecewiseDecay": ("boundaries", "values"),
            "ExponentialDecay": ("learning_rate", "gamma"),
            "StepDecay": ("learning_rate", "step_size"),
        }[self.type]
        missing = [name for name in required if getattr(self, name) is None]
        if missing:
            raise ValueError(f"learning rate {self.type} needs {', '.join(missing)}")
        if self.type == "PiecewiseDecay" and len(self.values or ()) != len(self.boundaries or ()) + 1:
            raise ValueError("PiecewiseDecay needs one more value than boundaries")
        return self

    def paddle_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the paddle.optimizer.lr class (without `type`)."""
        return {name: value for name, value in self.model_dump(exclude={"type"}).items() if value is not None}


class OptimizerSpec(StrictModel):
    type: Literal["SGD", "Momentum", "Adam", "AdamW"] = "SGD"
    momentum: float | None = Field(default=None, ge=0, lt=1)


class OptimizerBuilder(StrictModel):
    optimizer: OptimizerSpec = OptimizerSpec()
    weight_decay: float | None = Field(default=None, ge=0)


class QatTrainConfig(StrictModel):
    """FastDeploy's `TrainConfig`, plus the number of training images and BatchNorm freezing."""

    train_iter: int | None = Field(default=None, ge=1)
    epochs: int | None = Field(default=None, ge=1)
    learning_rate: LearningRate = LearningRate(learning_rate=1e-4)
    optimizer_builder: OptimizerBuilder = OptimizerBuilder()
    eval_iter: int = Field(default=1000, ge=1)
    logging_iter: int = Field(default=10, ge=1)
    origin_metric: float | None = None
    target_metric: float | None = None
    train_images: int | None = Field(default=None, ge=1)
    freeze_bn: bool = True

    @model_validator(mode="after")
    def _length(self) -> QatTrainConfig:
        if self.train_iter is None and self.epochs is None:
            raise ValueError("TrainConfig needs train_iter or epochs")
        return self


class PtqSection(StrictModel):
    """FastDeploy's `PTQ` section, plus how many calibration images, in which batches."""

    # abs_max: on real MobileNetV2 `avg` (mean of per-image maxima) clips the residual stream and cost
    # 7.1 (Paddle) / 8.6 (ONNX Runtime) top-1 points; abs_max 0.8 / 3.3 (docs/accuracy.md).
    calibration_method: str = "abs_max"
    skip_tensor_list: tuple[str, ...] = ()
    calibration_images: int | None = Field(default=None, ge=1)  # None: every image of ptq_image_path
    batch_size: int = Field(default=32, ge=1)
    hist_percent: float = Field(default=0.999, gt=0, le=1)
    bias_correction: bool = False
    weight_quantize_type: Literal["channel_wise_abs_max", "abs_max"] = "channel_wise_abs_max"
    quantize_op_types: tuple[str, ...] = (
        "conv2d",
        "depthwise_conv2d",
        "conv2d_transpose",
        "mul",
        "matmul",
        "matmul_v2",
    )

    @field_validator("calibration_method")
    @classmethod
    def _method(cls, value: str) -> str:
        by_lower = {name.lower(): name for name in CALIBRATION_METHODS}
        if str(value).strip().lower() not in by_lower:
            raise ValueError(
                f"unknown calibration method {value!r}{did_you_mean(value, CALIBRATION_METHODS)}; "
                f"choose from {', '.join(CALIBRATION_METHODS)}"
            )
        return by_lower[str(value).strip().lower()]

    @field_validator("skip_tensor_list", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return _none_word_to_empty(value)


class AccuracySection(StrictModel):
    """Top-1 on a labeled list, FP32 vs INT8 on each CPU engine, and the allowed drop in points."""

    eval_list: Path | None = None
    max_drop: float = Field(default=1.0, ge=0)
    engines: tuple[Literal["paddle", "ort", "openvino"], ...] = ACCURACY_ENGINES
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=32, ge=1)
    threads: int | None = Field(default=None, ge=1)
    max_fp32_layers: int = Field(default=8, ge=1)
    sensitivity_images: int = Field(default=64, ge=1)


class QuantizeConfig(StrictModel):
    """One `quantize` config file; section names are FastDeploy's."""

    Global: QuantizeGlobal
    Distillation: DistillationSection = DistillationSection()
    QuantAware: QuantAwareSection = QuantAwareSection()
    TrainConfig: QatTrainConfig = QatTrainConfig(train_iter=500)
    PTQ: PtqSection = PtqSection()
    accuracy: AccuracySection = AccuracySection()

    def resolve_method(self, method: str | None) -> str:
        """`--method` (case and quotes ignored), else the one method whose section the file has."""
        if method is not None:
            return choice(method, QUANTIZE_METHODS, "method")
        has_ptq = "PTQ" in self.model_fields_set
        has_qat = bool({"QuantAware", "Distillation", "TrainConfig"} & self.model_fields_set)
        if has_ptq and has_qat:
            raise ConfigError(
                "the config has a PTQ section and QAT sections (QuantAware, Distillation, TrainConfig); "
                "pass --method ptq or qat"
            )
        return "qat" if has_qat else "ptq"

    def image_folder(self, method: str) -> Path:
        """The unlabeled image folder for calibration (PTQ) or training (QAT)."""
        folder = self.Global.ptq_image_path if method == "ptq" else self.Global.qat_image_path
        folder = folder or self.Global.image_path
        if folder is None:
            raise ConfigError(f"Global.{method}_image_path (or Global.image_path) is required for {method.upper()}")
        return folder


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in the file are relative to the file's folder."""

    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        path = Path(value).expanduser()
        return str((path if path.is_absolute() else base / path).resolve())

    data = {**data}
    for section, keys in (
        ("Global", ("model_dir", "image_path", "qat_image_path", "ptq_image_path", "output_dir")),
        ("accuracy", ("eval_list",)),
    ):
        if isinstance(data.get(section), dict):
            data[section] = {**data[section], **{k: resolve(v) for k, v in data[section].items() if k in keys}}
    return data


def load_quantize_config(path: str | Path) -> QuantizeConfig:
    """Read and validate a quantize config; relative paths are taken from the config file's folder."""
    path = Path(path)
    data = load_yaml(path)
    return validate(QuantizeConfig, _resolve_paths(data, path.resolve().parent), str(path))
