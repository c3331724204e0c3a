"""The one model registry: known PaddleClas models, their tarballs and the seed's published figures."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from paddlecls_q.errors import ConfigError
from paddlecls_q.fsutil import checked_path, writable_folder

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
IMAGENET_LABEL_FILE = ASSETS_DIR / "imagenet1k_label_list.txt"
DEMO_MODEL_DIR = ASSETS_DIR / "demo_fashion_mnist"
DEMO_IMAGE = ASSETS_DIR / "images" / "fashion_mnist_test_0.png"
DEFAULT_PHOTO = ASSETS_DIR / "images" / "ILSVRC2012_val_00000010.jpeg"

DEFAULT_HOST = "https://bj.bcebos.com/paddlehub/fastdeploy"
HOME_ENV = "PADDLECLS_Q_HOME"

# Column order of the seed's latency tables.
PrecisionMode = Literal["fp32", "int8", "int8+fp16", "int8+fp16+pm"]
PRECISION_MODES: tuple[PrecisionMode, ...] = ("fp32", "int8", "int8+fp16", "int8+fp16+pm")


@dataclass(frozen=True)
class ReferenceFigures:
    """One row of the seed's benchmark tables (ms, mean of 1000 runs; None where the seed has None).

    Measured by FastDeploy on a Xeon Gold 6271C (1 thread) and a Tesla T4 with TensorRT 8.4.
    """

    backend: str
    device: str
    runtime_ms: tuple[float | None, float | None, float | None, float | None]
    end_to_end_ms: tuple[float | None, float | None, float | None, float | None]
    int8_top1: float

    @staticmethod
    def max_speedup(latencies_ms: tuple[float | None, ...]) -> float:
        """FP32 latency divided by the fastest INT8 variant, as the seed defines it."""
        fp32, int8 = latencies_ms[0], [ms for ms in latencies_ms[1:] if ms is not None]
        if fp32 is None:
            raise ValueError("the seed's tables always give an FP32 latency")
        return round(fp32 / min(int8), 2)


@dataclass(frozen=True)
class Artifact:
    """A downloadable tarball: where it lives, the folder it unpacks to, and its sha256 if published."""

    url: str
    folder: str
    sha256: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    """A model paddlecls-q knows by name."""

    name: str
    description: str
    input_name: str
    input_shape: tuple[int, int, int, int]
    num_classes: int
    fp32: Artifact | None = None
    quantized: Artifact | None = None
    quantization: str = "PTQ"
    fp32_top1: float | None = None
    reference: tuple[ReferenceFigures, ...] = field(default_factory=tuple)
    bundled_dir: Path | None = None


def _url(filename: str) -> str:
    return f"{DEFAULT_HOST}/{filename}"


MODELS: dict[str, ModelEntry] = {
    "ResNet50_vd": ModelEntry(
        name="ResNet50_vd",
        description="ResNet50_vd, ImageNet-1k, 224x224",
        input_name="x",
        input_shape=(1, 3, 224, 224),
        num_classes=1000,
        fp32=Artifact(_url("ResNet50_vd_infer.tgz"), "ResNet50_vd_infer"),
        quantized=Artifact(_url("resnet50_vd_ptq.tar"), "resnet50_vd_ptq"),
        fp32_top1=79.12,
        reference=(
            ReferenceFigures("trt", "gpu", (3.55, 0.99, 0.98, 1.06), (4.92, 2.28, 2.24, 2.23), 79.06),
            ReferenceFigures("paddle-trt", "gpu", (3.46, None, 0.87, 1.03), (4.48, None, 2.09, 2.10), 79.06),
            ReferenceFigures("ort", "cpu", (76.14, 35.43, None, None), (77.43, 41.90, None, None), 78.87),
            ReferenceFigures("paddle", "cpu", (76.21, 24.01, None, None), (80.60, 27.75, None, None), 78.55),
        ),
    ),
    "MobileNetV1_ssld": ModelEntry(
        name="MobileNetV1_ssld",
        description="MobileNetV1 (SSLD distilled), ImageNet-1k, 224x224",
        input_name="x",
        input_shape=(1, 3, 224, 224),
        num_classes=1000,
        fp32=Artifact(_url("MobileNetV1_ssld_infer.tgz"), "MobileNetV1_ssld_infer"),
        quantized=Artifact(_url("mobilenetv1_ssld_ptq.tar"), "mobilenetv1_ssld_ptq"),
        fp32_top1=77.89,
        reference=(
            ReferenceFigures("trt", "gpu", (0.91, 0.43, 0.49, 0.54), (2.19, 1.48, 1.57, 1.57), 76.86),
            ReferenceFigures("paddle-trt", "gpu", (0.88, None, 0.49, 0.51), (2.04, None, 1.47, 1.45), 76.86),
            ReferenceFigures("ort", "cpu", (30.53, 9.59, None, None), (34.02, 12.97, None, None), 75.09),
            ReferenceFigures("paddle", "cpu", (12.29, 4.68, None, None), (16.31, 7.42, None, None), 71.36),
        ),
    ),
    "demo": ModelEntry(
        name="demo",
        description="MobileNetV1 x0.25 trained on Fashion-MNIST, 32x32 (bundled, offline)",
        input_name="x",
        input_shape=(1, 3, 32, 32),
        num_classes=10,
        quantization="",
        bundled_dir=DEMO_MODEL_DIR,
    ),
}


def get_model(name: str) -> ModelEntry:
    """Look a model up by name (case-insensitive), with a suggestion when it is unknown."""
    for entry in MODELS.values():
        if entry.name.lower() == name.lower():
            return entry
    from paddlecls_q.config import did_you_mean

    raise ConfigError(f"unknown model {name!r}{did_you_mean(name, list(MODELS))}; known: {', '.join(MODELS)}")


def cache_home() -> Path:
    """Where downloads and conversions are cached: $PADDLECLS_Q_HOME, else the XDG cache folder."""
    if os.environ.get(HOME_ENV):
        return writable_folder(checked_path(os.environ[HOME_ENV], f"${HOME_ENV}"), f"${HOME_ENV}")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return writable_folder(Path(xdg) / "paddlecls-q", "the cache folder")


def model_dir(name: str, quantized: bool = False) -> Path:
    """The local folder of a registry model: bundled, or where `download` puts it in the cache."""
    entry = get_model(name)
    if entry.bundled_dir is not None:
        if quantized:
            raise ConfigError(f"model {entry.name!r} has no prebuilt quantized version; run `paddlecls-q quantize`")
        return entry.bundled_dir
    artifact = entry.quantized if quantized else entry.fp32
    if artifact is None:
        raise ConfigError(f"model {entry.name!r} has no prebuilt quantized version; run `paddlecls-q quantize`")
    return cache_home() / "models" / artifact.folder
