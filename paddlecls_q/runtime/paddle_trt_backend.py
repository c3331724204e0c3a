"""Paddle Inference with its TensorRT subgraph engine on the GPU (needs paddlepaddle-gpu built with TensorRT).

Written against Paddle Inference's Config API (enable_use_gpu, enable_tensorrt_engine,
set_trt_dynamic_shape_info, get_trt_runtime_version); the pure decisions are unit-tested in
tests/test_trt_logic.py without a GPU.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.errors import BackendUnavailableError, ModelFormatError
from paddlecls_q.registry import cache_home
from paddlecls_q.runtime.base import BareCall, ReportedThreads, Runtime
from paddlecls_q.runtime.paddle_backend import PaddleRuntime
from paddlecls_q.runtime.trt_backend import HostBuffer, Shape, optimization_profile, yaml_image_size

WORKSPACE_BYTES = 1 << 30
# Paddle-TRT's PrecisionType member for each precision this backend can honestly deliver.
PRECISION_TYPES = {"fp32": "Float32", "fp16": "Half", "int8+fp16": "Int8"}


def paddle_trt_precision(quantized: bool, fp16: bool) -> str:
    """What Paddle-TRT will really run. Its INT8 mode also enables FP16 kernels, so a quantized model
    is INT8+FP16 or nothing: "INT8" alone is refused (the seed's table shows None there)."""
    if quantized and not fp16:
        raise BackendUnavailableError(
            "Paddle-TensorRT turns FP16 kernels on whenever it runs INT8, so INT8 alone can't be had: "
            "pass --fp16 for its INT8+FP16 engine"
        )
    if quantized:
        return "int8+fp16"
    return "fp16" if fp16 else "fp32"


def paddle_trt_cache_dir(
    cache: Path, model_hash: str, precision: str, trt_version: str, gpu_name: str, profile: tuple[Shape, Shape, Shape]
) -> Path:
    """Serialized Paddle-TRT engines are valid for one model, precision, profile, TensorRT version and GPU."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-")
    digest = hashlib.sha256(str(profile).encode()).hexdigest()[:12]
    return cache / "paddle-trt" / f"{model_hash}-{precision}-trt{trt_version}-{gpu}-{digest}"


def legacy_program_input(program: Path) -> tuple[str, Shape]:
    """The feed name and declared shape of a legacy `.pdmodel` program (-1 for free dimensions)."""
    from paddle.base.proto import framework_pb2

    block = framework_pb2.ProgramDesc.FromString(program.read_bytes()).blocks[0]  # type: ignore[attr-defined]
    feeds = [name for op in block.ops if op.type == "feed" for slot in op.outputs for name in slot.arguments]
    if len(feeds) != 1:
        raise ModelFormatError(f"{program}: a classifier has one image input, this model has {feeds}")
    var = next(v for v in block.vars if v.name == feeds[0])
    # Paddle 3 names the field dense_tensor; Paddle 2.6 (the PyPI GPU wheel) lod_tensor.
    field = "dense_tensor" if "dense_tensor" in var.type.DESCRIPTOR.fields_by_name else "lod_tensor"
    return feeds[0], tuple(int(d) for d in getattr(var.type, field).tensor.dims)


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
        count = paddle.device.cuda.device_count()
        if count == 0:
            raise BackendUnavailableError("backend 'paddle-trt' found no CUDA GPU")
        gpu_id = self.options.gpu_id
        if gpu_id >= count:
            raise BackendUnavailableError(f"--device gpu:{gpu_id}: this machine has {count} GPU(s)")
        if not self.files.legacy_format:
            raise ModelFormatError(
                f"{self.files.program}: paddle-trt reads the input shape from a legacy .pdmodel program; "
                "export with FLAGS_enable_pir_api=0"
            )
        self.precision = paddle_trt_precision(self.files.is_quantized, self.options.fp16)
        name, shape = legacy_program_input(self.files.program)
        self.profile = optimization_profile(shape, self.options.batch_size, yaml_image_size(self.files.inference_cls_yaml))
        self.trt_version = ".".join(str(part) for part in inference.get_trt_runtime_version())
        self.gpu_name = paddle.device.cuda.get_device_name(gpu_id)
        cache = paddle_trt_cache_dir(
            self.options.cache_dir or cache_home(),
            self.files.content_hash(),
            self.precision,
            self.trt_version,
            self.gpu_name,
            self.profile,
        )
        cache.mkdir(parents=True, exist_ok=True)
        config.enable_use_gpu(256, gpu_id)
        config.set_optim_cache_dir(str(cache))
        low, optimum, high = self.profile
        config.enable_tensorrt_engine(
            workspace_size=WORKSPACE_BYTES,
            max_batch_size=high[0],
            min_subgraph_size=3,
            precision_mode=getattr(inference.PrecisionType, PRECISION_TYPES[self.precision]),
            use_static=True,
            use_calib_mode=False,
        )
        config.set_trt_dynamic_shape_info({name: list(low)}, {name: list(high)}, {name: list(optimum)})
        self._pinned: dict[Shape, HostBuffer] = {}
        self._cudart: Any = None

    def input_buffer(self, shape: Shape) -> np.ndarray:
        """With --pinned-memory: the persistent pinned input array; a batch written here is copied once, by DMA."""
        shape = tuple(shape)
        if not self.options.pinned_memory:
            return np.empty(shape, dtype=np.float32)
        if shape not in self._pinned:
            if self._cudart is None:
                from paddlecls_q.runtime.trt_backend import import_cuda_runtime

                self._cudart = import_cuda_runtime()
            self._pinned[shape] = HostBuffer(self._cudart, shape, np.float32, pinned=True)
        return self._pinned[shape].array

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.options.pinned_memory:
            pinned = self.input_buffer(batch.shape)
            if batch is not pinned:
                np.copyto(pinned, batch)
            batch = pinned  # copy_from_cpu from page-locked memory: no staging copy by the driver
        return super().infer(batch)

    # A GPU engine: no CPU thread count to read back, and no lower-level loop than infer() in paddlecls-q.
    def reported_threads(self, batch: np.ndarray) -> ReportedThreads:
        return Runtime.reported_threads(self, batch)

    def bare_call(self, batch: np.ndarray) -> BareCall:
        return Runtime.bare_call(self, batch)

    def close(self) -> None:
        """Free the pinned buffers and the predictor; safe to call twice."""
        for buffer in getattr(self, "_pinned", {}).values():
            buffer.free()
        self._pinned = {}
        self.predictor = None

    def engine_info(self) -> dict[str, Any]:
        return {
            **super().engine_info(),
            "engine": f"paddle inference {self.version} + tensorrt {getattr(self, 'trt_version', '?')}",
            "precision": self.precision,
            "gpu": f"gpu:{self.options.gpu_id} {self.gpu_name}",
            "profile": [list(shape) for shape in self.profile],
        }
