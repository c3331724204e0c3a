"""The three CPU engines on real models: same answers, clear errors on broken models."""

import shutil

import numpy as np
import pytest

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.errors import BackendUnavailableError, ModelFormatError
from paddlecls_q.infer import Classifier
from paddlecls_q.model_files import find_model_files
from paddlecls_q.preprocess import read_image
from paddlecls_q.runtime import create_runtime
from paddlecls_q.runtime.convert import onnx_model_for
from paddlecls_q.runtime.trt_backend import engine_cache_path

CPU_BACKENDS = ("paddle", "ort", "openvino")


def scores_per_backend(model_dir, image, threads=1):
    return {
        backend: Classifier(model_dir, RuntimeOptions(backend=backend, threads=threads)).predict([read_image(image)])
        for backend in CPU_BACKENDS
    }


def test_fp32_scores_agree_across_cpu_engines_on_the_demo_model(demo_model_dir, fashion_image):
    scores = scores_per_backend(demo_model_dir, fashion_image)
    for backend in ("ort", "openvino"):
        assert np.abs(scores[backend] - scores["paddle"]).max() <= 1e-4, backend
    assert len({int(s.argmax()) for s in scores.values()}) == 1


def test_fp32_scores_agree_across_cpu_engines_on_full_size_mobilenet(mobilenet_v1_dir, photo):
    scores = scores_per_backend(mobilenet_v1_dir, photo, threads=2)
    assert scores["paddle"].shape == (1, 1000)
    for backend in ("ort", "openvino"):
        assert np.abs(scores[backend] - scores["paddle"]).max() <= 1e-4, backend


def test_batches_give_the_same_scores_as_single_images(demo_model_dir):
    files = find_model_files(demo_model_dir)
    batch = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    for backend in CPU_BACKENDS:
        runtime = create_runtime(files, RuntimeOptions(backend=backend))
        together = runtime.infer(batch)
        one_by_one = np.concatenate([runtime.infer(batch[i : i + 1]) for i in range(4)])
        assert np.abs(together - one_by_one).max() <= 1e-4, backend


def test_onnx_conversion_is_cached_by_content(demo_model_dir, tmp_path):
    files = find_model_files(demo_model_dir)
    first = onnx_model_for(files, "ort", tmp_path)
    stamp = first.stat().st_mtime_ns
    assert onnx_model_for(files, "openvino", tmp_path) == first
    assert first.stat().st_mtime_ns == stamp
    assert first.parent == tmp_path / "onnx"


def test_prepared_per_engine_onnx_is_preferred(demo_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(demo_model_dir, folder)
    converted = onnx_model_for(find_model_files(folder), "ort", tmp_path)
    shutil.copy(converted, folder / "inference.openvino.onnx")
    assert onnx_model_for(find_model_files(folder), "openvino", tmp_path) == folder / "inference.openvino.onnx"


def test_paddle2onnx_failure_is_a_clear_error_not_a_crash(demo_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(demo_model_dir, folder)
    params = folder / "inference.pdiparams"
    data = bytearray(params.read_bytes())
    data[:64] = b"\xff" * 64  # same size, garbage header: passes the size check, breaks the loaders
    params.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="inference"):
        create_runtime(find_model_files(folder), RuntimeOptions(backend="ort", cache_dir=tmp_path))


@pytest.mark.parametrize("backend", ["trt", "paddle-trt"])
def test_gpu_backends_without_a_gpu_stack_name_what_is_missing(demo_model_dir, backend):
    with pytest.raises(BackendUnavailableError, match=r"needs (the TensorRT Python package|paddlepaddle-gpu)"):
        create_runtime(find_model_files(demo_model_dir), RuntimeOptions(backend=backend))


def test_trt_engine_cache_key_has_model_precision_version_and_gpu(tmp_path):
    path = engine_cache_path(tmp_path, "abc123", "int8+fp16", "10.4.0", "NVIDIA H100 80GB HBM3")
    assert path.parent == tmp_path / "trt" and path.suffix == ".engine"
    assert path.name.startswith("abc123-int8+fp16-trt10.4.0-NVIDIA-H100-80GB-HBM3-")  # then the profile/ONNX digest


def test_engines_use_the_requested_threads(demo_model_dir):
    files = find_model_files(demo_model_dir)
    ort_runtime = create_runtime(files, RuntimeOptions(backend="ort", threads=2))
    batch = np.zeros((1, 3, 32, 32), np.float32)
    assert ort_runtime.session.get_session_options().intra_op_num_threads == 2
    assert ort_runtime.reported_threads(batch).threads == 2
    ov_runtime = create_runtime(files, RuntimeOptions(backend="openvino", threads=2))
    ov_runtime.infer(batch)
    reported = ov_runtime.reported_threads(batch)
    assert reported.threads == 2 and reported.precision in ("f32", "float32")
    paddle_runtime = create_runtime(files, RuntimeOptions(backend="paddle", threads=2))
    assert paddle_runtime.reported_threads(batch).threads == 2


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bare_call_gives_the_scores_of_infer_and_close_frees_the_engine(demo_model_dir, fashion_image, backend):
    """The bench's bare column calls the engine's own API: same scores as infer(); close() is idempotent."""
    files = find_model_files(demo_model_dir)
    classifier = Classifier(demo_model_dir, RuntimeOptions(backend=backend))
    batch = np.ascontiguousarray(classifier.preprocess.batch([read_image(fashion_image)]))
    with create_runtime(files, RuntimeOptions(backend=backend)) as runtime:
        expected = runtime.infer(batch)
        bare = runtime.bare_call(batch)
        assert bare.call is not None and bare.description
        bare.call()
        np.testing.assert_array_equal(runtime.infer(batch), expected)
    runtime.close()  # a second close does nothing
    with pytest.raises(AttributeError):
        runtime.infer(batch)  # the engine is gone
