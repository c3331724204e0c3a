"""Quantize a PaddleClas model to INT8 (PaddleSlim PTQ or distillation QAT) into a deployable folder.

The flow lives in `pipeline` (read its docstring first); each step has its own module:

    plan            every check before anything is written
    images          finding the images (`list_images`) and preprocessing them
    ptq / qat       PaddleSlim post-training quantization / distillation QAT
    paddle_patches  every monkeypatch of Paddle/PaddleSlim internals, with the versions checked
    assemble        the deployable folder: INT8 model, FP32 yaml + labels, per-engine ONNX files
    accuracy        the accuracy budget and the per-layer sensitivity ranking
    quantize_report quantize_report.json
    progress        progress bars and Ctrl-C handling
    workspace       the hidden build folder, published by rename
"""

from __future__ import annotations

import os

# Paddle's C++ INFO lines ("New Executor is Running") drown the progress bars; read when paddle loads.
os.environ.setdefault("GLOG_minloglevel", "2")

from paddlecls_q.quantize.accuracy import EngineAccuracy  # noqa: E402
from paddlecls_q.quantize.assemble import align_weight_dtypes  # noqa: E402
from paddlecls_q.preprocess.image_io import list_images  # noqa: E402
from paddlecls_q.quantize.images import IMAGE_CACHE_BYTES, CalibrationImages  # noqa: E402
from paddlecls_q.quantize.pipeline import Message, quantize  # noqa: E402
from paddlecls_q.quantize.plan import QuantizationPlan, plan_quantization  # noqa: E402
from paddlecls_q.quantize.paddle_patches import BN_FUSE_PASSES, CHECKED_VERSIONS  # noqa: E402
from paddlecls_q.quantize.qat import SKIP_QUANT_SCOPE  # noqa: E402
from paddlecls_q.quantize.quantize_report import (  # noqa: E402
    PACKAGES,
    REPORT_FILE,
    REPORT_SCHEMA,
    REPORT_VERSION,
    QuantizeReport,
)
from paddlecls_q.runtime.convert import CONVERT_TIMEOUT_S, paddle_to_onnx  # noqa: E402

__all__ = [
    "BN_FUSE_PASSES",
    "CHECKED_VERSIONS",
    "CONVERT_TIMEOUT_S",
    "IMAGE_CACHE_BYTES",
    "PACKAGES",
    "REPORT_FILE",
    "REPORT_SCHEMA",
    "REPORT_VERSION",
    "SKIP_QUANT_SCOPE",
    "CalibrationImages",
    "EngineAccuracy",
    "Message",
    "QuantizationPlan",
    "QuantizeReport",
    "align_weight_dtypes",
    "list_images",
    "paddle_to_onnx",
    "plan_quantization",
    "quantize",
]
