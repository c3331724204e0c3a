"""`qdq_onnx`: the per-engine Q/DQ rewrites, on a tiny hand-built paddle2onnx-style graph run by ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from paddlecls_q import qdq_onnx

WEIGHT = "conv2d_0.w_0"
INPUT_SCALE = 0.02
OUTPUT_SCALE = 0.05


def paddle2onnx_like_model() -> Any:
    """x → Q/DQ → Conv (float weight → Q/DQ per channel) → Q/DQ → Relu → Q/DQ → out, as paddle2onnx 1.3.1 writes it."""
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.3, size=(3, 2, 3, 3)).astype(np.float32)
    weight_scale = (np.abs(weight).reshape(3, -1).max(axis=1) / 127).astype(np.float32)
    initializers = [
        numpy_helper.from_array(weight, WEIGHT),
        numpy_helper.from_array(weight_scale, "w_scale"),
        numpy_helper.from_array(np.zeros(3, np.int8), "w_zero"),
        numpy_helper.from_array(np.array(INPUT_SCALE, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(OUTPUT_SCALE, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "zero"], ["x_dq"]),
        helper.make_node("QuantizeLinear", [WEIGHT, "w_scale", "w_zero"], ["w_q"], axis=0),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "zero"], ["y_q"]),
        helper.make_node("DequantizeLinear", ["y_q", "y_scale", "zero"], ["y_dq"]),
        helper.make_node("Relu", ["y_dq"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "y_scale", "zero"], ["r_q"]),
        helper.make_node("DequantizeLinear", ["r_q", "y_scale", "zero"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 5, 5])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def model() -> Any:
    return paddle2onnx_like_model()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    # Inside the int8 input grid (|x| < 127 * INPUT_SCALE): no saturation, so the encodings agree exactly.
    return np.random.default_rng(1).uniform(-2.0, 2.0, size=(1, 2, 5, 5)).astype(np.float32)


def run(model: Any, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": image})[0]


def initializer(model: Any, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(init) for init in model.graph.initializer if init.name == name)


def zero_point_types(model: Any) -> dict[str, int]:
    """The zero-point dtype of each activation QuantizeLinear, by the tensor it quantizes."""
    initializers = {init.name: init for init in model.graph.initializer}
    return {
        node.input[0]: initializers[node.input[2]].data_type
        for node in model.graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in initializers
    }


def test_ort_encoding_folds_weights_drops_the_pre_relu_pair_and_goes_uint8(model: Any, image: np.ndarray) -> None:
    encoded, summary = qdq_onnx.encode(model, "ort")
    assert summary.int8_weights == 1 and summary.dropped_pre_relu_qdq == 1
    assert summary.activation_encodings == {"uint8_zero_point_128": 1, "uint8_zero_point_0": 1}
    assert zero_point_types(encoded) == {"x": TensorProto.UINT8, "r": TensorProto.UINT8}
    weight = next(init for init in encoded.graph.initializer if init.name.startswith(f"{WEIGHT}_quantized"))
    assert weight.data_type == TensorProto.INT8
    assert not any(init.name == WEIGHT for init in encoded.graph.initializer)
    assert summary.nodes == len(encoded.graph.node) == 7
    # Same grid, same scales: the rewritten model computes the same numbers (up to one output step).
    np.testing.assert_allclose(run(encoded, image), run(model, image), atol=OUTPUT_SCALE + 1e-6)


def test_openvino_keeps_signed_activations_int8(model: Any, image: np.ndarray) -> None:
    encoded, summary = qdq_onnx.encode(model, "openvino", reduce_range="all")
    assert summary.activation_encodings == {"int8_zero_point_0": 1, "uint8_zero_point_0": 1}
    assert zero_point_types(encoded) == {"x": TensorProto.INT8, "r": TensorProto.UINT8}
    assert summary.reduced_range_weights == 0  # reduce_range is an ONNX Runtime (AVX2) remedy only
    np.testing.assert_allclose(run(encoded, image), run(model, image), atol=OUTPUT_SCALE + 1e-6)


def test_encode_leaves_its_input_untouched(model: Any) -> None:
    before = model.SerializeToString()
    qdq_onnx.encode(model, "ort", reduce_range="all", float_layers=frozenset({WEIGHT}))
    assert model.SerializeToString() == before


def test_reduce_range_keeps_weights_to_seven_bits(model: Any, image: np.ndarray) -> None:
    signed, signed_summary = qdq_onnx.encode(model, "ort", reduce_range="signed_inputs")
    assert signed_summary.reduced_range_weights == 1  # the conv reads the signed image
    reduced = next(
        numpy_helper.to_array(init) for init in signed.graph.initializer if init.name.startswith(f"{WEIGHT}_quantized")
    )
    assert reduced.dtype == np.int8 and reduced.min() >= -64 and reduced.max() <= 63
    # Half the weight resolution: close to the 8-bit model on average, not equal.
    difference = np.abs(run(signed, image) - run(model, image))
    assert 0 < difference.mean() <= OUTPUT_SCALE


def test_float_layers_run_in_float(model: Any, image: np.ndarray) -> None:
    assert qdq_onnx.quantized_layers(model) == [WEIGHT]
    encoded, summary = qdq_onnx.encode(model, "ort", float_layers=frozenset({WEIGHT}))
    assert summary.float_layers == [WEIGHT] and qdq_onnx.quantized_layers(encoded) == []
    conv = next(node for node in encoded.graph.node if node.op_type == "Conv")
    assert conv.input[0] == "x"  # the layer's input bypasses its Q/DQ pair
    assert initializer(encoded, conv.input[1]).dtype == np.float32


def test_dequantize_layers_matches_the_float_conv(model: Any, image: np.ndarray) -> None:
    restored = qdq_onnx.dequantize_layers(model, {WEIGHT})
    assert qdq_onnx.quantized_layers(restored) == [] and qdq_onnx.quantized_layers(model) == [WEIGHT]
    conv = next(node for node in restored.graph.node if node.op_type == "Conv")
    weight = initializer(restored, conv.input[1])
    # The float weights are the dequantized int8 ones: within half a step of the originals.
    original = initializer(model, WEIGHT)
    scale = initializer(model, "w_scale").reshape(3, 1, 1, 1)
    assert np.all(np.abs(weight - original) <= scale / 2 + 1e-7)
    # Only the input and weight rounding are gone: on average within one output step of the INT8 model.
    difference = np.abs(run(restored, image) - run(model, image))
    assert 0 < difference.mean() <= OUTPUT_SCALE


def test_unknown_engine_is_refused(model: Any) -> None:
    with pytest.raises(ValueError, match="unknown engine 'tensorrt'"):
        qdq_onnx.encode(model, "tensorrt")


def test_write_engine_models_writes_one_file_per_engine(model: Any, image: np.ndarray, tmp_path: Path) -> None:
    source = tmp_path / "paddle2onnx.onnx"
    onnx.save(model, str(source))
    summaries = qdq_onnx.write_engine_models(source, tmp_path)
    assert sorted(summaries) == ["openvino", "ort"]
    for engine, summary in summaries.items():
        written = onnx.load(str(tmp_path / f"inference.{engine}.onnx"))
        assert summary.to_dict()["engine"] == engine
        np.testing.assert_allclose(run(written, image), run(model, image), atol=OUTPUT_SCALE + 1e-6)
