"""Paddle Inference on the CPU, with oneDNN (4-5x faster here) and oneDNN INT8 for quantized models."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.errors import BackendUnavailableError, ModelFormatError
from paddlecls_q.model_files import ModelFiles
from paddlecls_q.runtime.base import BareCall, ReportedThreads, Runtime


@contextlib.contextmanager
def _quiet_native_stderr(quiet: bool) -> Iterator[None]:
    """Drop what C++ writes to fd 2 meanwhile: the oneDNN INT8 passes print ~30 lines per load despite
    disable_glog_info(); errors still arrive as exceptions."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_paddle_inference(backend: str = "paddle") -> Any:
    try:
        from paddle import inference
    except ImportError:
        package = "paddlepaddle-gpu" if backend == "paddle-trt" else "paddlepaddle"
        raise BackendUnavailableError(f"backend {backend!r} needs {package}: pip install {package}") from None
    return inference


# The op types oneDNN's INT8 passes can quantize (cpu_quantize_placement_pass.cc); `enable_mkldnn_int8()` with no
# list quantizes all of them, and a list naming any other type is refused.
ONEDNN_INT8_OPS = frozenset(
    {
        "concat", "conv2d", "depthwise_conv2d", "fused_conv2d", "fused_conv3d", "fused_matmul",
        "fused_elementwise_add", "fused_elementwise_mul", "fused_elementwise_sub", "elementwise_add",
        "elementwise_mul", "elementwise_sub", "fc", "matmul", "matmul_v2", "nearest_interp", "nearest_interp_v2",
        "pool2d", "prior_box", "reshape2", "fused_transpose", "transpose2", "fusion_gru", "fusion_lstm", "multi_gru",
        "slice", "split",
    }
)  # fmt: skip
ONEDNN_DENSE_OPS = frozenset({"fc", "matmul", "matmul_v2", "fused_matmul"})


def onednn_int8_ops(files: ModelFiles) -> frozenset[str] | None:
    """The op types oneDNN runs in INT8 for `files` (None: all it can).

    A CNN's one dense layer is its classifier, whose output is the logits: oneDNN's INT8 fc there cost real
    MobileNetV2 9 % more KL to FP32 on the 900 val images (held out: 5-7 % on each half of the calibration
    images, calibrated on the other), so it runs in FP32; its share of the work is a fraction of a percent.
    Models with more dense layers (transformers) keep them all in INT8.
    """
    return ONEDNN_INT8_OPS - ONEDNN_DENSE_OPS if files.dense_layers == 1 else None


class PaddleRuntime(Runtime):
    backend = "paddle"

    def __init__(self, files: ModelFiles, options: RuntimeOptions) -> None:
        super().__init__(files, options)
        inference = import_paddle_inference(self.backend)
        import paddle

        self.version = paddle.__version__
        config = inference.Config(str(files.program), str(files.params))
        # oneDNN INT8 needs the old IR; PIR `.json` programs need the new one.
        config.enable_new_ir(not files.legacy_format)
        config.switch_ir_optim(True)
        config.enable_memory_optim()
        config.disable_glog_info()
        self.configure(config, inference)
        self.config = config  # kept so reported_threads can read back what the engine was told
        try:
            with _quiet_native_stderr(files.is_quantized):
                self.predictor = inference.create_predictor(config)
        except Exception as error:  # Paddle raises its own C++-mapped exception types
            message = str(error).strip().splitlines()
            raise ModelFormatError(f"{files.folder}: Paddle Inference could not load the model: {message[-1] if message else error}") from None
        self.input_name = self.predictor.get_input_names()[0]
        self.output_name = self.predictor.get_output_names()[0]
        self._input = self.predictor.get_input_handle(self.input_name)
        self._output = self.predictor.get_output_handle(self.output_name)

    def configure(self, config: Any, inference: Any) -> None:
        """Engine options for the CPU; the Paddle-TensorRT backend overrides this."""
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(self.options.threads)
        if self.files.is_quantized:
            ops = onednn_int8_ops(self.files)
            if ops is None:
                config.enable_mkldnn_int8()
            else:
                config.enable_mkldnn_int8(set(ops))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._input.shape())

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self._input.reshape(batch.shape)
        self._input.copy_from_cpu(batch)
        self.predictor.run()
        return self._output.copy_to_cpu()

    def reported_threads(self, batch: np.ndarray) -> ReportedThreads:
        reported = int(self.config.cpu_math_library_num_threads())
        return ReportedThreads(reported, "Config.cpu_math_library_num_threads()", "fp32")

    def bare_call(self, batch: np.ndarray) -> BareCall:
        predictor = self.predictor
        input_handle = predictor.get_input_handle(self.input_name)
        output_handle = predictor.get_output_handle(self.output_name)
        shape = list(batch.shape)

        def paddle_bare() -> Any:
            input_handle.reshape(shape)
            input_handle.copy_from_cpu(batch)
            predictor.run()
            return output_handle.copy_to_cpu()

        return BareCall(paddle_bare, "predictor handles: copy_from_cpu, run, copy_to_cpu")

    def engine_info(self) -> dict[str, Any]:
        info = {**super().engine_info(), "engine": f"paddle inference {self.version}"}
        if self.files.is_quantized and self.options.device == "cpu":
            info["int8_ops"] = "all but the classifier (fc in FP32)" if onednn_int8_ops(self.files) else "all"
        return info

    def close(self) -> None:
        for name in ("_input", "_output", "predictor"):
            self.__dict__.pop(name, None)
