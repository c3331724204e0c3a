"""Quantize a PaddleClas model to INT8 (PaddleSlim PTQ or distillation QAT) into a deployable folder.

The output folder holds the INT8 Paddle model, the FP32 folder's `inference_cls.yaml` and label
file, one ONNX Q/DQ graph per CPU engine in that engine's fastest encoding (`qdq_onnx`), and
`quantize_report.json`. It is built in a hidden temporary folder next to the output and renamed
into place only when complete, so an interrupted run leaves no output folder.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.config import (
    PREPROCESS_NAMES,
    QuantizeConfig,
    RuntimeOptions,
    did_you_mean,
    load_inference_cls_yaml,
)
from paddlecls_q.datasets import IMAGE_SUFFIXES
from paddlecls_q import fsutil
from paddlecls_q.errors import AccuracyBudgetError, ConfigError, InputError, ModelFormatError, PaddleClsQError
from paddlecls_q.model_files import INFERENCE_CLS_YAML, ModelFiles, find_model_files, require_inference_cls_yaml

# Paddle's C++ INFO lines ("New Executor is Running") drown the progress bars; read when paddle loads.
os.environ.setdefault("GLOG_minloglevel", "2")

REPORT_FILE = "quantize_report.json"
REPORT_SCHEMA = "paddlecls-q/quantize-report"
REPORT_VERSION = 1
PACKAGES = ("paddlecls-q", "paddlepaddle", "paddleslim", "paddle2onnx", "onnx", "onnxruntime", "openvino", "numpy")
# Preprocessed images kept in memory between passes (PTQ hist/KL read the data twice, QAT every epoch).
IMAGE_CACHE_BYTES = 1 << 30
CONVERT_TIMEOUT_S = 900
# Paddle's passes that fold BatchNorm into the conv before it (what `freeze_bn` does before QAT).
BN_FUSE_PASSES = (
    "conv_bn_fuse_pass",
    "depthwise_conv_bn_fuse_pass",
    "conv_transpose_bn_fuse_pass",
    "conv_eltwiseadd_bn_fuse_pass",
    "depthwise_conv_eltwiseadd_bn_fuse_pass",
)
SKIP_QUANT_SCOPE = "/skip_quant/"
# on_message(kind, text): kind is "warning" (also kept in the report) or "info" (progress of --sensitivity).
Message = Callable[[str, str], None]


# ---- results ------------------------------------------------------------------------------------


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
    published_as: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"schema": REPORT_SCHEMA, "version": REPORT_VERSION, **asdict(self)}


# ---- the plan: every check before anything is written --------------------------------------------


@dataclass
class _ProgramInfo:
    feed_names: list[str]
    fetch_names: list[str]
    variables: set[str]
    op_inputs: dict[str, list[str]]  # op type -> input names of the ops of that type
    weights: list[str]  # parameter names ending in .w_0, for suggestions


@dataclass
class _Plan:
    config: QuantizeConfig
    method: str
    files: ModelFiles
    output_dir: Path
    force: bool
    image_folder: Path
    images: list[Path]
    images_found: int
    program: _ProgramInfo
    keep_fp32_layers: list[str]
    distillation_nodes: list[str]
    eval_list: Path | None
    warnings: list[str]


def _import_paddle() -> None:
    """Import paddle and paddleslim once with their import-time UserWarnings (ccache, distutils) muted."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import paddle  # noqa: F401
        import paddleslim  # noqa: F401


def _read_program(program: Path) -> _ProgramInfo:
    from paddle.base.proto import framework_pb2

    desc = framework_pb2.ProgramDesc.FromString(program.read_bytes())
    block = desc.blocks[0]
    persistable = {var.name for var in block.vars if var.persistable and var.name not in ("feed", "fetch")}
    feeds, fetches, by_type = [], [], {}
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
    return _ProgramInfo(feeds, fetches, {var.name for var in block.vars}, by_type, weights)


def _check_model(config: QuantizeConfig) -> ModelFiles:
    settings = config.Global
    files = find_model_files(settings.model_dir)
    program, params = settings.model_dir / settings.model_filename, settings.model_dir / settings.params_filename
    for path, key in ((program, "model_filename"), (params, "params_filename")):
        if not path.is_file():
            raise ModelFormatError(f"{path}: not found (Global.{key} names a file that is not in the model folder)")
    if (program, params) != (files.program, files.params):
        files = ModelFiles(settings.model_dir, program, params, files.is_quantized, program.suffix == ".pdmodel")
    if not files.legacy_format:
        raise ModelFormatError(
            f"{files.program}: PaddleSlim quantizes legacy `.pdmodel` programs; re-export the model with "
            "FLAGS_enable_pir_api=0 (PaddleClas tools/export_model.py) to get inference.pdmodel"
        )
    if files.is_quantized:
        raise ModelFormatError(f"{files.folder}: the model is already quantized; give the FP32 model folder")
    load_inference_cls_yaml(require_inference_cls_yaml(files))
    return files


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_output(output: Path, inputs: dict[str, Path], force: bool) -> Path:
    output = output.expanduser().resolve()
    for what, path in inputs.items():
        if _is_within(output, path):
            raise ConfigError(
                f"output folder {output} is the {what} or inside it ({path}); write the INT8 model elsewhere"
            )
        if _is_within(path, output):
            raise ConfigError(f"output folder {output} contains the {what} ({path}); write the INT8 model elsewhere")
    if output.exists() or output.is_symlink():
        if not output.is_dir():
            raise ConfigError(f"{output}: exists and is not a folder")
        if not force:
            raise ConfigError(f"{output}: already exists; pass --force to replace it")
    return output


