"""The one config module: typed, validated settings shared by every command.

Every YAML file goes through `load_yaml` (safe_load only) and every mapping through
`validate`, which turns pydantic errors into one line naming file, key and value, with a
"did you mean" suggestion for unknown keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from paddlecls_q.errors import ConfigError
from paddlecls_q.fsutil import checked_path
from paddlecls_q.validation import (  # noqa: F401 - re-exported: every command imports these from config
    MAX_ECHO_CHARS,
    MAX_YAML_NODES,
    StrictModel,
    choice,
    did_you_mean,
    load_yaml,
    shorten,
    validate,
)

MAX_IMAGE_SIDE = 8192

# The value-bounds table: every count, size and seed a config or flag may give is one of these.
MAX_THREADS = 256
MAX_BATCH_SIZE = 4096
MAX_COUNT = 10**9
MAX_ITERATIONS = 10**6  # timed or warm-up calls of one bench cell (its timings are held in memory)
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Threads = Annotated[int, Field(ge=1, le=MAX_THREADS)]
BatchSize = Annotated[int, Field(ge=1, le=MAX_BATCH_SIZE)]
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]
Iterations = Annotated[int, Field(ge=1, le=MAX_ITERATIONS)]
WarmupIterations = Annotated[int, Field(ge=0, le=MAX_ITERATIONS)]
QuantizableOp = Literal[
    "conv2d",
    "depthwise_conv2d",
    "conv2d_transpose",
    "mul",
    "matmul",
    "matmul_v2",
    "elementwise_add",
    "elementwise_mul",
    "pool2d",
    "concat",
    "relu",
    "relu6",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "swish",
]

Backend = Literal["paddle", "ort", "openvino", "trt", "paddle-trt"]
BACKENDS: tuple[Backend, ...] = ("paddle", "ort", "openvino", "trt", "paddle-trt")
GPU_BACKENDS: tuple[Backend, ...] = ("trt", "paddle-trt")
Device = Literal["cpu", "gpu"]

_FRACTION = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?))?\s*$"
)


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
        sizes += [self.resize_short] if self.resize_short is not None else []
        if any(not 0 < s <= MAX_IMAGE_SIDE for s in sizes):
            raise ValueError(
                f"ResizeImage sizes must be between 1 and {MAX_IMAGE_SIDE}, got {self.size or self.resize_short}"
            )
        return self


class CropImageOp(StrictModel):
    size: int | tuple[int, int]

    @field_validator("size")
    @classmethod
    def _positive(cls, size: int | tuple[int, int]) -> int | tuple[int, int]:
        sizes = [size] if isinstance(size, int) else list(size)
        if any(not 0 < s <= MAX_IMAGE_SIDE for s in sizes):
            raise ValueError(f"CropImage size must be between 1 and {MAX_IMAGE_SIDE}, got {size}")
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

    def output_size(self) -> tuple[str, tuple[int, int]] | None:
        """The key of the op that fixes the image size the ops produce, and that (H, W); None when it varies.

        The last CropImage or sized ResizeImage decides; PaddleClas writes a pair as [w, h].
        """
        for index in reversed(range(len(self.transform_ops))):
            op = self.transform_ops[index]
            if isinstance(op, (CropImageOp, ResizeImageOp)):
                if op.size is None:  # resize_short only: the other side follows the image
                    return None
                width, height = (op.size, op.size) if isinstance(op.size, int) else op.size
                name = "CropImage" if isinstance(op, CropImageOp) else "ResizeImage"
                return f"PreProcess.transform_ops.{index}.{name}.size", (height, width)
        return None


def _parse_transform_op(item: Any, index: int, source: str) -> StrictModel:
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(f"{source}: key 'PreProcess.transform_ops.{index}': expected one op name, got {item!r}")
    ((name, params),) = item.items()
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
    threads: Threads = 1
    fp16: bool = False
    pinned_memory: bool = False
    cache_dir: Path | None = None
    gpu_id: int = Field(default=0, ge=0, le=63)
    batch_size: int = Field(default=1, ge=1, le=1024)

    @model_validator(mode="before")
    @classmethod
    def _default_device(cls, data: Any) -> Any:
        """GPU-only backends default to the GPU, the others to the CPU; `gpu:N` picks GPU N."""
        if isinstance(data, dict) and data.get("device") is None:
            data = {**data, "device": "gpu" if data.get("backend") in GPU_BACKENDS else "cpu"}
        if isinstance(data, dict) and isinstance(data.get("device"), str):
            device, gpu_id = parse_device(data["device"])
            data = {
                **data,
                "device": device,
                **({"gpu_id": gpu_id} if device == "gpu" and ":" in data["device"] else {}),
            }
        return data

    @model_validator(mode="after")
    def _device_fits_backend(self) -> RuntimeOptions:
        if self.backend in GPU_BACKENDS and self.device != "gpu":
            raise ValueError(f"backend {self.backend!r} runs on the GPU only; use --device gpu")
        if self.device == "cpu" and (self.fp16 or self.pinned_memory):
            raise ValueError("--fp16 and --pinned-memory need --device gpu")
        if self.backend == "ort" and self.device == "gpu" and (self.fp16 or self.pinned_memory or self.gpu_id):
            raise ValueError(
                "backend 'ort' on the GPU runs the model's own precision from pageable memory on GPU 0: "
                "--fp16, --pinned-memory and gpu:N are for trt and paddle-trt"
            )
        return self


def parse_device(value: str) -> tuple[str, int]:
    """'cpu' → ('cpu', 0); 'gpu' → ('gpu', 0); 'gpu:N' → ('gpu', N); anything else is a ValueError."""
    text = value.strip().strip("'\"").lower()
    name, _, index = text.partition(":")
    if name == "cpu" and not index:
        return "cpu", 0
    if name == "gpu" and (not index or index.isdigit()):
        return "gpu", int(index or 0)
    raise ValueError(f"unknown device {value!r}; choose cpu, gpu or gpu:N")


# ---- quantize config ----------------------------------------------------------------------------
# A validated superset of FastDeploy's auto-compression config (tools/common_tools/auto_compression):
# its Global / Distillation / QuantAware / TrainConfig / PTQ sections load unchanged, and
# paddlecls-q adds calibration counts, layers kept in FP32, BatchNorm freezing and `accuracy`.

QUANTIZE_METHODS = ("ptq", "qat")
CALIBRATION_METHODS = ("avg", "abs_max", "hist", "KL", "mse", "emd")
# Preprocess names a config may give; each maps to "the model's own inference_cls.yaml" (never eval'd).
PREPROCESS_NAMES = ("cls_image_preprocess", "inference_cls_yaml")
ACCURACY_ENGINES: tuple[Literal["paddle", "ort", "openvino"], ...] = ("paddle", "ort", "openvino")
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
    qat_batch_size: BatchSize = 32
    output_dir: Path | None = None
    keep_fp32_layers: tuple[str, ...] = ()
    seed: Seed = 0

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value.strip().lower() not in ("paddle", "onnx"):
            raise ValueError(f"format {value!r} is not supported: give 'paddle' or 'onnx'")
        return value.strip().lower()

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
    quantize_op_types: tuple[QuantizableOp, ...] = ("conv2d", "depthwise_conv2d")

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
    T_max: Count | None = None
    eta_min: float | None = Field(default=None, ge=0)
    boundaries: tuple[int, ...] | None = None
    values: tuple[float, ...] | None = None
    gamma: float | None = Field(default=None, gt=0)
    step_size: Count | None = None

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

    train_iter: Count | None = None
    epochs: Count | None = None
    learning_rate: LearningRate = LearningRate(learning_rate=1e-4)
    optimizer_builder: OptimizerBuilder = OptimizerBuilder()
    eval_iter: Count = 1000
    logging_iter: Count = 10
    origin_metric: float | None = None
    target_metric: float | None = None
    train_images: Count | None = None
    freeze_bn: bool = True
    # Distill on random-resized crops (a crop_scale fraction of the image's area, aspect 3/4..4/3) and
    # horizontal flips of the training images, drawn from Global.seed: the teacher labels every view,
    # so 100 unlabeled images become thousands of samples (docs/accuracy.md "## QAT"). Off by default: on
    # MobileNetV2 it lowered KL(FP32||INT8) on ONNX Runtime / OpenVINO but its top-1 stayed within noise.
    augment: bool = False
    crop_scale: tuple[float, float] = (0.35, 1.0)
    # `qdq`: the trained Q/DQ program, re-encoded for each engine (qdq_onnx). `ptq`: the trained FP32 weights
    # quantized by the PTQ section's own pipeline (every engine fix of PTQ applies, step 0 is the PTQ model),
    # training on half of the images; each engine gets the checkpoint (step 0 included) with the lowest
    # KL(FP32||INT8) on the other half (docs/accuracy.md "## QAT").
    export: Literal["qdq", "ptq"] = "qdq"
    # `moving_average`: ACT's scales, a moving average of batch maxima that starts from nothing. `calibrated`:
    # each activation's scale is fixed before training at its max |x| on the training images (PTQ's abs_max).
    activation_scales: Literal["moving_average", "calibrated"] = "moving_average"
    checkpoints: Count = 4  # export ptq: trained checkpoints compared with step 0, evenly spaced, the last included

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale {list(value)} must be [low, high] with 0 < low <= high <= 1")
        return value

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
    calibration_images: Count | None = None  # None: every image in the folder
    batch_size: BatchSize = 32
    hist_percent: float = Field(default=0.999, gt=0, le=1)
    # PaddleSlim 2.6 applies it only in AdaRound or outside the ONNX (Q/DQ) format, so here it changes nothing
    # (measured: the same weights file, byte for byte); kept so that configs that set it still load.
    bias_correction: bool = False
    weight_quantize_type: Literal["channel_wise_abs_max", "abs_max"] = "channel_wise_abs_max"
    # The ONNX Runtime / OpenVINO files: "onnxruntime" quantizes the FP32 ONNX graph with ONNX Runtime's
    # own quantizer on the same images (-0.56 / +0.11 on real MobileNetV2 where re-encoding PaddleSlim's
    # program, "paddleslim", lost 3.3 / 16.6: docs/accuracy.md). QAT always re-encodes its trained program.
    onnx_quantizer: Literal["onnxruntime", "paddleslim"] = "onnxruntime"
    # Weights in 7 bits ("reduced", depthwise convs excepted) for CPUs without VNNI, whose u8 x s8 kernels saturate; "auto" decides
    # from the quantizing machine's CPU flags (recorded in quantize_report.json). In the Paddle program "reduced" puts the
    # weights of convs with signed input on even int8 values, which oneDNN halves exactly without VNNI (-0.78 -> -0.33).
    weight_range: Literal["auto", "full", "reduced"] = "auto"
    # How the ONNX Runtime / OpenVINO file's int8 weights are rounded onto their grid: "nearest" as ONNX Runtime's
    # quantizer rounds, or "gptq" from the calibration images' activations (weight_rounding.py). On real MobileNetV2
    # GPTQ lowered the KL to FP32 by 10-12 % on three calibration sets but also top-1 on ONNX Runtime in all three
    # (docs/accuracy.md), so nearest stays the default.
    weight_rounding: Literal["gptq", "nearest"] = "nearest"
    quantize_op_types: tuple[QuantizableOp, ...] = (
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
    limit: Count | None = None
    batch_size: BatchSize = 32
    threads: Threads | None = None
    max_fp32_layers: Count = 8
    sensitivity_images: Count = 64


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


def _resolve_paths(data: dict[str, Any], base: Path, source: str) -> dict[str, Any]:
    """A relative path is taken from the config's folder; an input path that isn't there, from the working directory.

    The fallback is what FastDeploy's configs need (`./ResNet50_vd_infer/` beside the command, not the file).
    """

    def resolve(key: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        path = checked_path(value, f"{source}: key {key!r}").expanduser()
        if path.is_absolute():
            return str(path.resolve())
        beside_config = (base / path).resolve()
        if not key.endswith("output_dir") and not beside_config.exists() and (Path.cwd() / path).exists():
            return str((Path.cwd() / path).resolve())
        return str(beside_config)

    data = {**data}
    for section, keys in (
        ("Global", ("model_dir", "image_path", "qat_image_path", "ptq_image_path", "output_dir")),
        ("accuracy", ("eval_list",)),
    ):
        if isinstance(data.get(section), dict):
            data[section] = {
                **data[section],
                **{k: resolve(f"{section}.{k}", v) for k, v in data[section].items() if k in keys},
            }
    return data


def load_quantize_config(
    path: str | Path, on_warning: Callable[[str], None] | None = None, calibration: str = "paddlecls-q"
) -> QuantizeConfig:
    """Read and validate a quantize config (ours or FastDeploy's of any era); see `_resolve_paths` for paths.

    `calibration="fastdeploy"` replaces the PTQ image count, batch and op types by FastDeploy's own.
    """
    from paddlecls_q.fastdeploy_compat import translate

    path = Path(path)
    data = translate(load_yaml(path), str(path), on_warning, calibration)
    return validate(QuantizeConfig, _resolve_paths(data, path.resolve().parent, str(path)), str(path))
