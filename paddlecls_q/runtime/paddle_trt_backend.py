"""Paddle Inference with its TensorRT subgraph engine on the GPU (needs paddlepaddle-gpu built with TensorRT)."""

from __future__ import annotations

from typing import Any

import numpy as np

from paddlecls_q.errors import BackendUnavailableError
from paddlecls_q.registry import cache_home
from paddlecls_q.runtime.base import BareCall, ReportedThreads, Runtime
from paddlecls_q.runtime.paddle_backend import PaddleRuntime

WORKSPACE_BYTES = 1 << 30


class PaddleTrtRuntime(PaddleRuntime):
    backend = "paddle-trt"

    def configure(self, config: Any, inference: Any) -> None:
        import paddle

        if not paddle.is_compiled_with_cuda():
            raise BackendUnavailableError(
                "backend 'paddle-trt' needs paddlepaddle-gpu (this paddle is the CPU build); see docs/gpu.md"
            )
        if not inference.get_trt_compile_version() or inference.get_trt_compile_version()[0] == 0:
            raise BackendUnavailableError("backend 'paddle-trt' needs a paddlepaddle-gpu built with TensorRT")
        if paddle.device.cuda.device_count() == 0:
            raise BackendUnavailableError("backend 'paddle-trt' found no CUDA GPU")
        config.enable_use_gpu(256, 0)
        if self.files.is_quantized:
            precision = inference.PrecisionType.Int8
        elif self.options.fp16:
            precision = inference.PrecisionType.Half
        else:
            precision = inference.PrecisionType.Float32
        cache = (self.options.cache_dir or cache_home()) / "paddle-trt" / f"{self.files.content_hash()}-{precision}"
        cache.mkdir(parents=True, exist_ok=True)
        config.set_optim_cache_dir(str(cache))
        config.enable_tensorrt_engine(
            workspace_size=WORKSPACE_BYTES,
            max_batch_size=1,
            min_subgraph_size=3,
            precision_mode=precision,
            use_static=True,
            use_calib_mode=False,
        )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.options.pinned_memory:
            return super().infer(batch)
        import paddle

        # Pinned host buffers make the host<->device copies asynchronous DMA transfers.
        pinned_input = paddle.to_tensor(batch, place=paddle.CUDAPinnedPlace())
        outputs = self.predictor.run([pinned_input.cuda()])
        return outputs[0]._copy_to(paddle.CUDAPinnedPlace(), True).numpy()

    # A GPU engine: no CPU thread count to read back, and no lower-level loop than infer() in paddlecls-q.
    def reported_threads(self, batch: np.ndarray) -> ReportedThreads:
        return Runtime.reported_threads(self, batch)

    def bare_call(self, batch: np.ndarray) -> BareCall:
        return Runtime.bare_call(self, batch)
