"""The deployable folder: INT8 Paddle model, the FP32 folder's inference_cls.yaml and label file, one ONNX
file per engine (ort and openvino from ONNX Runtime's quantizer after PTQ, trt with TensorRT's Q/DQ placement)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


from paddlecls_q.config import load_inference_cls_yaml
from paddlecls_q.qdq_onnx import ReduceRange
from paddlecls_q.model_files import (
    INFERENCE_CLS_YAML,
    declared_tensor,
    framework_proto,
    read_params_tensors,
    weight_variables,
    weights_match,
)
from paddlecls_q.quantize.images import CalibrationImages
from paddlecls_q.quantize.onnx_ptq import quantize_onnx, write_onnx_runtime_file
from paddlecls_q.quantize.plan import QuantizationPlan, is_within
from paddlecls_q.quantize.progress import Progress
from paddlecls_q.runtime.convert import onnx_model_for, paddle_to_onnx


def align_weight_dtypes(program: Path, params: Path) -> int:
    """Make the program's weight dtypes say what the params file holds; returns how many changed.

    PaddleSlim's ONNX-format save stores quantized weights as int8 but leaves them declared
    FP32 in the program, so a size check of the params against the program fails. Nothing is
    changed unless the params walk (`model_files.read_params_tensors`) covers the file exactly
    and every size matches.
    """
    desc = framework_proto().ProgramDesc.FromString(program.read_bytes())
    variables = weight_variables(desc.blocks[0])
    stored = read_params_tensors(params, sorted(variables))
    if stored is None or not weights_match(variables, stored):
        return 0
    changed = 0
    for name, tensor in stored.items():
        declared = declared_tensor(variables[name])
        if declared.data_type != tensor.data_type:
            declared.data_type = tensor.data_type
            changed += 1
    if changed:
        program.write_bytes(desc.SerializeToString())
    return changed


def _copy_deploy_files(plan: QuantizationPlan, folder: Path) -> None:
    """The FP32 folder's inference_cls.yaml and its label file (only from inside the model folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plan.files.inference_cls_yaml, folder / INFERENCE_CLS_YAML)
    label_file = load_inference_cls_yaml(plan.files.inference_cls_yaml).class_id_map_file
    if label_file:
        source = plan.files.folder / label_file
        if source.is_file() and is_within(source, plan.files.folder):
            (folder / label_file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / label_file)


def assemble_onnx_folder(
    plan: QuantizationPlan, folder: Path, keep: list[str], images: CalibrationImages, progress: Progress, work: Path
) -> dict[str, Any]:
    """PTQ of an FP32 ONNX model: the INT8 `inference.onnx` (ONNX Runtime's quantizer, also the openvino
    file), ONNX Runtime's copy of it (`write_onnx_runtime_file`) and `inference.trt.onnx` (symmetric int8
    activations, as TensorRT requires)."""
    _copy_deploy_files(plan, folder)
    layers = frozenset(keep)
    ptq = plan.config.PTQ
    summary = quantize_onnx(
        plan.files.program, folder / "inference.onnx", images, layers, ptq.weight_range, progress, work,
        weight_rounding=ptq.weight_rounding,
    )  # fmt: skip
    shutil.copyfile(folder / "inference.onnx", folder / "inference.openvino.onnx")
    ort = write_onnx_runtime_file(folder / "inference.onnx", folder / "inference.ort.onnx", summary)
    tensorrt = quantize_onnx(
        plan.files.program, folder / "inference.trt.onnx", images, layers, "full", progress, work, tensorrt=True
    )
    return {
        "ort": ort.to_dict(),
        "openvino": {**summary.to_dict(), "engine": "openvino"},
        "trt": {**tensorrt.to_dict(), "engine": "trt"},
    }


def assemble_folder(
    plan: QuantizationPlan,
    quantized: Path,
    folder: Path,
    keep: list[str],
    reduce_range: ReduceRange,
    images: CalibrationImages,
    progress: Progress,
) -> dict[str, Any]:
    """Copy the INT8 model, the FP32 folder's yaml and labels, and write the per-engine ONNX files.

    PTQ (PTQ.onnx_quantizer: onnxruntime) quantizes the FP32 ONNX graph with ONNX Runtime's own
    quantizer for ONNX Runtime and OpenVINO; QAT re-encodes its trained Q/DQ program (`qdq_onnx`).
    """
    from paddlecls_q import qdq_onnx, qdq_tensorrt

    _copy_deploy_files(plan, folder)
    shutil.copyfile(quantized / "inference.pdmodel", folder / "inference.pdmodel")
    shutil.copyfile(quantized / "inference.pdiparams", folder / "inference.pdiparams")
    align_weight_dtypes(folder / "inference.pdmodel", folder / "inference.pdiparams")
    exported = paddle_to_onnx(
        folder / "inference.pdmodel", folder / "inference.pdiparams", quantized / "paddle2onnx.onnx"
    )
    encodings: dict[str, Any]
    if plan.method == "ptq" and plan.config.PTQ.onnx_quantizer == "onnxruntime":
        summary = quantize_onnx(
            onnx_model_for(plan.files, "ort"),
            folder / "inference.openvino.onnx",
            images,
            frozenset(keep),
            plan.config.PTQ.weight_range,
            progress,
            quantized / "onnx_ptq",
            weight_rounding=plan.config.PTQ.weight_rounding,
        )
        # OpenVINO runs the quantizer's file (measured: as accurate as NNCF's and 1.5x its FP32 here);
        # ONNX Runtime its copy with the last residual Add summed in float (onnx_ptq.write_onnx_runtime_file).
        ort = write_onnx_runtime_file(folder / "inference.openvino.onnx", folder / "inference.ort.onnx", summary)
        encodings = {"ort": ort.to_dict(), "openvino": {**summary.to_dict(), "engine": "openvino"}}
    else:
        summaries = qdq_onnx.write_engine_models(exported, folder, qdq_onnx.ENGINES, reduce_range, frozenset(keep))
        encodings = {engine: summary.to_dict() for engine, summary in summaries.items()}
    tensorrt = qdq_tensorrt.write_tensorrt_model(exported, folder, frozenset(keep))
    return {**encodings, tensorrt.engine: tensorrt.to_dict()}


def folder_size(path: Path) -> int:
    """Bytes of every file under `path`."""
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def quantized_weights(onnx_file: Path) -> list[str]:
    """Paddle weight names of the layers that run in INT8 in an ONNX Q/DQ file."""
    import onnx

    from paddlecls_q import qdq_onnx

    return qdq_onnx.quantized_layers(onnx.load(str(onnx_file)))