def list_images(folder: Path) -> list[Path]:
    """The image files under `folder` (recursive, sorted), or an InputError saying what is wrong."""
    if not folder.exists():
        raise InputError(f"{folder}: image folder not found")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (give a folder of unlabeled images)")
    files = sorted(path for path in folder.rglob("*") if path.is_file() and not path.name.startswith("."))
    images = [path for path in files if path.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        if not files:
            raise InputError(f"{folder}: image folder is empty")
        shown = ", ".join(path.name for path in files[:3]) + (", ..." if len(files) > 3 else "")
        raise InputError(
            f"{folder}: holds no images ({len(files)} other files: {shown}); "
            f"image types: {', '.join(sorted(IMAGE_SUFFIXES))}"
        )
    return images


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


def _check_layers(names: list[str], program: _ProgramInfo, op_types: tuple[str, ...], key: str) -> None:
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
    output_dir: Path | None = None,
    force: bool = False,
    allow_few: bool = False,
    sensitivity: bool = False,
) -> _Plan:
    """Check the config, model, images and output against each other; nothing is written."""
    method = config.resolve_method(method)
    settings = config.Global
    _import_paddle()
    files = _check_model(config)
    program = _read_program(files.program)
    warnings: list[str] = []
    folder = config.image_folder(method)
    eval_list = config.accuracy.eval_list
    if sensitivity and eval_list is None:
        raise ConfigError("--sensitivity needs accuracy.eval_list in the config (labeled images to hold the budget)")
    if eval_list is not None and not eval_list.exists():
        raise InputError(f"{eval_list}: accuracy.eval_list not found")
    output = (fsutil.checked_path(output_dir, "--output") if output_dir is not None else None) or settings.output_dir or Path.cwd() / f"{settings.model_dir.resolve().name}_{method}"
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
    return _Plan(
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


# ---- images -------------------------------------------------------------------------------------


class CalibrationImages:
    """The chosen images, decoded and preprocessed with the model's own inference_cls.yaml ops."""

    def __init__(self, paths: list[Path], model_folder: Path, preprocess_name: str) -> None:
        from paddlecls_q.preprocess import build_preprocessor

        if preprocess_name not in PREPROCESS_NAMES:
            raise ConfigError(
                f"unknown preprocess {preprocess_name!r}{did_you_mean(preprocess_name, PREPROCESS_NAMES)}"
            )
        self.paths = paths
        self.preprocess = build_preprocessor(load_inference_cls_yaml(model_folder / INFERENCE_CLS_YAML))
        self._cache: dict[int, np.ndarray] = {}
        self._cache_limit = 0

    def check(self, progress: _Progress) -> None:
        """Decode every image once: a non-image or broken file is an error before any work starts."""
        task = progress.add("reading images", len(self.paths))
        for index in range(len(self.paths)):
            self.tensor(index)
            progress.advance(task)
        progress.done(task)

    def tensor(self, index: int) -> np.ndarray:
        from paddlecls_q.preprocess import read_image

        _raise_if_interrupted()
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        path = self.paths[index]
        try:
            tensor = self.preprocess(read_image(path))
        except PaddleClsQError as error:
            raise InputError(f"{path}: not a usable image ({error})") from None
        except Exception as error:  # cv2/PIL raise assorted types on corrupt data
            raise InputError(f"{path}: not a usable image ({type(error).__name__}: {error})") from None
        if not self._cache_limit:
            self._cache_limit = max(1, IMAGE_CACHE_BYTES // max(tensor.nbytes, 1))
        if len(self._cache) < self._cache_limit:
            self._cache[index] = tensor
        return tensor

    def batch(self, indices: list[int] | np.ndarray) -> np.ndarray:
        return np.stack([self.tensor(int(i)) for i in indices]).astype(np.float32, copy=False)


# ---- progress and quiet third-party output -------------------------------------------------------


class _Progress:
    """rich progress bars on stderr, or nothing when progress is off."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        self.totals: dict[Any, int | None] = {}
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=False,
            )

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def add(self, description: str, total: int | None) -> Any:
        if self.bar is None:
            return None
        task = self.bar.add_task(description, total=total, note="")
        self.totals[task] = total
        return task

    def advance(self, task: Any, steps: int = 1, note: str | None = None) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, advance=steps, **({"note": note} if note is not None else {}))

    def done(self, task: Any) -> None:
        if self.bar is not None and task is not None:
            self.bar.update(task, completed=self.totals[task])


@contextlib.contextmanager
def _quiet_paddle(loss_sink: Callable[[float], None] | None = None) -> Iterator[None]:
    """Silence PaddleSlim's logs and Paddle's tqdm bars (ours replace them); feed ACT's loss to `loss_sink`."""
    import paddle.static.io  # noqa: F401  (its logger warns on every legacy-format load)
    import paddle.static.quantization.post_training_quantization as ptq_module
    import paddle.static.quantization.quantization_pass as pass_module

    saved_tqdm = {module: getattr(module, "tqdm", None) for module in (ptq_module, pass_module)}
    for module, original in saved_tqdm.items():
        if original is not None:
            module.tqdm = functools.partial(original, disable=True)
    loggers = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith(("paddleslim", "paddle.static", "paddle2onnx"))
    ]
    saved = [(logger, logger.level, list(logger.handlers), logger.propagate) for logger in loggers]

    class LossHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = re.search(r"loss: \[?([-+0-9.eE]+)", record.getMessage())
            if match and loss_sink is not None:
                loss_sink(float(match.group(1)))

    for logger in loggers:
        if logger.name.endswith("auto_compression.compressor") and loss_sink is not None:
            logger.handlers = [LossHandler()]
            logger.propagate = False
            logger.setLevel(logging.INFO)
        else:
            logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for module, original in saved_tqdm.items():
            if original is not None:
                module.tqdm = original
        for logger, level, handlers, propagate in saved:
            logger.setLevel(level)
            logger.handlers = handlers
            logger.propagate = propagate


@contextlib.contextmanager
def _static_mode(onednn: bool) -> Iterator[Any]:
    """Paddle static graph on the CPU in a fresh scope; oneDNN kernels make forward passes 4-5x faster
    (the calibrated scales match the plain kernels' to 5e-7, relative) but fail in training ("could not
    reshape a memory descriptor"), so QAT runs without them."""
    import paddle

    from paddle.base import core

    was_dynamic = paddle.in_dynamic_mode()
    flags = paddle.get_flags(["FLAGS_use_mkldnn", "FLAGS_paddle_num_threads"])
    paddle.enable_static()
    paddle.set_flags({"FLAGS_use_mkldnn": onednn})
    core.set_num_threads(os.cpu_count() or 1)
    scope = paddle.static.Scope()
    try:
        with paddle.static.scope_guard(scope), paddle.utils.unique_name.guard():
            yield paddle.static.Executor(paddle.CPUPlace())
    finally:
        paddle.set_flags({"FLAGS_use_mkldnn": flags["FLAGS_use_mkldnn"]})
        core.set_num_threads(int(flags["FLAGS_paddle_num_threads"]))
        if was_dynamic:
            paddle.disable_static()


def _seed_everything(seed: int) -> None:
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


_INTERRUPTED = threading.Event()


def _raise_if_interrupted() -> None:
    """Re-raise a Ctrl-C that third-party code swallowed (PaddleSlim has bare `except:` clauses)."""
    if _INTERRUPTED.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def _interrupts() -> Iterator[None]:
    """SIGINT and SIGTERM raise KeyboardInterrupt and stay raised: the data loaders and stage boundaries
    raise it again if a library swallowed it, so the temporary folder is always removed promptly."""

    def handler(signum: int, frame: Any) -> None:
        _INTERRUPTED.set()
        raise KeyboardInterrupt

    _INTERRUPTED.clear()
    previous: dict[int, Any] = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM):
            current = signal.getsignal(number)
            if current is signal.SIG_IGN:  # e.g. a background job of a non-interactive shell
                continue
            previous[number] = signal.signal(number, handler)
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


