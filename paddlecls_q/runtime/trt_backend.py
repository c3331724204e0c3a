"""TensorRT on the GPU: builds an engine from the ONNX model (Q/DQ nodes carry INT8) and caches it.

A folder written by `quantize` carries `inference.trt.onnx` (Q/DQ placed as TensorRT fuses best,
see paddlecls_q/qdq_tensorrt.py), which `onnx_model_for` picks over the generic paddle2onnx export.

Needs the `tensorrt` and `cuda-python` packages (the `[gpu]` extra) and an NVIDIA GPU. Written
against the TensorRT 8.6, 10 and 11 Python APIs; the decisions that differ by version live in the
pure functions below (unit-tested in tests/test_trt_logic.py without a GPU).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import uuid
from dataclasses import dataclass
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

Shape = tuple[int, ...]


# ---- pure logic: versions, build flags, profiles, cache keys ---------------------------------------


def parse_trt_version(version: str) -> tuple[int, int]:
    """'10.3.0.26' → (10, 3); a version paddlecls-q can't build with is a BackendUnavailableError."""
    match = re.match(r"^\s*(\d+)\.(\d+)", str(version))
    if not match:
        raise BackendUnavailableError(f"TensorRT version {version!r} is not readable")
    major, minor = int(match.group(1)), int(match.group(2))
    if (major, minor) < (8, 6):
        raise BackendUnavailableError(f"TensorRT {version}: paddlecls-q needs TensorRT 8.6, 10 or 11")
    return major, minor


@dataclass(frozen=True)
class BuildPlan:
    """How to ask one TensorRT version for one precision."""

    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag names
    builder_flags: tuple[str, ...]  # BuilderFlag names
    precision: str  # what the engine runs: fp32, int8, fp32+fp16, int8+fp16


def build_plan(version: str, quantized: bool, fp16: bool, model_has_fp16: bool = False) -> BuildPlan:
    """The network and builder flags for a precision, by TensorRT version.

    8.6: explicit batch must be asked for (create_network(0) is implicit batch there), and INT8 /
    FP16 are builder flags. 10: explicit batch is the only mode, the flags remain. 11 removed
    BuilderFlag.FP16/INT8: networks are strongly typed, INT8 comes from Q/DQ nodes and FP16 only
    from an FP16 model, so --fp16 on an FP32 model is refused rather than silently ignored.
    """
    major, _ = parse_trt_version(version)
    precision = ("int8" if quantized else "fp32") + ("+fp16" if fp16 else "")
    if major < 10:
        network: tuple[str, ...] = ("EXPLICIT_BATCH",)
    elif major == 10:
        network = ()
    else:
        if fp16 and not model_has_fp16:
            raise BackendUnavailableError(
                f"TensorRT {version} has no FP16 builder flag (precision comes from the network): --fp16 needs "
                "an ONNX model with FP16 tensors (e.g. converted with ModelOpt's AutoCast); this model has none"
            )
        return BuildPlan(("STRONGLY_TYPED",), (), precision)
    builder = (("INT8",) if quantized else ()) + (("FP16",) if fp16 else ())
    return BuildPlan(network, builder, precision)


def yaml_image_size(yaml_path: Path) -> tuple[int, int] | None:
    """(H, W) the model folder's inference_cls.yaml fixes (InferenceClsConfig.output_size), or None."""
    from paddlecls_q.config import load_inference_cls_yaml

    if not yaml_path.is_file():
        return None
    sized = load_inference_cls_yaml(yaml_path).output_size()
    return sized[1] if sized else None


def optimization_profile(
    model_shape: Shape, batch_size: int, image_size: tuple[int, int] | None, channels: int = 3
) -> tuple[Shape, Shape, Shape]:
    """min / opt / max NCHW shapes: static dims from the model, free H/W from its preprocessing,
    batch 1 .. max(batch_size, MAX_BATCH) with `batch_size` as the optimum."""
    if len(model_shape) != 4:
        raise ModelFormatError(f"expected an NCHW image input, the model's input has shape {list(model_shape)}")
    batch, *chw = (int(d) for d in model_shape)
    fixed = []
    for index, dim in enumerate(chw):
        if dim > 0:
            fixed.append(dim)
        elif index == 0:
            fixed.append(channels)
        elif image_size is None:
            raise ModelFormatError(
                f"the model's input {list(model_shape)} leaves H/W free and its inference_cls.yaml gives no "
                "CropImage/ResizeImage size to build the TensorRT profile from"
            )
        else:
            fixed.append(image_size[index - 1])
    if batch > 0:
        if batch_size != batch:
            raise ModelFormatError(f"the model's batch is fixed at {batch}; --batch-size {batch_size} can't run")
        shape = (batch, *fixed)
        return shape, shape, shape
    return (1, *fixed), (batch_size, *fixed), (max(batch_size, MAX_BATCH), *fixed)


