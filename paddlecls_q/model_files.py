"""Find and check the files of a model folder (Paddle inference model or ONNX) before any engine touches them."""

from __future__ import annotations

import hashlib
import json
import signal
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from paddlecls_q.errors import ConfigError, InputError, ModelFormatError
from paddlecls_q.fsutil import read_bounded
from paddlecls_q.validation import shorten

if TYPE_CHECKING:
    from paddlecls_q.config import InferenceClsConfig

INFERENCE_CLS_YAML = "inference_cls.yaml"
PADDLE_PROGRAMS = ("inference.pdmodel", "model.pdmodel", "inference.json", "model.json")
ONNX_PROGRAMS = ("inference.onnx", "model.onnx")
MAX_ONNX_BYTES = 2 << 30  # protobuf's limit for one message: larger ONNX models keep weights outside
MIN_ONNX_OPSET = 7  # the oldest opset ONNX Runtime guarantees; the newest is the pinned onnx package's
ONNX_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinear", "ConvInteger", "MatMulInteger")
QUANT_OP_PREFIXES = ("quantize_linear", "dequantize_linear", "fake_quantize", "fake_channel_wise", "fake_dequantize")
# Bytes per element of Paddle's VarType codes (BOOL, INT16, INT32, INT64, FP16, FP32, FP64, UINT8, INT8, BF16).
DTYPE_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 20: 1, 21: 1, 22: 2}
DENSE_OPS = frozenset({"mul", "matmul", "matmul_v2", "fc"})
MAX_REPORT_BYTES = 16 << 20  # a quantize report is a few kB
MAX_PROGRAM_BYTES = 256 << 20  # the program only; weights are in the params file, walked without reading
_DENSE_TENSOR = 7  # VarType code of LOD_TENSOR / DENSE_TENSOR
_MAX_LOD_LEVELS = 16
_MAX_TENSOR_DESC_BYTES = 1 << 16


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
    input_shape: tuple[int, ...] | None = None  # the first feed's declared NCHW shape (-1: free); None if unknown
    dense_layers: int | None = None  # mul / matmul / fc ops in a legacy program (1: a CNN's classifier); None if unknown

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
    """The Paddle program of `folder`, else its ONNX model: a Paddle model wins where both are present.

    A folder or device under one of the names is returned too: `find_model_files` refuses it in one line.
    """
    for name in PADDLE_PROGRAMS:
        if (folder / name).exists():
            return folder / name
    others = sorted(folder.glob("*.pdmodel")) or sorted(p for p in folder.glob("*.json") if p.with_suffix(".pdiparams").exists())
    if len(others) == 1:
        return others[0]
    for name in ONNX_PROGRAMS:
        if (folder / name).exists():
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


def _read_onnx_model(path: Path) -> tuple[bool, tuple[int, ...]]:
    """Parse and check an ONNX classifier once, before any engine loads it; return whether it is quantized and its
    input's declared shape (-1 for a free dimension).

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
    quantized = any(node.op_type.startswith(ONNX_QUANT_OPS) for node in model.graph.node)
    return quantized, tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)


def framework_proto() -> Any:
    """Paddle's program protobuf module (`framework_pb2`), imported without losing the process's SIGTERM handler.

    Importing paddle installs glog's C++ failure handler for SIGTERM, which prints a "FatalError" trace and
    kills the process before Python's handler (the CLI's clean exit 143) runs; the handler that was there
    before comes back. Paddle installs it once, at its first import: this is the first import on every path.
    """
    before = signal.getsignal(signal.SIGTERM)
    from paddle.base.proto import framework_pb2

    if before is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, before)
    return framework_pb2


def declared_tensor(var: Any) -> Any:
    """The TensorDesc a program declares for a persistable variable (Paddle 3.x renamed `lod_tensor` to `dense_tensor`)."""
    holder = var.type.dense_tensor if hasattr(var.type, "dense_tensor") else var.type.lod_tensor
    return holder.tensor


def weight_variables(block: Any) -> dict[str, Any]:
    """The program's weights: persistable dense tensors other than feed/fetch, by name."""
    return {
        var.name: var
        for var in block.vars
        if var.persistable and var.type.type == _DENSE_TENSOR and var.name not in ("feed", "fetch")
    }