# ---- PTQ ----------------------------------------------------------------------------------------


class _DLPackTensor:
    """Lets numpy view a Paddle CPU tensor in place (np.from_dlpack) instead of copying it."""

    def __init__(self, tensor: Any) -> None:
        self.tensor = tensor

    def __dlpack__(self, stream: Any = None) -> Any:
        return self.tensor._to_dlpack()

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU


def _per_sample_abs_max_mean(scope: Any, name: str, zero_copy: dict[tuple[str, tuple[int, ...]], bool]) -> float | None:
    """mean over the batch of max |x| per sample, reading the tensor in place when that is safe.

    Copying every activation out of the scope (np.array) is what made calibration slow: page
    faults on fresh multi-GB arrays in this VM. The first time a tensor of a given shape is
    seen, its in-place view is compared with Paddle's own conversion; only if equal (plain
    layout, not a blocked oneDNN one) is the view used for later batches.
    """
    tensor = scope.find_var(name).get_tensor()
    shape = tuple(tensor.shape())
    if not shape or int(np.prod(shape)) == 0:
        values = np.array(tensor)
        if values.size == 0:
            return None
    else:
        key = (name, shape)
        if zero_copy.get(key) is False:
            values = np.array(tensor)
        else:
            view = np.from_dlpack(_DLPackTensor(tensor))
            if key not in zero_copy:
                values = np.array(tensor)
                zero_copy[key] = bool(view.shape == values.shape and np.array_equal(view, values))
            else:
                values = view
    values = values.reshape(values.shape[0] if values.ndim else 1, -1)
    return float(np.mean(np.maximum(values.max(axis=1), -values.min(axis=1))))