def file_identity(path: Path) -> str:
    """Which file this is: resolved path, size and modification time (cheap, changes when the file does)."""
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def engine_cache_path(
    cache: Path,
    model_hash: str,
    precision: str,
    trt_version: str,
    gpu_name: str,
    profile: tuple[Shape, Shape, Shape] = ((), (), ()),
    onnx_identity: str = "",
) -> Path:
    """An engine is valid for one model, ONNX file, precision, profile, TensorRT version and GPU model."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name.rstrip("\x00")).strip("-")
    digest = hashlib.sha256(f"{onnx_identity}|{profile}".encode()).hexdigest()[:12]
    return cache / "trt" / f"{model_hash}-{precision}-trt{trt_version}-{gpu}-{digest}.engine"


def partial_path(target: Path) -> Path:
    """A write-then-rename name unique to this process and call, beside `target`."""
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")


def onnx_has_fp16(path: Path) -> bool:
    """Whether the ONNX model carries FP16 tensors (inputs, initializers or casts to float16)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph, half = model.graph, onnx.TensorProto.FLOAT16
    if any(init.data_type == half for init in graph.initializer):
        return True
    if any(value.type.tensor_type.elem_type == half for value in list(graph.input) + list(graph.value_info)):
        return True
    return any(
        node.op_type == "Cast" and any(a.name == "to" and a.i == half for a in node.attribute) for node in graph.node
    )


