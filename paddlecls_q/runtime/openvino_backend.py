"""OpenVINO on the CPU, fed ONNX (its Paddle reader fails on INT8 programs)."""

from __future__ import annotations

from typing import Any

import numpy as np

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.errors import BackendUnavailableError, ModelFormatError
from paddlecls_q.model_files import ModelFiles
from paddlecls_q.runtime.base import BareCall, ReportedThreads, Runtime
from paddlecls_q.runtime.convert import onnx_model_for


class OpenVinoRuntime(Runtime):
    backend = "openvino"

    def __init__(self, files: ModelFiles, options: RuntimeOptions) -> None:
        super().__init__(files, options)
        if options.device != "cpu":
            raise BackendUnavailableError("backend 'openvino' runs on --device cpu only in paddlecls-q")
        try:
            import openvino
        except ImportError:
            raise BackendUnavailableError("backend 'openvino' needs openvino: pip install openvino") from None
        self.onnx_path = onnx_model_for(files, self.backend, options.cache_dir)
        self.core = openvino.Core()
        try:
            self.model = self.core.read_model(str(self.onnx_path))
        except Exception as error:  # OpenVINO raises RuntimeError subclasses of its own
            # Its messages are a multi-line report whose last line says what failed.
            lines = [line.strip().lstrip("- ") for line in str(error).splitlines() if line.strip()]
            reason = lines[-1] if lines else type(error).__name__
            raise ModelFormatError(f"{self.onnx_path}: OpenVINO could not read it: {reason}") from None
        self.version = openvino.get_version().split("-")[0]
        partial = self.model.input(0).get_partial_shape()
        self._input_shape = tuple(d.get_length() if d.is_static else -1 for d in partial)
        self._requests: dict[tuple[int, ...], Any] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    def _request_for(self, shape: tuple[int, ...]) -> Any:
        """A compiled model per input shape: static shapes give OpenVINO's fastest kernels."""
        if shape not in self._requests:
            self.model.reshape({self.model.input(0): list(shape)})
            compiled = self.core.compile_model(
                self.model,
                "CPU",
                {
                    "INFERENCE_NUM_THREADS": self.options.threads,
                    "PERFORMANCE_HINT": "LATENCY",
                    "NUM_STREAMS": 1,
                    # Left alone, OpenVINO picks bf16 on CPUs it thinks can run it, which moved
                    # FP32 scores by 7e-4 here; precision must come from the model, not the engine.
                    "INFERENCE_PRECISION_HINT": "f32",
                },
            )
            self._requests[shape] = compiled.create_infer_request()
        return self._requests[shape]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        request = self._request_for(tuple(batch.shape))
        request.infer({0: batch}, share_inputs=True)  # no copy of the input (7 % of a small model's time)
        return request.get_output_tensor(0).data.copy()

    def reported_threads(self, batch: np.ndarray) -> ReportedThreads:
        compiled = self._request_for(tuple(batch.shape)).get_compiled_model()
        reported = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        precision = str(compiled.get_property("INFERENCE_PRECISION_HINT")).removeprefix("<Type: '").removesuffix("'>")
        return ReportedThreads(reported, 'compiled_model.get_property("INFERENCE_NUM_THREADS")', precision)

    def bare_call(self, batch: np.ndarray) -> BareCall:
        request = self._request_for(tuple(batch.shape))
        inputs = {0: batch}
        return BareCall(lambda: request.infer(inputs), "InferRequest.infer")

    def engine_info(self) -> dict[str, Any]:
        return {**super().engine_info(), "engine": f"openvino {self.version}", "model": str(self.onnx_path)}

    def close(self) -> None:
        self._requests.clear()
        self.__dict__.pop("model", None)