def _sample_avg_fast(self: Any) -> None:
    """Paddle's `PostTrainingQuantization._sample_avg` with the same numbers, several times cheaper.

    Paddle copies each quantized activation out of the scope, computes an unused whole-tensor
    abs-max and then |x| again per sample (two more temporaries). Here each activation is read
    in place where possible and reduced once per sample (max |x| = max(max x, -min x) exactly),
    in a thread pool (numpy releases the GIL in reductions).
    """
    from concurrent.futures import ThreadPoolExecutor

    from paddle.static.quantization import utils

    if self._quantized_threshold == {}:
        for name in self._quantized_weight_var_name:
            weights = utils.load_variable_data(self._scope, name)
            if self._weight_quantize_type == "abs_max":
                self._quantized_threshold[name] = float(np.max(np.abs(weights)))
                continue
            axis = 1 if self._weight_op_pairs[name] in utils._channelwise_quant_axis1_ops else 0
            per_channel = np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1)
            self._quantized_threshold[name] = [float(value) for value in np.max(np.abs(per_channel), axis=1)]
    zero_copy = self.__dict__.setdefault("_paddlecls_q_zero_copy", {})

    def sample(name: str) -> tuple[str, float | None]:
        return name, _per_sample_abs_max_mean(self._scope, name, zero_copy)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for name, average in pool.map(sample, sorted(self._quantized_act_var_name)):
            if average is None:
                self._zero_size_var_names.add(name)
            else:
                self._quantized_var_avg.setdefault(name, []).append(average)


@contextlib.contextmanager
def _fast_avg_sampling() -> Iterator[None]:
    """Swap in `_sample_avg_fast` while PaddleSlim calibrates, if Paddle still has the internals it relies on."""
    from paddle.static.quantization.post_training_quantization import PostTrainingQuantization

    original = getattr(PostTrainingQuantization, "_sample_avg", None)
    if original is None:
        yield
        return
    PostTrainingQuantization._sample_avg = _sample_avg_fast
    try:
        yield
    finally:
        PostTrainingQuantization._sample_avg = original


def _run_ptq(plan: _Plan, images: CalibrationImages, work: Path, keep: list[str], progress: _Progress) -> Path:
    from paddleslim.quant import quant_post_static

    ptq = plan.config.PTQ
    batch_size = min(ptq.batch_size, len(images.paths))
    batches = [
        list(range(start, min(start + batch_size, len(images.paths))))
        for start in range(0, len(images.paths), batch_size)
    ]
    passes = 2 if ptq.calibration_method in ("KL", "hist") else 1
    task = progress.add(f"calibrating ({ptq.calibration_method})", len(batches) * passes)
    feed = plan.program.feed_names[0]

    def data_loader() -> Iterator[dict[str, np.ndarray]]:
        for indices in batches:
            _raise_if_interrupted()
            yield {feed: images.batch(indices)}
            progress.advance(task)

    target = work / "ptq"
    _seed_everything(plan.config.Global.seed)
    with _static_mode(onednn=True) as executor, _quiet_paddle(), _fast_avg_sampling():
        quant_post_static(
            executor=executor,
            model_dir=str(plan.files.folder),
            quantize_model_path=str(target),
            data_loader=data_loader,
            model_filename=plan.files.program.name,
            params_filename=plan.files.params.name,
            save_model_filename="inference.pdmodel",
            save_params_filename="inference.pdiparams",
            batch_size=batch_size,
            batch_nums=len(batches),
            algo=ptq.calibration_method,
            hist_percent=ptq.hist_percent,
            bias_correction=ptq.bias_correction,
            quantizable_op_type=list(ptq.quantize_op_types),
            weight_quantize_type=ptq.weight_quantize_type,
            onnx_format=True,
            skip_tensor_list=keep or None,
        )
    progress.done(task)
    return target


# ---- QAT ----------------------------------------------------------------------------------------


