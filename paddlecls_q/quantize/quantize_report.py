"""What `quantize` did, as written to `quantize_report.json` (paddlecls_q/report.py renders bench results)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from paddlecls_q.environment import package_versions


REPORT_FILE = "quantize_report.json"
REPORT_SCHEMA = "paddlecls-q/quantize-report"
REPORT_VERSION = 1
PACKAGES = ("paddlecls-q", "paddlepaddle", "paddleslim", "paddle2onnx", "onnx", "onnxruntime", "openvino", "numpy")


@dataclass
class QuantizeReport:
    """Everything `quantize` did; written as quantize_report.json and printed by `--json`."""

    method: str
    model_dir: str
    output_dir: str
    config: dict[str, Any]
    packages: dict[str, str]
    image_folder: str
    images_used: int
    images_found: int
    seed: int
    keep_fp32_layers: list[str] = field(default_factory=list)
    quantized_layers: int = 0
    train_iterations: int | None = None
    final_distillation_loss: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    sizes_bytes: dict[str, int] = field(default_factory=dict)
    encodings: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] | None = None
    sensitivity: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    device: str = "cpu"  # where PTQ/QAT ran: cpu or gpu:N
    published_as: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"schema": REPORT_SCHEMA, "version": REPORT_VERSION, **asdict(self)}


def installed_package_versions() -> dict[str, str]:
    """The installed version of each package in PACKAGES, for the report."""
    return package_versions(PACKAGES, missing="not installed")
