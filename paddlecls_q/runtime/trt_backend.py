"""TensorRT on the GPU: builds an engine from the ONNX model (Q/DQ nodes carry INT8) and caches it.

Needs the `tensorrt` and `cuda-python` packages (the `[gpu]` extra) and an NVIDIA GPU.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.errors import BackendUnavailableError, ModelFormatError
from paddlecls_q.model_files import ModelFiles
from paddlecls_q.registry import cache_home
from paddlecls_q.runtime.base import Runtime
from paddlecls_q.runtime.convert import onnx_model_for

WORKSPACE_BYTES = 1 << 30
MAX_BATCH = 32


def import_cuda_runtime() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise BackendUnavailableError(
                "backend 'trt' needs cuda-python (pip install 'paddlecls-q[gpu]'); see docs/gpu.md"
            ) from None
    return cudart


def check_cuda(result: tuple[Any, ...], what: str) -> Any:
    """cuda-python returns (error, *values); raise on error, return the value(s)."""
    error, *values = result
    if int(error) != 0:
        raise BackendUnavailableError(f"CUDA call {what} failed: {error}")
    return values[0] if len(values) == 1 else values


def engine_cache_path(cache: Path, model_hash: str, precision: str, trt_version: str, gpu_name: str) -> Path:
    """Engines are valid only for one model, precision, TensorRT version and GPU model."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-")
    return cache / "trt" / f"{model_hash}-{precision}-trt{trt_version}-{gpu}.engine"


class HostBuffer:
    """A host array, page-locked (pinned) when asked, so copies to and from the GPU can run as DMA."""

    def __init__(self, cudart: Any, shape: tuple[int, ...], dtype: npt.DTypeLike, pinned: bool) -> None:
        self.cudart = cudart
        self.pinned_pointer = None
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if pinned:
            self.pinned_pointer = check_cuda(cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            raw = (ctypes.c_byte * nbytes).from_address(int(self.pinned_pointer))
            self.array = np.frombuffer(memoryview(raw), dtype=dtype).reshape(shape)
        else:
            self.array = np.empty(shape, dtype=dtype)

    def free(self) -> None:
        if self.pinned_pointer is not None:
            self.cudart.cudaFreeHost(self.pinned_pointer)
            self.pinned_pointer = None


class TensorRtRuntime(Runtime):
    backend = "trt"

    def __init__(self, files: ModelFiles, options: RuntimeOptions) -> None:
        super().__init__(files, options)
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailableError(
                "backend 'trt' needs the TensorRT Python package (pip install 'paddlecls-q[gpu]'); see docs/gpu.md"
            ) from None
        self.cudart = cudart = import_cuda_runtime()
        if check_cuda(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount") == 0:
            raise BackendUnavailableError("backend 'trt' found no CUDA GPU")
        self.trt = trt
        self.version = trt.__version__
        properties = check_cuda(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        gpu_name = properties.name.decode() if isinstance(properties.name, bytes) else str(properties.name)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.onnx_path = onnx_model_for(files, self.backend, options.cache_dir)
        precision = ("int8" if files.is_quantized else "fp32") + ("+fp16" if options.fp16 else "")
        self.engine_path = engine_cache_path(
            options.cache_dir or cache_home(), files.content_hash(), precision, self.version, gpu_name
        )
        if not self.engine_path.is_file():
            self._build_engine()
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise ModelFormatError(f"{self.engine_path}: TensorRT could not load the cached engine; delete it")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.stream = check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[tuple[int, ...], tuple[HostBuffer, HostBuffer, Any, Any]] = {}

    def _build_engine(self) -> None:
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(self.onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelFormatError(f"{self.onnx_path}: TensorRT could not parse it: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        # TensorRT 10+ reads INT8 from the model's Q/DQ nodes; older releases also need the flag.
        if self.files.is_quantized and hasattr(trt.BuilderFlag, "INT8"):
            config.set_flag(trt.BuilderFlag.INT8)
        if self.options.fp16 and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        model_input = network.get_input(0)
        channels_height_width = tuple(model_input.shape)[1:]
        profile = builder.create_optimization_profile()
        profile.set_shape(
            model_input.name, (1, *channels_height_width), (1, *channels_height_width), (MAX_BATCH, *channels_height_width)
        )
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelFormatError(f"{self.onnx_path}: TensorRT failed to build an engine")
        self.engine_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.engine_path.with_suffix(".partial")
        partial.write_bytes(bytes(serialized))
        partial.replace(self.engine_path)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.engine.get_tensor_shape(self.input_name))

    def _buffers_for(self, shape: tuple[int, ...]) -> tuple[HostBuffer, HostBuffer, Any, Any]:
        if shape not in self._buffers:
            cudart, pinned = self.cudart, self.options.pinned_memory
            self.context.set_input_shape(self.input_name, shape)
            output_shape = tuple(self.context.get_tensor_shape(self.output_name))
            host_in = HostBuffer(cudart, shape, np.float32, pinned)
            host_out = HostBuffer(cudart, output_shape, np.float32, pinned)
            device_in = check_cuda(cudart.cudaMalloc(host_in.array.nbytes), "cudaMalloc")
            device_out = check_cuda(cudart.cudaMalloc(host_out.array.nbytes), "cudaMalloc")
            self._buffers[shape] = (host_in, host_out, device_in, device_out)
        return self._buffers[shape]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        cudart = self.cudart
        host_in, host_out, device_in, device_out = self._buffers_for(tuple(batch.shape))
        self.context.set_input_shape(self.input_name, batch.shape)
        np.copyto(host_in.array, batch)
        copy_in, copy_out = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda(cudart.cudaMemcpyAsync(device_in, host_in.array.ctypes.data, host_in.array.nbytes, copy_in, self.stream), "H2D copy")
        self.context.set_tensor_address(self.input_name, int(device_in))
        self.context.set_tensor_address(self.output_name, int(device_out))
        if not self.context.execute_async_v3(self.stream):
            raise ModelFormatError(f"{self.engine_path}: TensorRT execution failed")
        check_cuda(cudart.cudaMemcpyAsync(host_out.array.ctypes.data, device_out, host_out.array.nbytes, copy_out, self.stream), "D2H copy")
        # Synchronize so the timing and the result include the whole device round trip.
        check_cuda(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return host_out.array.copy()

    def engine_info(self) -> dict[str, Any]:
        return {**super().engine_info(), "engine": f"tensorrt {self.version}", "engine_file": str(self.engine_path)}

    def close(self) -> None:
        """Free the pinned host buffers, the device buffers, the stream, then the TensorRT objects."""
        cudart = self.cudart
        for host_in, host_out, device_in, device_out in self._buffers.values():
            host_in.free()
            host_out.free()
            cudart.cudaFree(device_in)
            cudart.cudaFree(device_out)
        self._buffers.clear()
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        for name in ("context", "engine"):
            self.__dict__.pop(name, None)