def _prepare_student(plan: _Plan, keep: list[str], target: Path) -> list[str]:
    """The FP32 model with BatchNorm folded into its convs and FP32 layers marked skip_quant.

    ACT trains every op in train mode; a BatchNorm there would re-estimate its statistics from
    the few unlabeled images. Folding it first leaves nothing to drift. Returns warnings.
    """
    import paddle
    from paddle.base import core
    from paddle.base.framework import IrGraph
    from paddle.static.quantization.post_training_quantization import _apply_pass, _remove_ctrl_vars

    warnings = []
    with _static_mode(onednn=False) as executor, _quiet_paddle():
        program, feed_names, fetch_targets = paddle.static.load_inference_model(
            str(plan.files.folder),
            executor,
            model_filename=plan.files.program.name,
            params_filename=plan.files.params.name,
        )
        if plan.config.TrainConfig.freeze_bn:
            graph = _remove_ctrl_vars(IrGraph(core.Graph(program.desc), for_test=True))
            for name in BN_FUSE_PASSES:
                graph = _apply_pass(paddle.static.global_scope(), graph, name)
            program = graph.to_program()
            # Ops the fuse passes create lack the op_role attribute ACT's program cloning reads.
            role_name = core.op_proto_and_checker_maker.kOpRoleAttrName()
            forward = int(core.op_proto_and_checker_maker.OpRole.Forward)
            for op in program.global_block().ops:
                if not op.has_attr(role_name):
                    op._set_attr(role_name, forward)
            left = sum(op.type == "batch_norm" for op in program.global_block().ops)
            if left:
                warnings.append(f"{left} BatchNorm layers do not follow a conv and stay trainable in QAT")
        keep_set = set(keep)
        for op in program.global_block().ops:
            if keep_set & set(op.input_arg_names):
                op._set_attr("op_namescope", SKIP_QUANT_SCOPE)
        block = program.global_block()
        paddle.static.save_inference_model(
            str(target / "inference"),
            [block.var(name) for name in feed_names],
            [block.var(var.name) for var in fetch_targets],
            executor,
            program=program,
            clip_extra=False,
        )
    return warnings


def _act_config(plan: _Plan) -> dict[str, Any]:
    config = plan.config
    train = config.TrainConfig
    rate = train.learning_rate
    learning_rate: float | dict[str, Any] = (
        float(rate.learning_rate) if rate.type == "Constant" else {"type": rate.type, **rate.paddle_kwargs()}
    )
    optimizer: dict[str, Any] = {"type": train.optimizer_builder.optimizer.type}
    if train.optimizer_builder.optimizer.momentum is not None:
        optimizer["momentum"] = train.optimizer_builder.optimizer.momentum
    builder: dict[str, Any] = {"optimizer": optimizer}
    if train.optimizer_builder.weight_decay is not None:
        builder["weight_decay"] = float(train.optimizer_builder.weight_decay)
    quant = config.QuantAware
    not_quant = list(dict.fromkeys([*quant.not_quant_pattern, SKIP_QUANT_SCOPE.strip("/")]))
    return {
        "Distillation": {
            "alpha": float(config.Distillation.alpha),
            "loss": config.Distillation.loss,
            "node": list(plan.distillation_nodes),
        },
        "QuantAware": {
            "use_pact": quant.use_pact,
            "activation_bits": quant.activation_bits,
            "weight_bits": quant.weight_bits,
            "is_full_quantize": quant.is_full_quantize,
            "onnx_format": True,
            "activation_quantize_type": quant.activation_quantize_type,
            "weight_quantize_type": quant.weight_quantize_type,
            "not_quant_pattern": not_quant,
            "quantize_op_types": list(quant.quantize_op_types),
        },
        "TrainConfig": {
            "epochs": train.epochs,
            "train_iter": train.train_iter,
            "learning_rate": learning_rate,
            "optimizer_builder": builder,
            # Accuracy is measured on the deployed engines afterwards; ACT's own eval loop stays off.
            "eval_iter": 1 << 30,
            "logging_iter": 1,
        },
    }


@contextlib.contextmanager
def _keep_learning_rate_schedule() -> Iterator[None]:
    """Carry the learning-rate scheduler over ACT's quant-aware rewrite of the training program.

    `build_quant_program` rebuilds the program through an IrGraph and drops its `lr_scheduler`,
    so Paddle's executor never updates the rate: a CosineAnnealingDecay silently trains at its
    initial value (measured: identical results to a constant rate). Re-attaching it fixes that.
    """
    import paddleslim.auto_compression.compressor as compressor

    original = compressor.build_quant_program

    def build_quant_program(executor: Any, places: Any, config: Any, train: Any, test: Any) -> Any:
        scheduler = getattr(train.program, "lr_scheduler", None)
        train_info, test_info, quant_config = original(executor, places, config, train, test)
        if scheduler is not None and getattr(train_info.program, "lr_scheduler", None) is None:
            train_info.program.lr_scheduler = scheduler
        return train_info, test_info, quant_config

    compressor.build_quant_program = build_quant_program
    try:
        yield
    finally:
        compressor.build_quant_program = original


