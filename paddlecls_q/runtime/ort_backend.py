"""ONNX Runtime on the CPU (or CUDA with onnxruntime-gpu)."""

from __future__ import annotations

from typing import Any

import numpy as np

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.errors import BackendUnavailableError, ModelFormatError
from paddlecls_q.model_files import ModelFiles
from paddlecls_q.runtime.base import BareCall, ReportedThreads, Runtime
from paddlecls_q.runtime.convert import onnx_model_for


def cpu_session_options(threads: int) -> Any:
    """ONNX Runtime's options for every session we time: `threads` intra-op threads, sequential, all fusions."""
    import onnxruntime as ort

    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.inter_op_num_threads = 1
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.log_severity_level = 3
    return session_options


class OrtRuntime(Runtime):
    backend = "ort"

    def __init__(self, files: ModelFiles, options: RuntimeOptions) -> None:
        super().__init__(files, options)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendUnavailableError("backend 'ort' needs onnxruntime: pip install onnxruntime") from None
        self.onnx_path = onnx_model_for(files, self.backend, options.cache_dir)
        session_options = cpu_session_options(options.threads)
        providers = ["CPUExecutionProvider"]
        if options.device == "gpu":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError("backend 'ort' on --device gpu needs onnxruntime-gpu with CUDA")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), session_options, providers=providers)
        except Exception as error:  # onnxruntime raises its own exception classes
            raise ModelFormatError(f"{self.onnx_path}: ONNX Runtime could not load it: {error}") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self._input_shape = tuple(d if isinstance(d, int) else -1 for d in model_input.shape)
        self.output_name = self.session.get_outputs()[0].name
        self.version = ort.__version__

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._input_shape

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def reported_threads(self, batch: np.ndarray) -> ReportedThreads:
        reported = int(self.session.get_session_options().intra_op_num_threads)
        return ReportedThreads(reported, "SessionOptions.intra_op_num_threads", "fp32")

    def bare_call(self, batch: np.ndarray) -> BareCall:
        session, outputs, feed = self.session, [self.output_name], {self.input_name: batch}
        return BareCall(lambda: session.run(outputs, feed), "InferenceSession.run")

    def engine_info(self) -> dict[str, Any]:
        return {**super().engine_info(), "engine": f"onnxruntime {self.version}", "model": str(self.onnx_path)}

    def close(self) -> None:
        self.__dict__.pop("session", None)