# ---- CUDA resources -----------------------------------------------------------------------------


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
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def select_gpu(cudart: Any, gpu_id: int) -> str:
    """Make GPU `gpu_id` current and return its name; a missing GPU is a BackendUnavailableError."""
    count = check_cuda(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    if count == 0:
        raise BackendUnavailableError("found no CUDA GPU")
    if gpu_id >= count:
        raise BackendUnavailableError(f"--device gpu:{gpu_id}: this machine has {count} GPU(s) (gpu:0..gpu:{count - 1})")
    check_cuda(cudart.cudaSetDevice(gpu_id), "cudaSetDevice")
    properties = check_cuda(cudart.cudaGetDeviceProperties(gpu_id), "cudaGetDeviceProperties")
    name = properties.name.decode(errors="replace") if isinstance(properties.name, bytes) else str(properties.name)
    return name.rstrip("\x00")


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
            self.array = np.empty(0, dtype=self.array.dtype)  # no view may outlive the pinned memory
            self.cudart.cudaFreeHost(self.pinned_pointer)
            self.pinned_pointer = None


class CudaResources:
    """Every buffer and stream a runtime allocates, freed once by close() (in reverse order)."""

    def __init__(self, cudart: Any) -> None:
        self.cudart = cudart
        self.device_pointers: list[Any] = []
        self.host_buffers: list[HostBuffer] = []
        self.streams: list[Any] = []

    def device(self, nbytes: int) -> Any:
        pointer = check_cuda(self.cudart.cudaMalloc(nbytes), "cudaMalloc")
        self.device_pointers.append(pointer)
        return pointer

    def host(self, shape: tuple[int, ...], dtype: npt.DTypeLike, pinned: bool) -> HostBuffer:
        buffer = HostBuffer(self.cudart, shape, dtype, pinned)
        self.host_buffers.append(buffer)
        return buffer

    def stream(self) -> Any:
        stream = check_cuda(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.streams.append(stream)
        return stream

    def close(self) -> None:
        for stream in self.streams:
            self.cudart.cudaStreamSynchronize(stream)
        while self.device_pointers:
            self.cudart.cudaFree(self.device_pointers.pop())
        while self.host_buffers:
            self.host_buffers.pop().free()
        while self.streams:
            self.cudart.cudaStreamDestroy(self.streams.pop())


# ---- the runtime --------------------------------------------------------------------------------


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
        self.trt = trt
        self.version = trt.__version__
        self.cudart = cudart = import_cuda_runtime()
        self.resources = CudaResources(cudart)
        self.gpu_name = select_gpu(cudart, options.gpu_id)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.onnx_path = onnx_model_for(files, self.backend, options.cache_dir)
        self.plan = build_plan(
            self.version, files.is_quantized, options.fp16, options.fp16 and onnx_has_fp16(self.onnx_path)
        )
        self.profile = optimization_profile(self._onnx_input_shape(), options.batch_size, self._image_size())
        self.engine_path = engine_cache_path(
            options.cache_dir or cache_home(),
            files.content_hash(),
            self.plan.precision,
            self.version,
            self.gpu_name,
            self.profile,
            file_identity(self.onnx_path),
        )
        if not self.engine_path.is_file():
            self._build_engine()
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise ModelFormatError(f"{self.engine_path}: TensorRT could not load the cached engine; delete it")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.stream = self.resources.stream()
        self._buffers: dict[Shape, tuple[HostBuffer, HostBuffer, Any, Any]] = {}
        self._current_shape: Shape | None = None

    def _onnx_input_shape(self) -> Shape:
        import onnx

        model = onnx.load(str(self.onnx_path), load_external_data=False)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims)

    def _image_size(self) -> tuple[int, int] | None:
        return yaml_image_size(self.files.inference_cls_yaml)

    def _build_engine(self) -> None:
        trt = self.trt
        builder = trt.Builder(self.logger)
        creation = trt.NetworkDefinitionCreationFlag
        flags = 0
        for name in self.plan.network_flags:
            member = getattr(creation, name, None)
            if member is None and name == "STRONGLY_TYPED":
                continue  # a release where strong typing is the only mode may drop the flag
            if member is None:
                raise BackendUnavailableError(f"TensorRT {self.version} lacks NetworkDefinitionCreationFlag.{name}")
            flags |= 1 << int(member)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(self.onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ModelFormatError(f"{self.onnx_path}: TensorRT could not parse it: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        for name in self.plan.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        profile = builder.create_optimization_profile()
        profile.set_shape(network.get_input(0).name, *self.profile)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelFormatError(f"{self.onnx_path}: TensorRT failed to build an engine")
        self.engine_path.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(self.engine_path)
        try:
            partial.write_bytes(bytes(serialized))
            os.replace(partial, self.engine_path)
        finally:
            partial.unlink(missing_ok=True)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.engine.get_tensor_shape(self.input_name))

    def _set_shape(self, shape: Shape) -> None:
        if shape == self._current_shape:
            return
        low, _, high = self.profile
        if len(shape) != len(low) or any(s < lo or s > hi for s, lo, hi in zip(shape, low, high)):
            raise ModelFormatError(f"input shape {list(shape)} is outside the engine's profile {list(low)}..{list(high)}")
        if not self.context.set_input_shape(self.input_name, shape):
            raise ModelFormatError(f"{self.engine_path}: TensorRT refused input shape {list(shape)}")
        self._current_shape = shape

    def _buffers_for(self, shape: Shape) -> tuple[HostBuffer, HostBuffer, Any, Any]:
        if shape not in self._buffers:
            pinned = self.options.pinned_memory
            self._set_shape(shape)
            output_shape = tuple(self.context.get_tensor_shape(self.output_name))
            host_in = self.resources.host(shape, np.float32, pinned)
            host_out = self.resources.host(output_shape, np.float32, pinned)
            device_in = self.resources.device(host_in.array.nbytes)
            device_out = self.resources.device(host_out.array.nbytes)
            self._buffers[shape] = (host_in, host_out, device_in, device_out)
        return self._buffers[shape]

    def input_buffer(self, shape: Shape) -> np.ndarray:
        """The (pinned, with --pinned-memory) host input array: a batch written here is not copied again."""
        return self._buffers_for(tuple(shape))[0].array

    def infer(self, batch: np.ndarray) -> np.ndarray:
        cudart = self.cudart
        shape = tuple(batch.shape)
        host_in, host_out, device_in, device_out = self._buffers_for(shape)
        self._set_shape(shape)
        if batch is not host_in.array:
            np.copyto(host_in.array, batch)
        copy_in, copy_out = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check_cuda(cudart.cudaMemcpyAsync(device_in, host_in.array.ctypes.data, host_in.array.nbytes, copy_in, self.stream), "H2D copy")
        self.context.set_tensor_address(self.input_name, int(device_in))
        self.context.set_tensor_address(self.output_name, int(device_out))
        if not self.context.execute_async_v3(int(self.stream)):
            raise ModelFormatError(f"{self.engine_path}: TensorRT execution failed")
        check_cuda(cudart.cudaMemcpyAsync(host_out.array.ctypes.data, device_out, host_out.array.nbytes, copy_out, self.stream), "D2H copy")
        # Synchronize so the timing and the result include the whole device round trip.
        check_cuda(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return host_out.array.copy()

    def close(self) -> None:
        """Free the engine, context, buffers and stream; safe to call twice."""
        self._buffers = {}
        self.context = self.engine = None
        self.resources.close()

    def engine_info(self) -> dict[str, Any]:
        return {
            **super().engine_info(),
            "engine": f"tensorrt {self.version}",
            "engine_file": str(self.engine_path),
            "onnx_file": str(self.onnx_path),
            "precision": self.plan.precision,
            "gpu": f"gpu:{self.options.gpu_id} {self.gpu_name}",
            "profile": [list(shape) for shape in self.profile],
        }
