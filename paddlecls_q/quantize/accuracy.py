"""The accuracy budget (FP32 vs INT8 top-1 on each engine) and the per-layer sensitivity ranking."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.quantize.images import CalibrationImages
from paddlecls_q.quantize.plan import QuantizationPlan


@dataclass
class EngineAccuracy:
    """FP32 vs INT8 top-1 (percent) of one engine on the eval list."""

    engine: str
    fp32_top1: float
    int8_top1: float
    drop: float
    count: int
    int8_images_per_s: float = 0.0
    fp32_images_per_s: float = 0.0


def eval_options(plan: QuantizationPlan, engine: str) -> RuntimeOptions:
    """CPU runtime options for measuring `engine` with `accuracy.threads` (default: every core)."""
    threads = plan.config.accuracy.threads or os.cpu_count() or 1
    return RuntimeOptions(backend=engine, device="cpu", threads=threads)  # type: ignore[arg-type]


def measure_accuracy(
    plan: QuantizationPlan,
    int8_folder: Path,
    fp32: dict[str, Any] | None,
    progress: bool,
    engines: tuple[str, ...] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """FP32 (cached across calls in `fp32`) and INT8 top-1 on each engine; returns (accuracy, fp32 results)."""
    from paddlecls_q.datasets import load_dataset
    from paddlecls_q.evaluate import evaluate_model

    accuracy = plan.config.accuracy
    if plan.eval_list is None:
        raise ValueError("measure_accuracy needs a plan with an eval_list")
    dataset = load_dataset(plan.eval_list, accuracy.limit)
    fp32 = dict(fp32 or {})
    rows = []
    for engine in engines or accuracy.engines:
        if engine == "paddle" and plan.files.format == "onnx":
            continue  # Paddle Inference does not read ONNX models
        options = eval_options(plan, engine)
        if engine not in fp32:
            fp32[engine] = evaluate_model(plan.files.folder, dataset, options, accuracy.batch_size, progress=progress)
        int8 = evaluate_model(int8_folder, dataset, options, accuracy.batch_size, progress=progress)
        reference = fp32[engine]
        rows.append(
            EngineAccuracy(
                engine=engine,
                fp32_top1=round(reference.top1, 4),
                int8_top1=round(int8.top1, 4),
                drop=round(reference.top1 - int8.top1, 4),
                count=int8.count,
                int8_images_per_s=round(int8.images_per_s, 1),
                fp32_images_per_s=round(reference.images_per_s, 1),
            )
        )
    int8_top1 = [row.int8_top1 for row in rows]
    worst_drop = max(row.drop for row in rows) if rows else 0.0
    result: dict[str, Any] = {
        "eval_list": str(plan.eval_list),
        "images": rows[0].count if rows else 0,
        "max_drop": accuracy.max_drop,
        "engines": [asdict(row) for row in rows],
        "worst_drop": worst_drop,
        "int8_engine_spread": round(max(int8_top1) - min(int8_top1), 4) if rows else 0.0,
    }
    result["within_budget"] = worst_drop <= accuracy.max_drop + 1e-9
    return result, fp32


def rank_layers(plan: QuantizationPlan, int8_folder: Path, images: CalibrationImages) -> list[dict[str, Any]]:
    """Each quantized layer's effect on the output: how much closer to FP32 the ORT model gets when only
    that layer runs in float (mean KL divergence of the class probabilities, FP32 as reference)."""
    import onnx
    import onnxruntime as ort

    from paddlecls_q import qdq_onnx
    from paddlecls_q.postprocess import to_probabilities
    from paddlecls_q.quantize.onnx_ptq import layer_name
    from paddlecls_q.runtime.convert import onnx_model_for

    count = min(plan.config.accuracy.sensitivity_images, len(images.paths))
    batch = images.batch(list(range(count)))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = os.cpu_count() or 1

    def probabilities(model: Any) -> np.ndarray:
        session = ort.InferenceSession(
            model.SerializeToString() if not isinstance(model, (str, Path)) else str(model),
            options,
            providers=["CPUExecutionProvider"],
        )
        name = session.get_inputs()[0].name
        return np.concatenate(
            [to_probabilities(session.run(None, {name: batch[i : i + 16]})[0]) for i in range(0, count, 16)]
        )

    def divergence(p: np.ndarray, q: np.ndarray) -> float:
        return float(np.mean(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), axis=1)))

    reference = probabilities(onnx_model_for(plan.files, "ort"))
    quantized = onnx.load(str(int8_folder / "inference.ort.onnx"))
    baseline = divergence(reference, probabilities(quantized))
    ranking: list[dict[str, Any]] = []
    for layer in qdq_onnx.quantized_layers(quantized):
        restored = divergence(reference, probabilities(qdq_onnx.dequantize_layers(quantized, {layer})))
        ranking.append(
            {
                "layer": layer_name(layer),
                "kl_gain": round(baseline - restored, 8),
                "kl_with_layer_fp32": round(restored, 8),
            }
        )
    ranking.sort(key=lambda row: -row["kl_gain"])
    return ranking