def read_params_tensors(params: Path, names: list[str]) -> dict[str, Any] | None:
    """The TensorDesc stored for each of `names` in a combined params file; None unless they cover it exactly.

    A combined `.pdiparams` holds the weights in name order, each as (version, LoD, TensorDesc, data);
    the data is skipped, not read, so a file from a hostile source costs a few reads per tensor.
    """
    tensor_desc = framework_proto().VarType.TensorDesc
    size = params.stat().st_size
    stored = {}
    with params.open("rb") as handle:

        def take(count: int) -> bytes:
            data = handle.read(count)
            if len(data) != count:
                raise ValueError("short read")
            return data

        try:
            for name in names:
                take(4)  # tensor version
                (lod_levels,) = struct.unpack("<Q", take(8))
                if lod_levels > _MAX_LOD_LEVELS:
                    return None
                for _ in range(lod_levels):
                    (lod_bytes,) = struct.unpack("<Q", take(8))
                    handle.seek(lod_bytes, 1)
                take(4)  # tensor desc version
                (desc_bytes,) = struct.unpack("<i", take(4))
                if not 0 < desc_bytes <= _MAX_TENSOR_DESC_BYTES:
                    return None
                tensor = tensor_desc.FromString(take(desc_bytes))
                numel = 1
                for dim in tensor.dims:
                    if dim < 0:
                        return None
                    numel *= dim
                data_bytes = numel * DTYPE_BYTES[tensor.data_type]
                if handle.tell() + data_bytes > size:
                    return None
                handle.seek(data_bytes, 1)
                stored[name] = tensor
        except (ValueError, KeyError, struct.error):  # DecodeError is a ValueError
            return None
        if handle.tell() != size:
            return None
    return stored


def _read_legacy_program(program: Path, params: Path) -> tuple[bool, tuple[int, ...] | None, int]:
    """Parse a `.pdmodel`, check the params file holds its weights (count, order, shapes); return whether it is
    quantized, its input's declared shape and how many dense layers (mul / matmul / fc ops) it has."""
    from google.protobuf.message import DecodeError

    framework_pb2 = framework_proto()
    try:
        desc = framework_pb2.ProgramDesc.FromString(read_bounded(program, MAX_PROGRAM_BYTES, "model file"))
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
    weights = weight_variables(block)
    weight_bytes = 0
    for name, var in weights.items():
        tensor = declared_tensor(var)
        numel = 1
        for dim in tensor.dims:
            numel *= max(dim, 0)
        weight_bytes += numel * (1 if name in int8_weights else DTYPE_BYTES.get(tensor.data_type, 4))
    if params.stat().st_size < weight_bytes:
        raise ModelFormatError(
            f"{params}: truncated params file ({params.stat().st_size} bytes, the model's weights need {weight_bytes})"
        )
    _check_params_match(program, params, weights)
    dense = sum(op.type in DENSE_OPS for op in block.ops)
    return any(op.startswith(QUANT_OP_PREFIXES) for op in op_types), _feed_shape(block), dense


def _squeezed(dims: Any) -> list[int]:
    return [int(dim) for dim in dims if dim != 1]


def weights_match(weights: dict[str, Any], stored: dict[str, Any]) -> str:
    """"" when every stored tensor has its declared shape, else the first difference as text.

    Size-1 dimensions are ignored: quantization scales are saved as [1, C] or [] where the program says [C] or [1].
    """
    for name, tensor in stored.items():
        declared = list(declared_tensor(weights[name]).dims)
        if -1 not in declared and _squeezed(declared) != _squeezed(tensor.dims):
            return f"weight {name!r} has shape {list(tensor.dims)} where the program declares {declared}"
    return ""


def _check_params_match(program: Path, params: Path, weights: dict[str, Any]) -> None:
    """A params file from another model (other weights, or the same ones with other shapes) fails here, not in the engine."""
    stored = read_params_tensors(params, sorted(weights))
    if stored is None:
        raise ModelFormatError(
            f"{params}: does not hold the {len(weights)} weights {program.name} declares "
            "(a params file from another model?)"
        )
    difference = weights_match(weights, stored)
    if difference:
        raise ModelFormatError(f"{params}: {difference} (a params file from another model?)")


