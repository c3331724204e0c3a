"""The deployable folder: INT8 Paddle model, the FP32 folder's inference_cls.yaml and label file, one ONNX
file per engine (ort, openvino, and trt with TensorRT's Q/DQ placement)."""

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
from paddlecls_q.quantize.plan import QuantizationPlan, is_within
from paddlecls_q.runtime.convert import paddle_to_onnx


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


def assemble_folder(
    plan: QuantizationPlan, quantized: Path, folder: Path, keep: list[str], reduce_range: ReduceRange
) -> dict[str, Any]:
    """Copy the INT8 model, the FP32 folder's yaml and labels, and write the per-engine ONNX files."""
    from paddlecls_q import qdq_onnx, qdq_tensorrt

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(quantized / "inference.pdmodel", folder / "inference.pdmodel")
    shutil.copyfile(quantized / "inference.pdiparams", folder / "inference.pdiparams")
    align_weight_dtypes(folder / "inference.pdmodel", folder / "inference.pdiparams")
    shutil.copyfile(plan.files.inference_cls_yaml, folder / INFERENCE_CLS_YAML)
    label_file = load_inference_cls_yaml(plan.files.inference_cls_yaml).class_id_map_file
    if label_file:
        source = plan.files.folder / label_file
        if source.is_file() and is_within(source, plan.files.folder):
            (folder / label_file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / label_file)
    exported = paddle_to_onnx(
        folder / "inference.pdmodel", folder / "inference.pdiparams", quantized / "paddle2onnx.onnx"
    )
    summaries = qdq_onnx.write_engine_models(
        exported,
        folder,
        qdq_onnx.ENGINES,
        reduce_range,
        frozenset(keep),
    )
    tensorrt = qdq_tensorrt.write_tensorrt_model(exported, folder, frozenset(keep))
    return {**{engine: summary.to_dict() for engine, summary in summaries.items()}, tensorrt.engine: tensorrt.to_dict()}


def folder_size(path: Path) -> int:
    """Bytes of every file under `path`."""
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def quantized_weights(onnx_file: Path) -> list[str]:
    """Paddle weight names of the layers that run in INT8 in an ONNX Q/DQ file."""
    import onnx

    from paddlecls_q import qdq_onnx

    return qdq_onnx.quantized_layers(onnx.load(str(onnx_file)))
