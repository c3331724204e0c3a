"""Every place paddlecls-q reaches into Paddle/PaddleSlim internals: monkeypatches and private state.

Checked against the versions in CHECKED_VERSIONS. After a Paddle or PaddleSlim upgrade this is the
one file to re-check; `check_versions()` (called before every quantization) warns when the
installed versions differ, and each patch stands down (does nothing) where the internals it
replaces are gone, so a mismatch degrades speed or log quietness, never the numbers.

- `fast_avg_sampling`: replaces `PostTrainingQuantization._sample_avg` (same numbers, faster).
- `quiet_paddle`: disables the tqdm bars of Paddle's PTQ modules, mutes their loggers and reads
  ACT's training loss from the `auto_compression.compressor` logger.
- `keep_learning_rate_schedule`: wraps `paddleslim.auto_compression.compressor.build_quant_program`
  so the LR scheduler survives ACT's program rewrite.
- `fold_batch_norm`: Paddle's private `_apply_pass`/`_remove_ctrl_vars` BN fuse passes.
- `static_mode`: Paddle static graph on CPUPlace or CUDAPlace(N), paddle.set_device (what ACT reads),
  oneDNN and thread flags, restored afterwards; `quantize_device` decides the place.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import re
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

import numpy as np

# Paddle's passes that fold BatchNorm into the conv before it (what `freeze_bn` does before QAT).
BN_FUSE_PASSES = (
    "conv_bn_fuse_pass",
    "depthwise_conv_bn_fuse_pass",
    "conv_transpose_bn_fuse_pass",
    "conv_eltwiseadd_bn_fuse_pass",
    "depthwise_conv_eltwiseadd_bn_fuse_pass",
)
# The versions whose internals the patches below were read against.
CHECKED_VERSIONS = {"paddlepaddle": "3.3.1", "paddleslim": "2.6.0"}


def version_mismatches() -> list[str]:
    """One line per package in CHECKED_VERSIONS whose installed version differs (empty when all match)."""
    lines = []
    for name, checked in CHECKED_VERSIONS.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != checked:
            lines.append(
                f"{name} {installed} is installed; paddlecls_q/quantize/paddle_patches.py was checked against "
                f"{checked} (the patches stand down where Paddle's internals changed; re-check that file)"
            )
    return lines


def import_paddle() -> None:
    """Import paddle and paddleslim once with their import-time UserWarnings (ccache, distutils) muted."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import paddle  # noqa: F401
        import paddleslim  # noqa: F401


@contextlib.contextmanager
def quiet_paddle(loss_sink: Callable[[float], None] | None = None) -> Iterator[None]:
    """Silence PaddleSlim's logs and Paddle's tqdm bars (ours replace them); feed ACT's loss to `loss_sink`."""
    import paddle.static.io  # noqa: F401  (its logger warns on every legacy-format load)
    import paddle.static.quantization.post_training_quantization as ptq_module
    import paddle.static.quantization.quantization_pass as pass_module

    saved_tqdm = {module: getattr(module, "tqdm", None) for module in (ptq_module, pass_module)}
    for module, original in saved_tqdm.items():
        if original is not None:
            module.tqdm = functools.partial(original, disable=True)  # type: ignore[attr-defined]
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
                module.tqdm = original  # type: ignore[attr-defined]
        for logger, level, handlers, propagate in saved:
            logger.setLevel(level)
            logger.handlers = handlers
            logger.propagate = propagate


def quantize_device(device: str, compiled_with_cuda: bool, gpu_count: int) -> tuple[str, int]:
    """Where PTQ/QAT run: ('cpu', 0) or ('gpu', N); a GPU this paddle or machine can't give is a ConfigError."""
    from paddlecls_q.config import parse_device
    from paddlecls_q.errors import ConfigError

    try:
        name, index = parse_device(device)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if name == "cpu":
        return name, index
    if not compiled_with_cuda:
        raise ConfigError(
            f"device {device!r}: this paddle is the CPU build (paddlepaddle); quantize with cpu, "
            "or install paddlepaddle-gpu (docs/gpu.md)"
        )
    if index >= gpu_count:
        raise ConfigError(f"device {device!r}: paddle sees {gpu_count} GPU(s) on this machine")
    return name, index


def check_quantize_device(device: str) -> tuple[str, int]:
    """`quantize_device` for the installed paddle and this machine's GPUs."""
    import paddle

    compiled_with_cuda = bool(paddle.is_compiled_with_cuda())
    count = paddle.device.cuda.device_count() if compiled_with_cuda else 0
    return quantize_device(device, compiled_with_cuda, count)


