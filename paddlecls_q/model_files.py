"""Find and check the files of a Paddle inference-model folder before any engine touches them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from paddlecls_q.errors import ModelFormatError

INFERENCE_CLS_YAML = "inference_cls.yaml"
QUANT_OP_PREFIXES = ("quantize_linear", "dequantize_linear", "fake_quantize", "fake_channel_wise", "fake_dequantize")
# Bytes per element of Paddle's VarType codes (BOOL, INT16, INT32, INT64, FP16, FP32, FP64, UINT8, INT8, BF16).
DTYPE_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 20: 1, 21: 1, 22: 2}


@dataclass(frozen=True)
class ModelFiles:
    """The files of one model folder, and what reading the program told us."""

    folder: Path
    program: Path
    params: Path
    is_quantized: bool
    legacy_format: bool

    @property
    def inference_cls_yaml(self) -> Path:
        return self.folder / INFERENCE_CLS_YAML

    def content_hash(self) -> str:
        """sha256 of program + params: the key for conversion and engine caches."""
        digest = hashlib.sha256()
        for path in (self.program, self.params):
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:32]


def _pick_program(folder: Path) -> Path:
    for name in ("inference.pdmodel", "model.pdmodel", "inference.json", "model.json"):
        if (folder / name).is_file():
            return folder / name
    others = sorted(folder.glob("*.pdmodel")) or sorted(p for p in folder.glob("*.json") if p.with_suffix(".pdiparams").exists())
    if len(others) == 1:
        return others[0]
    raise ModelFormatError(
        f"{folder}: no Paddle inference model (expected inference.pdmodel or inference.json with inference.pdiparams)"
    )


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
    """Locate program + params in `folder` and check they are a readable Paddle inference model.

    `program_name`/`params_name` (a config's model_filename/params_filename) name the files when
    they are not the usual pair with one stem.
    """
    folder = Path(folder)
    if not folder.exists():
        raise ModelFormatError(f"{folder}: model folder not found")
    if not folder.is_dir():
        raise ModelFormatError(f"{folder}: not a folder (pass the model folder, not a file)")
    program = folder / program_name if program_name else _pick_program(folder)
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