def _run_qat(
    plan: _Plan, images: CalibrationImages, work: Path, keep: list[str], progress: _Progress
) -> tuple[Path, int, float | None]:
    from paddleslim.auto_compression import AutoCompression

    settings, train = plan.config.Global, plan.config.TrainConfig
    student = work / "fp32_student"
    plan.warnings.extend(_prepare_student(plan, keep, student))
    batch_size = min(settings.qat_batch_size, len(images.paths))
    per_epoch = len(images.paths) // batch_size
    iterations = train.train_iter if train.train_iter is not None else train.epochs * per_epoch
    if train.train_iter is not None and train.epochs is not None:
        iterations = min(train.train_iter, train.epochs * per_epoch)
    rng = np.random.default_rng(settings.seed)
    feed = plan.program.feed_names[0]
    task = None
    state: dict[str, Any] = {"loss": None, "training": False}

    def train_loader() -> Iterator[dict[str, np.ndarray]]:
        order = rng.permutation(len(images.paths))
        for start in range(0, per_epoch * batch_size, batch_size):
            _raise_if_interrupted()
            yield {feed: images.batch(order[start : start + batch_size])}
            if state["training"]:
                note = f"loss {state['loss']:.4g}" if state["loss"] is not None else ""
                progress.advance(task, note=note)

    def eval_loader() -> Iterator[dict[str, np.ndarray]]:
        yield {feed: images.batch(list(range(batch_size)))}

    def on_loss(value: float) -> None:
        state["loss"] = value

    target = work / "qat"
    _seed_everything(settings.seed)
    with _static_mode(onednn=False), _quiet_paddle(on_loss), _keep_learning_rate_schedule():
        compressor = AutoCompression(
            model_dir=str(student),
            model_filename="inference.pdmodel",
            params_filename="inference.pdiparams",
            save_dir=str(target),
            config=_act_config(plan),
            train_dataloader=train_loader,
            eval_dataloader=eval_loader,
            deploy_hardware=None,
        )
        task = progress.add("QAT (distillation)", iterations)
        state["training"] = True
        compressor.compress()
    progress.done(task)
    return target, iterations, state["loss"]


# ---- ONNX exports, accuracy, sensitivity ---------------------------------------------------------


def paddle_to_onnx(program: Path, params: Path, target: Path) -> Path:
    """paddle2onnx in a child process (it can abort the process on models it dislikes)."""
    command = [sys.executable, "-m", "paddlecls_q.runtime.convert", str(program), str(params), str(target)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelFormatError(f"{program}: paddle2onnx did not finish in {CONVERT_TIMEOUT_S} s") from None
    if result.returncode != 0 or not target.is_file():
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit code {result.returncode}"
        raise ModelFormatError(f"{program}: paddle2onnx could not export the INT8 model: {reason}")
    return target


_DTYPE_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 20: 1, 21: 1, 22: 2}


def align_weight_dtypes(program: Path, params: Path) -> int:
    """Make the program's weight dtypes say what the params file holds; returns how many changed.

    PaddleSlim's ONNX-format save stores quantized weights as int8 but leaves them declared
    FP32 in the program, so a size check of the params against the program fails. The combined
    params file lists every persistable tensor in name order, each with its own TensorDesc;
    nothing is changed unless that walk covers the file exactly and every size matches.
    """
    import struct

    from paddle.base.proto import framework_pb2

    desc = framework_pb2.ProgramDesc.FromString(program.read_bytes())
    block = desc.blocks[0]
    variables = {
        var.name: var
        for var in block.vars
        if var.persistable and var.type.type == 7 and var.name not in ("feed", "fetch")  # 7: DENSE_TENSOR
    }
    data, position, stored = params.read_bytes(), 0, {}
    try:
        for name in sorted(variables):
            position += 4  # tensor version
            (lod_levels,) = struct.unpack_from("<Q", data, position)
            position += 8
            for _ in range(lod_levels):
                (size,) = struct.unpack_from("<Q", data, position)
                position += 8 + size
            position += 4  # tensor desc version
            (desc_size,) = struct.unpack_from("<i", data, position)
            position += 4
            tensor = framework_pb2.VarType.TensorDesc.FromString(data[position : position + desc_size])
            position += desc_size + int(np.prod(tensor.dims, dtype=np.int64)) * _DTYPE_BYTES[tensor.data_type]
            stored[name] = tensor
    except (struct.error, KeyError, ValueError):
        return 0
    if position != len(data):
        return 0
    changed = 0
    for name, tensor in stored.items():
        holder = variables[name].type
        declared = (holder.dense_tensor if hasattr(holder, "dense_tensor") else holder.lod_tensor).tensor
        # Scales are saved as [1, C] or [] where the program says [C] or [1]: compare sizes.
        if -1 not in declared.dims and int(np.prod(declared.dims)) != int(np.prod(tensor.dims)):
            return 0
    for name, tensor in stored.items():
        holder = variables[name].type
        declared = (holder.dense_tensor if hasattr(holder, "dense_tensor") else holder.lod_tensor).tensor
        if declared.data_type != tensor.data_type:
            declared.data_type = tensor.data_type
            changed += 1
    if changed:
        program.write_bytes(desc.SerializeToString())
    return changed


