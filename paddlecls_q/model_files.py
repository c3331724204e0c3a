"""Find and check the files of a model folder (Paddle inference model or ONNX) before any engine touches them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from paddlecls_q.errors import ModelFormatError
from paddlecls_q.fsutil import read_bounded
from paddlecls_q.validation import shorten

INFERENCE_CLS_YAML = "inference_cls.yaml"
PADDLE_PROGRAMS = ("inference.pdmodel", "model.pdmodel", "inference.json", "model.json")
ONNX_PROGRAMS = ("inference.onnx", "model.onnx")
MAX_ONNX_BYTES = 2 << 30  # protobuf's limit for one message: larger ONNX models keep weights outside
MIN_ONNX_OPSET = 7  # the oldest opset ONNX Runtime guarantees; the newest is the pinned onnx package's
ONNX_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinear", "ConvInteger", "MatMulInteger")
QUANT_OP_PREFIXES = ("quantize_linear", "dequantize_linear", "fake_quantize", "fake_channel_wise", "fake_dequantize")
# Bytes per element of Paddle's VarType codes (BOOL, INT16, INT32, INT64, FP16, FP32, FP64, UINT8, INT8, BF16).
DTYPE_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 20: 1, 21: 1, 22: 2}


@dataclass(frozen=True)
class ModelFiles:
    """The files of one model folder, and what reading the program told us.

    For an ONNX model `program` and `params` are the same `.onnx` file: it holds graph and weights.
    """

    folder: Path
    program: Path
    params: Path
    is_quantized: bool
    legacy_format: bool

    @property
    def format(self) -> Literal["paddle", "onnx"]:
        """Which kind of model the folder holds: the one place that says it."""
        return "onnx" if self.program.suffix == ".onnx" else "paddle"

    @property
    def inference_cls_yaml(self) -> Path:
        return self.folder / INFERENCE_CLS_YAML

    def content_hash(self) -> str:
        """sha256 of program + params: the key for conversion and engine caches."""
        digest = hashlib.sha256()
        for path in dict.fromkeys((self.program, self.params)):
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:32]


def _pick_program(folder: Path) -> Path:
    """The Paddle program of `folder`, else its ONNX model: a Paddle model wins where both are present."""
    for name in PADDLE_PROGRAMS:
        if (folder / name).is_file():
            return folder / name
    others = sorted(folder.glob("*.pdmodel")) or sorted(p for p in folder.glob("*.json") if p.with_suffix(".pdiparams").exists())
    if len(others) == 1:
        return others[0]
    for name in ONNX_PROGRAMS:
        if (folder / name).is_file():
            return folder / name
    raise ModelFormatError(
        f"{folder}: no Paddle inference model or ONNX model (expected inference.pdmodel or inference.json with "
        "inference.pdiparams, or inference.onnx)"
    )


def _dims_text(shape: Any) -> str:
    return "[" + ", ".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim) + "]"


def _onnx_tensors(graph: Any) -> Iterator[Any]:
    """Every stored tensor of an ONNX graph: initializers and Constant values (paddle2onnx's weights), subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _onnx_tensors(subgraph)


def _read_onnx_model(path: Path) -> bool:
    """Parse and check an ONNX classifier once, before any engine loads it; return whether it is quantized.

    One image input (float32, NCHW with 1 or 3 channels), a first output of shape [N, classes], an
    opset the engines load, weights inside the file.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(read_bounded(path, MAX_ONNX_BYTES, "ONNX model"))
    except (DecodeError, ValueError, RuntimeError):
        model = None
    if model is None or not model.graph.node:
        raise ModelFormatError(f"{path}: not an ONNX model, or a truncated one (it does not parse as an ONNX ModelProto)")
    if any(tensor.data_location == onnx.TensorProto.EXTERNAL for tensor in _onnx_tensors(model.graph)):
        raise ModelFormatError(f"{path}: weights in external data files are not supported; save the model as one file")
    newest = onnx.defs.onnx_opset_version()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_ONNX_OPSET <= opset <= newest:
        found = "declares no ai.onnx opset" if opset is None else f"has opset {opset}"
        raise ModelFormatError(
            f"{path}: {found}; the engines here load opsets {MIN_ONNX_OPSET}..{newest}: re-export with one of them"
        )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        reason = next((line for line in str(error).splitlines() if line.strip()), "")
        raise ModelFormatError(f"{path}: invalid ONNX model: {shorten(reason, 160)}") from None
    weights = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    if len(inputs) != 1:
        names = ", ".join(shorten(value.name) for value in inputs)
        raise ModelFormatError(f"{path}: a classifier has one image input, this model has {len(inputs)} ({names})")
    image, kind = inputs[0], inputs[0].type.WhichOneof("value")
    tensor = image.type.tensor_type
    if kind != "tensor_type" or tensor.elem_type != onnx.TensorProto.FLOAT:
        type_names = {number: name.lower() for name, number in onnx.TensorProto.DataType.items()}
        what = type_names.get(tensor.elem_type, f"element type {tensor.elem_type}") if kind == "tensor_type" else kind
        raise ModelFormatError(f"{path}: input {shorten(image.name)} is {what}; the engines are fed float32 images")
    dims = tensor.shape.dim
    if not tensor.HasField("shape") or len(dims) != 4 or dims[1].dim_value not in (1, 3):
        shape = _dims_text(tensor.shape) if tensor.HasField("shape") else "unknown"
        raise ModelFormatError(
            f"{path}: input {shorten(image.name)} has shape {shape}; a classifier takes NCHW images [N, 1 or 3, H, W]"
        )
    if not model.graph.output:
        raise ModelFormatError(f"{path}: the graph has no output; a classifier outputs [N, classes]")
    output = model.graph.output[0].type.tensor_type
    if output.HasField("shape") and len(output.shape.dim) != 2:
        raise ModelFormatError(
            f"{path}: output {shorten(model.graph.output[0].name)} has shape {_dims_text(output.shape)}; "
            "a classifier outputs [N, classes]"
        )
    return any(node.op_type.startswith(ONNX_QUANT_OPS) for node in model.graph.node)


def _read_legacy_program(program: Path, params: Path) -> bool:
    """Parse a `.pdmodel`, check the params file holds every weight; return whether it is quantized."""
    from paddle.base.proto import framework_pb2
    from google.protobuf.message import DecodeError

    try:
        desc = framework_pb2.ProgramDesc.FromString(program.read_bytes())  # type: ignore[attr-defined]  # generated protobuf
    except (DecodeError, ValueError, RuntimeError):
        desc = None
    if desc is None or not desc.blocks:
        raise ModelFormatError(f"{program}: corrupt or truncated model file (not a Paddle program)")
    block = desc.blocks[0]
    op_types = {op.type for op in block.ops}
    if "feed" not in op_types or "fetch" not in op_types:
        raise ModelFormatError(f"{program}: not an inference model (no feed/fetch ops); export it with paddle.jit.save")
    # PaddleSlim stores the weights that feed dequantize_linear as int8 but still declares them float32.
    int8_weights = {
        name
        for op in block.ops
        if op.type == "dequantize_linear"
        for argument in op.inputs
        if argument.parameter == "X"
        for name in argument.arguments
    }
    weight_bytes = 0
    for var in block.vars:
        if not var.persistable or var.type.type != 7 or var.name in ("feed", "fetch"):  # 7: LOD_TENSOR
            continue
        # Paddle 3.x renamed the proto field `lod_tensor` to `dense_tensor`.
        holder = var.type.dense_tensor if hasattr(var.type, "dense_tensor") else var.type.lod_tensor
        tensor = holder.tensor
        numel = 1
        for dim in tensor.dims:
            numel *= max(dim, 0)
        weight_bytes += numel * (1 if var.name in int8_weights else DTYPE_BYTES.get(tensor.data_type, 4))
    if params.stat().st_size < weight_bytes:
        raise ModelFormatError(
            f"{params}: truncated params file ({params.stat().st_size} bytes, the model's weights need {weight_bytes})"
        )
    return any(op.startswith(QUANT_OP_PREFIXES) for op in op_types)


def find_model_files(folder: str | Path, program_name: str | None = None, params_name: str | None = None) -> ModelFiles:
    """Locate program + params in `folder` and check they are a readable Paddle inference model or ONNX model.

    `program_name`/`params_name` (a config's model_filename/params_filename) name the files when
    they are not the usual pair with one stem; an ONNX model has no params file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ModelFormatError(f"{folder}: model folder not found")
    if not folder.is_dir():
        raise ModelFormatError(f"{folder}: not a folder (pass the model folder, not a file)")
    program = folder / program_name if program_name else _pick_program(folder)
    if program.suffix == ".onnx":
        if not program.is_file():
            raise ModelFormatError(f"{program}: not found (model_filename names a file that is not in the model folder)")
        if program.stat().st_size == 0:
            raise ModelFormatError(f"{program}: empty file")
        return ModelFiles(folder, program, program, is_quantized=_read_onnx_model(program), legacy_format=False)
    params = folder / params_name if params_name else program.with_suffix(".pdiparams")
    if not program.is_file():
        raise ModelFormatError(f"{program}: not found (model_filename names a file that is not in the model folder)")
    if not params.is_file():
        raise ModelFormatError(f"{folder}: {params.name} is missing next to {program.name}")
    if program.stat().st_size == 0 or params.stat().st_size == 0:
        empty = program if program.stat().st_size == 0 else params
        raise ModelFormatError(f"{empty}: empty file")
    legacy = program.suffix == ".pdmodel"
    if legacy:
        quantized = _read_legacy_program(program, params)
    else:
        text = program.read_text(encoding="utf-8", errors="replace")
        quantized = "quantize_linear" in text
    return ModelFiles(folder=folder, program=program, params=params, is_quantized=quantized, legacy_format=legacy)


def require_inference_cls_yaml(files: ModelFiles) -> Path:
    """The folder's `inference_cls.yaml`, or an error that says where to get it."""
    if not files.inference_cls_yaml.is_file():
        raise ModelFormatError(
            f"{files.folder}: {INFERENCE_CLS_YAML} is missing; copy it from the FP32 model folder "
            "(quantized folders need the FP32 model's preprocessing config)"
        )
    return files.inference_cls_yaml
