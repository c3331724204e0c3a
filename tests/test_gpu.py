"""GPU paths that can run wherever CUDA is: skipped (with the reason) on machines without a GPU."""

import numpy as np
import pytest

from paddlecls_q.errors import BackendUnavailableError


@pytest.fixture(scope="module")
def cudart():
    from paddlecls_q.runtime.trt_backend import check_cuda, import_cuda_runtime

    try:
        runtime = import_cuda_runtime()
    except BackendUnavailableError as error:
        pytest.skip(str(error))
    error, count = runtime.cudaGetDeviceCount()
    if int(error) != 0 or count == 0:
        pytest.skip("no CUDA GPU")
    check_cuda(runtime.cudaSetDevice(0), "cudaSetDevice")
    return runtime


@pytest.mark.parametrize("pinned", [True, False])
def test_host_buffers_round_trip_through_the_gpu(cudart, pinned):
    from paddlecls_q.runtime.trt_backend import HostBuffer, check_cuda

    shape = (2, 3, 224, 224)
    source = HostBuffer(cudart, shape, np.float32, pinned)
    target = HostBuffer(cudart, shape, np.float32, pinned)
    source.array[...] = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    device = check_cuda(cudart.cudaMalloc(source.array.nbytes), "cudaMalloc")
    stream = check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
    kinds = cudart.cudaMemcpyKind
    check_cuda(cudart.cudaMemcpyAsync(device, source.array.ctypes.data, source.array.nbytes,
                                      kinds.cudaMemcpyHostToDevice, stream), "H2D")
    check_cuda(cudart.cudaMemcpyAsync(target.array.ctypes.data, device, target.array.nbytes,
                                      kinds.cudaMemcpyDeviceToHost, stream), "D2H")
    check_cuda(cudart.cudaStreamSynchronize(stream), "sync")
    np.testing.assert_array_equal(target.array, source.array)
    if pinned:
        attributes = check_cuda(cudart.cudaPointerGetAttributes(source.array.ctypes.data), "attributes")
        assert attributes.type == cudart.cudaMemoryType.cudaMemoryTypeHost
    cudart.cudaFree(device)
    source.free()
    target.free()


def test_device_name_is_readable_for_the_engine_cache_key(cudart, tmp_path):
    from paddlecls_q.runtime.trt_backend import check_cuda, engine_cache_path

    properties = check_cuda(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    name = properties.name.decode() if isinstance(properties.name, bytes) else str(properties.name)
    name = name.rstrip("\x00")
    assert name
    path = engine_cache_path(tmp_path, "hash", "int8", "10.0", name)
    assert path.name.startswith("hash-int8-trt10.0-") and " " not in path.name