def _assemble(plan: _Plan, quantized: Path, folder: Path, keep: list[str], reduce_range: str) -> dict[str, Any]:
    """Copy the INT8 model, the FP32 folder's yaml and labels, and write the per-engine ONNX files."""
    from paddlecls_q import qdq_onnx

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(quantized / "inference.pdmodel", folder / "inference.pdmodel")
    shutil.copyfile(quantized / "inference.pdiparams", folder / "inference.pdiparams")
    align_weight_dtypes(folder / "inference.pdmodel", folder / "inference.pdiparams")
    shutil.copyfile(plan.files.inference_cls_yaml, folder / INFERENCE_CLS_YAML)
    label_file = load_inference_cls_yaml(plan.files.inference_cls_yaml).class_id_map_file
    if label_file:
        source = plan.files.folder / label_file
        if source.is_file() and _is_within(source, plan.files.folder):
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
        frozenset(keep),  # type: ignore[arg-type]
    )
    return {engine: summary.to_dict() for engine, summary in summaries.items()}


def _eval_options(plan: _Plan, engine: str) -> RuntimeOptions:
    threads = plan.config.accuracy.threads or os.cpu_count() or 1
    return RuntimeOptions(backend=engine, device="cpu", threads=threads)  # type: ignore[arg-type]