def _feed_shape(block: Any) -> tuple[int, ...] | None:
    """The declared shape of the program's first input (the `feed` op with col 0)."""
    first = [op for op in block.ops if op.type == "feed" and all(a.i == 0 for a in op.attrs if a.name == "col")]
    names = [name for op in first[:1] for argument in op.outputs for name in argument.arguments]
    variables = {var.name: var for var in block.vars}
    if not names or names[0] not in variables:
        return None
    try:
        return tuple(int(dim) for dim in declared_tensor(variables[names[0]]).dims)
    except (AttributeError, ValueError):
        return None


def _check_regular(path: Path) -> None:
    if path.is_dir():
        raise ModelFormatError(f"{path}: is a folder, not a model file")
    if not path.is_file():
        raise ModelFormatError(f"{path}: not a regular file")


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
        if not program.exists():
            raise ModelFormatError(f"{program}: not found (model_filename names a file that is not in the model folder)")
        _check_regular(program)
        if program.stat().st_size == 0:
            raise ModelFormatError(f"{program}: empty file")
        quantized, onnx_shape = _read_onnx_model(program)
        return ModelFiles(folder, program, program, quantized, legacy_format=False, input_shape=onnx_shape)
    params = folder / params_name if params_name else program.with_suffix(".pdiparams")
    if not program.exists():
        raise ModelFormatError(f"{program}: not found (model_filename names a file that is not in the model folder)")
    if not params.exists():
        raise ModelFormatError(f"{folder}: {params.name} is missing next to {program.name}")
    for path in (program, params):
        _check_regular(path)
    if program.stat().st_size == 0 or params.stat().st_size == 0:
        empty = program if program.stat().st_size == 0 else params
        raise ModelFormatError(f"{empty}: empty file")
    legacy = program.suffix == ".pdmodel"
    input_shape, dense = None, None
    if legacy:
        quantized, input_shape, dense = _read_legacy_program(program, params)
    else:
        text = read_bounded(program, MAX_PROGRAM_BYTES, "model file").decode("utf-8", errors="replace")
        quantized = "quantize_linear" in text
    return ModelFiles(
        folder=folder,
        program=program,
        params=params,
        is_quantized=quantized,
        legacy_format=legacy,
        input_shape=input_shape,
        dense_layers=dense,
    )


def require_inference_cls_yaml(files: ModelFiles) -> Path:
    """The folder's `inference_cls.yaml`, or an error that says where to get it."""
    if not files.inference_cls_yaml.is_file():
        raise ModelFormatError(
            f"{files.folder}: {INFERENCE_CLS_YAML} is missing; copy it from the FP32 model folder "
            "(quantized folders need the FP32 model's preprocessing config)"
        )
    return files.inference_cls_yaml


def load_inference_config(files: ModelFiles, yaml_from: ModelFiles | None = None) -> InferenceClsConfig:
    """The folder's (or `yaml_from`'s) inference_cls.yaml, validated, and checked to make images of the size the
    model's input declares: a ConfigError naming the yaml key and both sizes, before any engine loads."""
    from paddlecls_q.config import load_inference_cls_yaml

    config = load_inference_cls_yaml(require_inference_cls_yaml(yaml_from or files))
    produced, shape = config.output_size(), files.input_shape
    if produced is None or shape is None or len(shape) != 4:
        return config
    key, (height, width) = produced

    def fits(dims: tuple[int, ...]) -> bool:
        return all(dim <= 0 or dim == size for dim, size in zip(dims, (height, width)))

    if not (fits(shape[2:]) or (shape[3] in (1, 3, 4) and fits(shape[1:3]))):  # NCHW, or NHWC
        raise ConfigError(
            f"{config.source}: key {key!r}: the preprocessing makes {height}x{width} images but the input of "
            f"{files.program} is {list(shape)}"
        )
    return config


def read_quantize_report(folder: Path) -> dict[str, Any]:
    """The `quantize_report.json` that `paddlecls-q quantize` leaves in its output folder ({} if none or unreadable)."""
    try:
        report = json.loads(read_bounded(Path(folder) / "quantize_report.json", MAX_REPORT_BYTES, "quantize report"))
    except (InputError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return {}
    return report if isinstance(report, dict) and report.get("schema") == "paddlecls-q/quantize-report" else {}
