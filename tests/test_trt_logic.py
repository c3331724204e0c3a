"""The GPU backends' decisions that need no GPU: TensorRT versions, build flags, profiles, cache keys, options.

Resource release is checked against a recording stand-in for cuda-python's runtime module, the one
fake here: no GPU exists on these machines (tests/test_gpu.py runs the real calls where one does).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from paddlecls_q import registry
from paddlecls_q.config import RuntimeOptions, parse_device, validate
from paddlecls_q.errors import BackendUnavailableError, ConfigError, ModelFormatError
from paddlecls_q.runtime.paddle_trt_backend import legacy_program_input, paddle_trt_cache_dir, paddle_trt_precision
from paddlecls_q.runtime.trt_backend import (
    CudaResources,
    build_plan,
    engine_cache_path,
    file_identity,
    yaml_image_size,
    onnx_has_fp16,
    optimization_profile,
    parse_trt_version,
    partial_path,
)


@pytest.mark.parametrize(("version", "expected"), [("8.6.1.6", (8, 6)), ("10.3.0", (10, 3)), ("11.0.0.114", (11, 0))])
def test_supported_tensorrt_versions_parse(version: str, expected: tuple[int, int]) -> None:
    assert parse_trt_version(version) == expected


@pytest.mark.parametrize("version", ["8.5.3", "7.2.3", "garbage"])
def test_older_or_unreadable_tensorrt_is_a_clear_error(version: str) -> None:
    with pytest.raises(BackendUnavailableError, match="TensorRT"):
        parse_trt_version(version)


def test_tensorrt_8_asks_for_explicit_batch_and_precision_flags() -> None:
    plan = build_plan("8.6.1", quantized=True, fp16=True)
    assert plan.network_flags == ("EXPLICIT_BATCH",)
    assert plan.builder_flags == ("INT8", "FP16")
    assert plan.precision == "int8+fp16"


def test_tensorrt_10_is_explicit_batch_by_default() -> None:
    plan = build_plan("10.8.0", quantized=False, fp16=True)
    assert plan.network_flags == () and plan.builder_flags == ("FP16",) and plan.precision == "fp32+fp16"


def test_tensorrt_11_takes_precision_from_the_network() -> None:
    plan = build_plan("11.0.0", quantized=True, fp16=False)
    assert plan.network_flags == ("STRONGLY_TYPED",) and plan.builder_flags == () and plan.precision == "int8"
    assert build_plan("11.0.0", quantized=True, fp16=True, model_has_fp16=True).precision == "int8+fp16"


def test_tensorrt_11_refuses_fp16_without_an_fp16_model() -> None:
    with pytest.raises(BackendUnavailableError, match="no FP16 builder flag"):
        build_plan("11.0.0", quantized=True, fp16=True, model_has_fp16=False)


def test_profile_takes_free_batch_and_image_size_from_the_model() -> None:
    assert optimization_profile((-1, 3, 224, 224), 8, None) == ((1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
    assert optimization_profile((-1, 3, -1, -1), 64, (256, 192)) == (
        (1, 3, 256, 192),
        (64, 3, 256, 192),
        (64, 3, 256, 192),
    )
    assert optimization_profile((1, 3, 32, 32), 1, None) == ((1, 3, 32, 32),) * 3


def test_profile_errors_name_what_is_missing() -> None:
    with pytest.raises(ModelFormatError, match="CropImage/ResizeImage"):
        optimization_profile((-1, 3, -1, -1), 1, None)
    with pytest.raises(ModelFormatError, match="fixed at 1"):
        optimization_profile((1, 3, 224, 224), 4, None)
    with pytest.raises(ModelFormatError, match="NCHW"):
        optimization_profile((-1, 10), 1, None)


def test_image_size_comes_from_the_models_inference_cls_yaml() -> None:
    assert yaml_image_size(registry.DEMO_MODEL_DIR / "inference_cls.yaml") == (32, 32)
    assert yaml_image_size(registry.DEMO_MODEL_DIR / "no_such.yaml") is None


def test_demo_models_declared_input_feeds_the_profile() -> None:
    name, shape = legacy_program_input(registry.DEMO_MODEL_DIR / "inference.pdmodel")
    assert name == "x" and shape == (-1, 3, 32, 32)
    assert optimization_profile(shape, 4, (32, 32))[1] == (4, 3, 32, 32)


def test_engine_cache_key_changes_with_every_ingredient(tmp_path: Path) -> None:
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"a")
    profile = optimization_profile((-1, 3, 224, 224), 1, None)
    base = dict(cache=tmp_path, model_hash="h", precision="int8", trt_version="10.3", gpu_name="NVIDIA H100\x00",
                profile=profile, onnx_identity=file_identity(onnx_file))
    key = engine_cache_path(**base)
    assert " " not in key.name and "\x00" not in key.name and "NVIDIA-H100" in key.name
    variants = [
        {"precision": "int8+fp16"},
        {"trt_version": "11.0"},
        {"gpu_name": "NVIDIA L4"},
        {"profile": optimization_profile((-1, 3, 224, 224), 8, None)},
    ]
    names = {engine_cache_path(**{**base, **change}).name for change in variants}
    assert key.name not in names and len(names) == len(variants)
    os.utime(onnx_file, ns=(1, 1))
    assert engine_cache_path(**{**base, "onnx_identity": file_identity(onnx_file)}) != key


def test_partial_files_are_unique_per_process_and_call(tmp_path: Path) -> None:
    target = tmp_path / "x.engine"
    first, second = partial_path(target), partial_path(target)
    assert first != second and first.parent == target.parent and str(os.getpid()) in first.name


def test_paddle_trt_reports_int8_honestly() -> None:
    with pytest.raises(BackendUnavailableError, match="INT8 alone can't be had"):
        paddle_trt_precision(quantized=True, fp16=False)
    assert paddle_trt_precision(quantized=True, fp16=True) == "int8+fp16"
    assert paddle_trt_precision(quantized=False, fp16=True) == "fp16"
    assert paddle_trt_precision(quantized=False, fp16=False) == "fp32"


def test_paddle_trt_cache_key_has_tensorrt_version_and_gpu(tmp_path: Path) -> None:
    profile = optimization_profile((-1, 3, 224, 224), 1, None)
    a = paddle_trt_cache_dir(tmp_path, "h", "fp32", "8.6.1", "Tesla T4", profile)
    assert "trt8.6.1" in a.name and "Tesla-T4" in a.name
    assert a != paddle_trt_cache_dir(tmp_path, "h", "fp32", "10.3.0", "Tesla T4", profile)
    assert a != paddle_trt_cache_dir(tmp_path, "h", "fp32", "8.6.1", "NVIDIA A10", profile)


def _onnx_file(path: Path, dtype: int) -> Path:
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", dtype, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", dtype, [1, 3, 4, 4])])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_fp16_models_are_recognised(tmp_path: Path) -> None:
    assert onnx_has_fp16(_onnx_file(tmp_path / "half.onnx", TensorProto.FLOAT16))
    assert not onnx_has_fp16(_onnx_file(tmp_path / "float.onnx", TensorProto.FLOAT))


@pytest.mark.parametrize(("text", "expected"), [("cpu", ("cpu", 0)), ("gpu", ("gpu", 0)), ("GPU:3", ("gpu", 3))])
def test_devices_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_device(text) == expected


def test_gpu_n_reaches_the_runtime_options() -> None:
    options = validate(RuntimeOptions, {"backend": "trt", "device": "gpu:2", "batch_size": 8}, "command line")
    assert (options.device, options.gpu_id, options.batch_size) == ("gpu", 2, 8)
    with pytest.raises(ConfigError, match="unknown device"):
        validate(RuntimeOptions, {"backend": "trt", "device": "cuda:0"}, "command line")


@pytest.mark.parametrize("extra", [{"fp16": True}, {"pinned_memory": True}, {"device": "gpu:1"}])
def test_ort_on_the_gpu_refuses_switches_it_cannot_honour(extra: dict) -> None:
    with pytest.raises(ConfigError, match="backend 'ort' on the GPU"):
        validate(RuntimeOptions, {"backend": "ort", "device": "gpu", **extra}, "command line")


class RecordingCudaRuntime:
    """Answers like cuda-python's runtime module ((error, value) tuples) and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.next_pointer = 0x1000

    def _pointer(self, name: str) -> tuple[int, int]:
        self.next_pointer += 0x1000
        self.calls.append((name, self.next_pointer))
        return 0, self.next_pointer

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        return self._pointer("cudaMalloc")

    def cudaStreamCreate(self) -> tuple[int, int]:
        return self._pointer("cudaStreamCreate")

    def cudaFree(self, pointer: int) -> tuple[int]:
        self.calls.append(("cudaFree", pointer))
        return (0,)

    def cudaFreeHost(self, pointer: int) -> tuple[int]:
        self.calls.append(("cudaFreeHost", pointer))
        return (0,)

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        self.calls.append(("cudaStreamSynchronize", stream))
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        self.calls.append(("cudaStreamDestroy", stream))
        return (0,)


def test_close_frees_every_device_buffer_and_stream_once() -> None:
    cudart = RecordingCudaRuntime()
    resources = CudaResources(cudart)
    stream = resources.stream()
    pointers = [resources.device(1024), resources.device(4096)]
    host = resources.host((2, 3), np.float32, pinned=False)
    assert host.array.shape == (2, 3)
    resources.close()
    resources.close()
    freed = [pointer for name, pointer in cudart.calls if name == "cudaFree"]
    assert sorted(freed) == sorted(pointers)
    assert [name for name, _ in cudart.calls if name == "cudaStreamDestroy"] == ["cudaStreamDestroy"]
    assert ("cudaStreamDestroy", stream) in cudart.calls
    names = [name for name, _ in cudart.calls]
    assert names.index("cudaStreamSynchronize") < names.index("cudaFree")