def _measure_accuracy(
    plan: _Plan, int8_folder: Path, fp32: dict[str, Any] | None, progress: bool, engines: tuple[str, ...] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """FP32 (cached across calls in `fp32`) and INT8 top-1 on each engine; returns (accuracy, fp32 results)."""
    from paddlecls_q.datasets import load_dataset
    from paddlecls_q.evaluate import evaluate_model

    accuracy = plan.config.accuracy
    dataset = load_dataset(plan.eval_list, accuracy.limit)
    fp32 = dict(fp32 or {})
    rows = []
    for engine in engines or accuracy.engines:
        options = _eval_options(plan, engine)
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
    result = {
        "eval_list": str(plan.eval_list),
        "images": rows[0].count if rows else 0,
        "max_drop": accuracy.max_drop,
        "engines": [asdict(row) for row in rows],
        "worst_drop": max(row.drop for row in rows) if rows else 0.0,
        "int8_engine_spread": round(max(int8_top1) - min(int8_top1), 4) if rows else 0.0,
    }
    result["within_budget"] = result["worst_drop"] <= accuracy.max_drop + 1e-9
    return result, fp32


def _rank_layers(plan: _Plan, int8_folder: Path, images: CalibrationImages) -> list[dict[str, Any]]:
    """Each quantized layer's effect on the output: how much closer to FP32 the ORT model gets when only
    that layer runs in float (mean KL divergence of the class probabilities, FP32 as reference)."""
    import onnx
    import onnxruntime as ort

    from paddlecls_q import qdq_onnx
    from paddlecls_q.infer import to_probabilities
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
    ranking = []
    for layer in qdq_onnx.quantized_layers(quantized):
        restored = divergence(reference, probabilities(qdq_onnx.dequantize_layers(quantized, {layer})))
        ranking.append(
            {"layer": layer, "kl_gain": round(baseline - restored, 8), "kl_with_layer_fp32": round(restored, 8)}
        )
    ranking.sort(key=lambda row: -row["kl_gain"])
    return ranking


# ---- the workspace: build hidden, publish by rename ----------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Workspace:
    """A hidden `.NAME.partial-PID` folder next to the output, removed unless published."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.path = output.parent / f".{output.name}.partial-{os.getpid()}"
        self.published = False

    def __enter__(self) -> _Workspace:
        self.output.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.output.parent.glob(f".{self.output.name}.partial-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir()
        return self

    def publish(self, folder: Path, target: Path, force: bool) -> None:
        """Rename `folder` (inside the workspace) to `target`; an existing one is replaced only with `force`."""
        try:
            fsutil.publish(folder, target, force=force)
        except fsutil.AlreadyExistsError:
            raise ConfigError(f"{target}: already exists (checked at publish time); pass --force to replace it") from None
        self.published = True

    def __exit__(self, *exc: Any) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _folder_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _packages() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# ---- the entry point ----------------------------------------------------------------------------


def quantize(
    config: QuantizeConfig,
    method: str | None = None,
    output_dir: Path | None = None,
    *,
    force: bool = False,
    allow_few: bool = False,
    sensitivity: bool = False,
    progress: bool = False,
    reduce_range: str = "none",
    on_message: Message | None = None,
) -> QuantizeReport:
    """Quantize the config's model with PTQ or QAT and publish a complete, deployable output folder.

    Raises AccuracyBudgetError (exit code 3) when `accuracy.eval_list` is set and INT8 top-1 drops
    by more than `accuracy.max_drop` points on an engine (after `sensitivity` kept the most
    sensitive layers in FP32, if asked); the complete folder then goes to `<output>.rejected`.
    """
    started = time.perf_counter()
    plan = plan_quantization(config, method, output_dir, force, allow_few, sensitivity)
    say = on_message or (lambda kind, text: None)
    for warning in plan.warnings:
        say("warning", warning)
    stages: dict[str, float] = {}
    report = QuantizeReport(
        method=plan.method,
        model_dir=str(plan.files.folder.resolve()),
        output_dir=str(plan.output_dir),
        config=config.model_dump(mode="json"),
        packages=_packages(),
        image_folder=str(plan.image_folder),
        images_used=len(plan.images),
        images_found=plan.images_found,
        seed=config.Global.seed,
        keep_fp32_layers=list(plan.keep_fp32_layers),
        warnings=plan.warnings,
    )
    preprocess = config.Global.ptq_preprocess if plan.method == "ptq" else config.Global.qat_preprocess
    with _interrupts(), _Progress(progress) as bars, _Workspace(plan.output_dir) as workspace:
        images = CalibrationImages(plan.images, plan.files.folder, preprocess)
        mark = time.perf_counter()
        images.check(bars)
        stages["read_images"] = time.perf_counter() - mark

        def build(keep: list[str], attempt: int) -> Path:
            mark = time.perf_counter()
            work = workspace.path / f"work{attempt}"
            if plan.method == "ptq":
                quantized = _run_ptq(plan, images, work, keep, bars)
            else:
                quantized, report.train_iterations, report.final_distillation_loss = _run_qat(
                    plan, images, work, keep, bars
                )
            stages[plan.method] = stages.get(plan.method, 0.0) + time.perf_counter() - mark
            _raise_if_interrupted()
            mark = time.perf_counter()
            folder = workspace.path / f"model{attempt}"
            task = bars.add("exporting ONNX", 1)
            report.encodings = _assemble(plan, quantized, folder, keep, reduce_range)
            bars.done(task)
            shutil.rmtree(work, ignore_errors=True)
            stages["export_onnx"] = stages.get("export_onnx", 0.0) + time.perf_counter() - mark
            return folder

        folder = build(plan.keep_fp32_layers, 0)
        fp32_results: dict[str, Any] | None = None
        if plan.eval_list is not None:
            mark = time.perf_counter()
            report.accuracy, fp32_results = _measure_accuracy(plan, folder, None, progress)
            stages["accuracy"] = time.perf_counter() - mark
        if sensitivity and report.accuracy is not None and not report.accuracy["within_budget"]:
            mark = time.perf_counter()
            ranking = _rank_layers(plan, folder, images)
            history = [{"fp32_layers": list(plan.keep_fp32_layers), "worst_drop": report.accuracy["worst_drop"]}]
            candidates = [row["layer"] for row in ranking if row["layer"] not in plan.keep_fp32_layers]
            limit = config.accuracy.max_fp32_layers
            keep = list(plan.keep_fp32_layers)
            for layer in candidates[:limit]:
                keep.append(layer)
                say("info", f"sensitivity: keeping {len(keep)} layer(s) in FP32, adding {layer}")
                shutil.rmtree(folder, ignore_errors=True)
                folder = build(keep, len(keep))
                report.accuracy, fp32_results = _measure_accuracy(plan, folder, fp32_results, progress)
                history.append({"fp32_layers": list(keep), "worst_drop": report.accuracy["worst_drop"]})
                if report.accuracy["within_budget"]:
                    break
            report.keep_fp32_layers = keep
            report.sensitivity = {"ranking": ranking, "history": history}
            stages["sensitivity"] = time.perf_counter() - mark

        report.quantized_layers = len(_quantized_weights(folder / "inference.ort.onnx"))
        report.sizes_bytes = {
            "fp32_params": plan.files.params.stat().st_size,
            "int8_params": (folder / "inference.pdiparams").stat().st_size,
            **{f"{engine}_onnx": (folder / f"inference.{engine}.onnx").stat().st_size for engine in report.encodings},
        }
        passed = report.accuracy is None or report.accuracy["within_budget"]
        target = plan.output_dir if passed else plan.output_dir.with_name(plan.output_dir.name + ".rejected")
        report.published_as = str(target)
        report.warnings = list(dict.fromkeys(report.warnings))
        report.stage_seconds = {name: round(seconds, 2) for name, seconds in stages.items()}
        report.wall_seconds = round(time.perf_counter() - started, 2)
        report.sizes_bytes["output_folder"] = _folder_size(folder)
        (folder / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
        _raise_if_interrupted()
        workspace.publish(folder, target, plan.force)
    if not passed:
        worst = max(report.accuracy["engines"], key=lambda row: row["drop"])
        error = AccuracyBudgetError(
            f"INT8 top-1 dropped {worst['drop']:.2f} points on {worst['engine']} "
            f"({worst['fp32_top1']:.2f} -> {worst['int8_top1']:.2f}), over accuracy.max_drop "
            f"{config.accuracy.max_drop:.2f}; the model was written to {target} for inspection"
            + ("" if sensitivity else "; try --sensitivity to keep the most sensitive layers in FP32")
        )
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report


def _quantized_weights(onnx_file: Path) -> list[str]:
    import onnx

    from paddlecls_q import qdq_onnx

    return qdq_onnx.quantized_layers(onnx.load(str(onnx_file)))
