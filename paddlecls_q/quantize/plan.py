"""The plan: every check of config, model, images and output against each other, before anything is written."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from paddlecls_q.config import QuantizeConfig, did_you_mean
from paddlecls_q.errors import ConfigError, InputError, ModelFormatError
from paddlecls_q.model_files import ModelFiles, find_model_files, load_inference_config
from paddlecls_q import fsutil
from paddlecls_q.preprocess.image_io import list_images
from paddlecls_q.quantize.onnx_ptq import LAYER_OP_TYPES
from paddlecls_q.quantize.paddle_patches import import_paddle, version_mismatches


@dataclass
class ProgramInfo:
    """What the checks need from the FP32 Paddle program (read from its protobuf, nothing run)."""

    feed_names: list[str]
    fetch_names: list[str]
    variables: set[str]
    op_inputs: dict[str, list[str]]  # op type -> input names of the ops of that type
    weights: list[str]  # parameter names ending in .w_0, for suggestions


@dataclass
class QuantizationPlan:
    """Everything `plan_quantization` checked and decided; the later steps read it (QAT adds warnings)."""

    config: QuantizeConfig
    method: str
    files: ModelFiles
    output_dir: Path
    force: bool
    image_folder: Path
    images: list[Path]
    images_found: int
    program: ProgramInfo
    keep_fp32_layers: list[str]
    distillation_nodes: list[str]
    eval_list: Path | None
    warnings: list[str]


def _read_program(program: Path) -> ProgramInfo:
    from paddle.base.proto import framework_pb2

    desc = framework_pb2.ProgramDesc.FromString(program.read_bytes())  # type: ignore[attr-defined]
    block = desc.blocks[0]
    persistable = {var.name for var in block.vars if var.persistable and var.name not in ("feed", "fetch")}
    feeds: list[str] = []
    fetches: list[str] = []
    by_type: dict[str, list[str]] = {}
    for op in block.ops:
        inputs = [name for slot in op.inputs for name in slot.arguments]
        outputs = [name for slot in op.outputs for name in slot.arguments]
        if op.type == "feed":
            feeds.extend(outputs)
        elif op.type == "fetch":
            fetches.extend(inputs)
        else:
            by_type.setdefault(op.type, []).extend(inputs)
    weights = sorted(
        {name for names in by_type.values() for name in names if name in persistable and name.endswith(".w_0")}
    )
    return ProgramInfo(feeds, fetches, {var.name for var in block.vars}, by_type, weights)


def _check_model(config: QuantizeConfig) -> ModelFiles:
    settings = config.Global
    program, params = settings.model_dir / settings.model_filename, settings.model_dir / settings.params_filename
    onnx_named = settings.model_filename if settings.model_filename.endswith(".onnx") else None
    # An ONNX model folder is found by itself: `format: onnx`, or a folder holding only inference.onnx / model.onnx.
    if settings.format == "onnx" or onnx_named or (settings.model_dir.is_dir() and not program.exists()):
        files = find_model_files(settings.model_dir, onnx_named)
        if settings.format == "onnx" and files.format != "onnx":
            raise ModelFormatError(
                f"{settings.model_dir}: Global.format is onnx but the folder holds no inference.onnx"
            )
        if files.format == "onnx":
            if files.is_quantized:
                raise ModelFormatError(f"{files.program}: the model is already quantized; give the FP32 model")
            load_inference_config(files)
            return files
    if settings.model_dir.is_dir():
        for path, key in ((program, "model_filename"), (params, "params_filename")):
            if not path.is_file():
                raise ModelFormatError(f"{path}: not found (Global.{key} names a file that is not in the model folder)")
    files = find_model_files(settings.model_dir, settings.model_filename, settings.params_filename)
    if not files.legacy_format:
        raise ModelFormatError(
            f"{files.program}: PaddleSlim quantizes legacy `.pdmodel` programs; re-export the model with "
            "FLAGS_enable_pir_api=0 (PaddleClas tools/export_model.py) to get inference.pdmodel"
        )
    if files.is_quantized:
        raise ModelFormatError(f"{files.folder}: the model is already quantized; give the FP32 model folder")
    load_inference_config(files)
    return files


def _read_onnx_graph(model_file: Path) -> ProgramInfo:
    """The same facts as `_read_program`, from an ONNX graph (layers are named by their weight initializer)."""
    import onnx

    graph = onnx.load(str(model_file)).graph
    stored = {tensor.name for tensor in graph.initializer}
    by_type: dict[str, list[str]] = {}
    for node in graph.node:
        by_type.setdefault(node.op_type, []).extend(node.input)
    weights = sorted({name for op in LAYER_OP_TYPES for name in by_type.get(op, []) if name in stored})
    feeds = [tensor.name for tensor in graph.input if tensor.name not in stored]
    variables = {name for node in graph.node for name in node.output} | stored
    return ProgramInfo(feeds, [tensor.name for tensor in graph.output], variables, by_type, weights)


def is_within(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or inside it (symlinks resolved)."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_output(output: Path, inputs: dict[str, Path], force: bool) -> Path:
    output = output.expanduser().resolve()
    for what, path in inputs.items():
        if is_within(output, path):
            raise ConfigError(
                f"output folder {output} is the {what} or inside it ({path}); write the INT8 model elsewhere"
            )
        if is_within(path, output):
            raise ConfigError(f"output folder {output} contains the {what} ({path}); write the INT8 model elsewhere")
    if output.exists() or output.is_symlink():
        if not output.is_dir():
            raise ConfigError(f"{output}: exists and is not a folder")
        if not force:
            raise ConfigError(f"{output}: already exists; pass --force to replace it")
    return output


def _pick_images(images: list[Path], wanted: int | None, seed: int, allow_few: bool, what: str) -> list[Path]:
    if wanted is None:
        return images
    if len(images) < wanted:
        if not allow_few:
            raise InputError(
                f"{images[0].parent}: only {len(images)} images, the config asks for {wanted} ({what}); "
                "add images, lower the count, or pass --allow-few"
            )
        return images
    picked = list(images)
    random.Random(seed).shuffle(picked)
    return sorted(picked[:wanted])


def _check_layers(names: list[str], program: ProgramInfo, op_types: tuple[str, ...], key: str) -> None:
    quantizable = {name for op_type in op_types for name in program.op_inputs.get(op_type, [])}
    for name in names:
        if name not in quantizable:
            candidates = sorted(quantizable & set(program.weights)) or sorted(quantizable)
            example = f"; e.g. {', '.join(candidates[:3])}" if candidates else ""
            raise ConfigError(
                f"{key}: layer {name!r} is not an input of a quantized op in the model"
                f"{did_you_mean(name, candidates)}{example}"
            )


def plan_quantization(
    config: QuantizeConfig,
    method: str | None = None,
    output_dir: str | Path | None = None,
    force: bool = False,
    allow_few: bool = False,
    sensitivity: bool = False,
) -> QuantizationPlan:
    """Check the config, model, images and output against each other; nothing is written."""
    method = config.resolve_method(method)
    settings = config.Global
    import_paddle()
    files = _check_model(config)
    if files.format == "onnx" and method != "ptq":
        raise ConfigError(
            f"{files.program}: QAT trains a Paddle program; an ONNX model is quantized with PTQ (Global.ptq_image_path)"
        )
    program = _read_onnx_graph(files.program) if files.format == "onnx" else _read_program(files.program)
    warnings: list[str] = version_mismatches()
    folder = config.image_folder(method)
    eval_list = config.accuracy.eval_list
    if sensitivity and eval_list is None:
        raise ConfigError("--sensitivity needs accuracy.eval_list in the config (labeled images to hold the budget)")
    if eval_list is not None and not eval_list.exists():
        raise InputError(f"{eval_list}: accuracy.eval_list not found")
    if output_dir is not None:
        output_dir = fsutil.checked_path(output_dir, "--output")
    output = output_dir or settings.output_dir or Path.cwd() / f"{settings.model_dir.resolve().name}_{method}"
    inputs = {"input model folder": settings.model_dir, "image folder": folder}
    if eval_list is not None:
        inputs["eval data"] = eval_list if eval_list.is_dir() else eval_list.parent
    output = _check_output(Path(output), inputs, force)

    if settings.input_list and list(settings.input_list) != program.feed_names:
        if len(settings.input_list) == 1 and len(program.feed_names) == 1:
            warnings.append(
                f"Global.input_list names {settings.input_list[0]!r} but the model's input is "
                f"{program.feed_names[0]!r}; feeding {program.feed_names[0]!r}"
            )
        else:
            raise ConfigError(
                f"Global.input_list {list(settings.input_list)} does not match the model's inputs {program.feed_names}"
            )
    if len(program.feed_names) != 1:
        raise ModelFormatError(
            f"{files.program}: a classifier has one image input, this model has {program.feed_names}"
        )

    keep = list(dict.fromkeys(settings.keep_fp32_layers + (config.PTQ.skip_tensor_list if method == "ptq" else ())))
    op_types = config.PTQ.quantize_op_types if method == "ptq" else config.QuantAware.quantize_op_types
    if files.format == "onnx":
        op_types = LAYER_OP_TYPES  # type: ignore[assignment]
    _check_layers(keep, program, op_types, "Global.keep_fp32_layers" if method == "qat" else "keep_fp32_layers")

    nodes = list(config.Distillation.node)
    missing = [node for node in nodes if node not in program.variables]
    if method == "qat" and missing:
        warnings.append(
            f"Distillation.node {missing} not in the model; distilling on the model's last layer output instead"
        )
        nodes = []

    found = list_images(folder)
    if method == "ptq":
        wanted: int | None = config.PTQ.calibration_images
        images = _pick_images(found, wanted, settings.seed, allow_few, "PTQ.calibration_images")
    else:
        wanted = config.TrainConfig.train_images
        images = _pick_images(found, wanted, settings.seed, allow_few, "TrainConfig.train_images")
        if len(images) < settings.qat_batch_size and not allow_few:
            raise InputError(
                f"{folder}: {len(images)} images are fewer than one batch (Global.qat_batch_size "
                f"{settings.qat_batch_size}); add images or pass --allow-few"
            )
    if len(images) < (wanted or 0):
        warnings.append(f"{folder}: using all {len(images)} images, fewer than the {wanted} configured (--allow-few)")
    return QuantizationPlan(
        config=config,
        method=method,
        files=files,
        output_dir=output,
        force=force,
        image_folder=folder,
        images=images,
        images_found=len(found),
        program=program,
        keep_fp32_layers=keep,
        distillation_nodes=nodes,
        eval_list=eval_list,
        warnings=warnings,
    )
