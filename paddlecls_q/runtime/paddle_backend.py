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
            config.enable_mkldnn_int8()

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
        return {**super().engine_info(), "engine": f"paddle inference {self.version}"}

    def close(self) -> None:
        for name in ("_input", "_output", "predictor"):
            self.__dict__.pop(name, None)