@contextlib.contextmanager
def static_mode(onednn: bool, device: str = "cpu") -> Iterator[Any]:
    """Paddle static graph in a fresh scope on `device` (cpu, gpu or gpu:N), restored afterwards.

    On the CPU, oneDNN kernels make forward passes 4-5x faster (the calibrated scales match the plain
    kernels' to 5e-7, relative) but fail in training ("could not reshape a memory descriptor"), so QAT
    runs without them. paddle.set_device is set too: PaddleSlim ACT builds its executor from
    paddle.get_device() (and the GPU index from FLAGS_selected_gpus), not from ours.
    """
    import paddle

    from paddle.base import core

    name, index = check_quantize_device(device)
    place = paddle.CPUPlace() if name == "cpu" else paddle.CUDAPlace(index)
    was_dynamic = paddle.in_dynamic_mode()
    previous_device = paddle.get_device()
    previous_selected = os.environ.get("FLAGS_selected_gpus")
    flags = paddle.get_flags(["FLAGS_use_mkldnn", "FLAGS_paddle_num_threads"])
    paddle.enable_static()
    paddle.set_flags({"FLAGS_use_mkldnn": onednn and name == "cpu"})
    paddle.set_device("cpu" if name == "cpu" else f"gpu:{index}")
    if name == "gpu":
        os.environ["FLAGS_selected_gpus"] = str(index)
    core.set_num_threads(os.cpu_count() or 1)
    scope = paddle.static.Scope()
    try:
        with paddle.static.scope_guard(scope), paddle.utils.unique_name.guard():
            yield paddle.static.Executor(place)
    finally:
        paddle.set_flags({"FLAGS_use_mkldnn": flags["FLAGS_use_mkldnn"]})
        core.set_num_threads(int(flags["FLAGS_paddle_num_threads"]))
        paddle.set_device(previous_device)
        if previous_selected is None:
            os.environ.pop("FLAGS_selected_gpus", None)
        else:
            os.environ["FLAGS_selected_gpus"] = previous_selected
        if was_dynamic:
            paddle.disable_static()


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and Paddle so that a run repeats."""
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


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
def fast_avg_sampling() -> Iterator[None]:
    """Swap in `_sample_avg_fast` while PaddleSlim calibrates, if Paddle still has the internals it relies on."""
    from paddle.static.quantization.post_training_quantization import PostTrainingQuantization

    original = getattr(PostTrainingQuantization, "_sample_avg", None)
    if original is None:
        yield
        return
    PostTrainingQuantization._sample_avg = _sample_avg_fast  # type: ignore[method-assign]
    try:
        yield
    finally:
        PostTrainingQuantization._sample_avg = original  # type: ignore[method-assign]


@contextlib.contextmanager
def keep_learning_rate_schedule(on_train_program: Callable[[Any], None] | None = None) -> Iterator[None]:
    """Carry the learning-rate scheduler over ACT's quant-aware rewrite of the training program.

    `build_quant_program` rebuilds the program through an IrGraph and drops its `lr_scheduler`,
    so Paddle's executor never updates the rate: a CosineAnnealingDecay silently trains at its
    initial value (measured: identical results to a constant rate). Re-attaching it fixes that.
    `on_train_program` receives the quant-aware training program (QAT sets its activation scales).
    """
    import paddleslim.auto_compression.compressor as compressor

    original = compressor.build_quant_program

    def build_quant_program(executor: Any, places: Any, config: Any, train: Any, test: Any) -> Any:
        scheduler = getattr(train.program, "lr_scheduler", None)
        train_info, test_info, quant_config = original(executor, places, config, train, test)
        if scheduler is not None and getattr(train_info.program, "lr_scheduler", None) is None:
            train_info.program.lr_scheduler = scheduler
        if on_train_program is not None:
            on_train_program(train_info.program)
        return train_info, test_info, quant_config

    compressor.build_quant_program = build_quant_program
    try:
        yield
    finally:
        compressor.build_quant_program = original


def fold_batch_norm(program: Any) -> Any:
    """`program` (a static Program) with BatchNorm folded into the conv before it, through Paddle's
    private PTQ helpers `_remove_ctrl_vars` and `_apply_pass`."""
    import paddle
    from paddle.base import core
    from paddle.base.framework import IrGraph
    from paddle.static.quantization.post_training_quantization import _apply_pass, _remove_ctrl_vars

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
    return program
