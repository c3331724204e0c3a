"""`qdq_tensorrt`: TensorRT's Q/DQ placement on tiny hand-built paddle2onnx-style graphs, checked
structurally and, for numerics, with ONNX Runtime on the CPU against the generic Q/DQ file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from paddlecls_q import qdq_tensorrt

SCALES = {"x": 0.03, "y1": 0.05, "r1": 0.03, "r2": 0.04, "f": 0.02, "logits": 0.05}
CHANNELS = 4


def _weight(nodes: list[Any], initializers: list[Any], name: str, shape: tuple[int, ...], seed: int) -> str:
    """A float weight behind a per-channel (axis 0) symmetric Q/DQ, as paddle2onnx writes it."""
    weight = np.random.default_rng(seed).normal(0, 0.3, size=shape).astype(np.float32)
    scale = (np.abs(weight).reshape(shape[0], -1).max(axis=1) / 127).astype(np.float32)
    initializers += [
        numpy_helper.from_array(weight, name),
        numpy_helper.from_array(scale, f"{name}_scale"),
        numpy_helper.from_array(np.zeros(shape[0], np.int8), f"{name}_zero"),
    ]
    nodes += [
        helper.make_node("QuantizeLinear", [name, f"{name}_scale", f"{name}_zero"], [f"{name}_q"], axis=0),
        helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zero"], [f"{name}_dq"], axis=0),
    ]
    return f"{name}_dq"


def _qdq(nodes: list[Any], tensor: str, scale: str) -> str:
    nodes += [
        helper.make_node("QuantizeLinear", [tensor, f"{scale}_s", "zero"], [f"{tensor}_q"]),
        helper.make_node("DequantizeLinear", [f"{tensor}_q", f"{scale}_s", "zero"], [f"{tensor}_dq"]),
    ]
    return f"{tensor}_dq"


def residual_model() -> Any:
    """x → conv1 → (pre-ReLU Q/DQ) → relu r1 → conv2 → Add(·, r1) → relu r2 → conv3, conv4 (a conv
    shortcut, as in ResNet50_vd) → Add → GAP → Gemm → Q/DQ → out: paddle2onnx 1.3.1's shape of things,
    where the Add inputs carry no Q/DQ and the skip tensor is quantized for the next conv."""
    nodes: list[Any] = []
    initializers = [numpy_helper.from_array(np.array(0, np.int8), "zero")]
    initializers += [
        numpy_helper.from_array(np.array(value, np.float32), f"{name}_s") for name, value in SCALES.items()
    ]
    conv = {"pads": [1, 1, 1, 1]}
    w1 = _weight(nodes, initializers, "conv2d_1.w_0", (CHANNELS, 3, 3, 3), 1)
    w2 = _weight(nodes, initializers, "conv2d_2.w_0", (CHANNELS, CHANNELS, 3, 3), 2)
    w3 = _weight(nodes, initializers, "conv2d_3.w_0", (CHANNELS, CHANNELS, 3, 3), 3)
    w4 = _weight(nodes, initializers, "conv2d_4.w_0", (CHANNELS, CHANNELS, 1, 1), 4)
    wg = _weight(nodes, initializers, "fc_0.w_0", (5, CHANNELS), 5)
    nodes.append(helper.make_node("Conv", [_qdq(nodes, "x", "x"), w1], ["y1"], **conv))
    nodes.append(helper.make_node("Relu", [_qdq(nodes, "y1", "y1")], ["r1"]))
    nodes.append(helper.make_node("Conv", [_qdq(nodes, "r1", "r1"), w2], ["y2"], **conv))
    nodes.append(helper.make_node("Add", ["y2", "r1"], ["s1"]))
    nodes.append(helper.make_node("Relu", ["s1"], ["r2"]))
    r2 = _qdq(nodes, "r2", "r2")
    nodes.append(helper.make_node("Conv", [r2, w3], ["y3"], **conv))
    nodes.append(helper.make_node("Conv", [r2, w4], ["y4"]))
    nodes.append(helper.make_node("Add", ["y3", "y4"], ["s2"]))
    nodes.append(helper.make_node("GlobalAveragePool", ["s2"], ["g"]))
    nodes.append(helper.make_node("Flatten", ["g"], ["f"]))
    nodes.append(helper.make_node("Gemm", [_qdq(nodes, "f", "f"), wg], ["logits"], transB=1))
    nodes += [
        helper.make_node("QuantizeLinear", ["logits", "logits_s", "zero"], ["logits_q"]),
        helper.make_node("DequantizeLinear", ["logits_q", "logits_s", "zero"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 6, 6])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 5])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


def _run(model: Any, batch: np.ndarray) -> np.ndarray:
    """ONNX Runtime with graph optimizations off: Q/DQ run as written (TensorRT's semantics), not fused
    into ORT's integer kernels, whose u8s8 pair sums can saturate int16 on CPUs without VNNI."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": batch})[0])


def _producers(model: Any) -> dict[str, Any]:
    return {name: node for node in model.graph.node for name in node.output}


def _node(model: Any, op_type: str, output: str) -> Any:
    return next(node for node in model.graph.node if node.op_type == op_type and output in node.output)


@pytest.fixture(scope="module")
def rewritten() -> tuple[Any, Any, qdq_tensorrt.TensorRtSummary]:
    generic = residual_model()
    model, summary = qdq_tensorrt.tensorrt_model(generic)
    return generic, model, summary


def test_qdq_only_on_layer_inputs_and_the_residual_skip(rewritten: tuple[Any, Any, Any]) -> None:
    _, model, summary = rewritten
    producers = _producers(model)
    initializers = {init.name for init in model.graph.initializer}

    def from_activation_dq(name: str) -> bool:
        node = producers.get(name)
        return node is not None and node.op_type == "DequantizeLinear" and node.input[0] not in initializers

    layers = [node for node in model.graph.node if node.op_type in ("Conv", "Gemm")]
    assert len(layers) == 5 and all(from_activation_dq(node.input[0]) for node in layers)
    # No Q/DQ between conv1 and its ReLU, nor before the pool: TensorRT fuses and requantizes once.
    assert all(
        not from_activation_dq(node.input[0])
        for node in model.graph.node
        if node.op_type in ("Relu", "GlobalAveragePool")
    )
    # The identity block's Add: the conv branch (y2) is float, the skip (r1) reads r1's own Q/DQ.
    identity_add = _node(model, "Add", "s1")
    assert identity_add.input[0] == "y2" and from_activation_dq(identity_add.input[1])
    assert producers[identity_add.input[1]].input[1] == "r1_s"
    # Conv shortcut (both inputs are conv outputs, no calibrated scale): stays float.
    assert [from_activation_dq(name) for name in _node(model, "Add", "s2").input] == [False, False]
    # The network's output is not quantized.
    assert producers["out"].op_type != "DequantizeLinear"
    assert summary.residual_adds_quantized == 1 and summary.residual_adds_float == 1
    assert summary.layer_input_qdq == 5 and summary.per_channel_weights == 5 and not summary.problems


def test_weights_stay_per_channel_symmetric_and_activations_int8_zero_point_0(rewritten: tuple[Any, Any, Any]) -> None:
    _, model, _ = rewritten
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    quantizers = [node for node in model.graph.node if node.op_type == "QuantizeLinear"]
    weights = [node for node in quantizers if node.input[0] in values]
    activations = [node for node in quantizers if node.input[0] not in values]
    assert len(weights) == 5
    for node in weights:
        assert qdq_tensorrt._axis(node) == 0 and values[node.input[1]].size == values[node.input[0]].shape[0]
        assert values[node.input[2]].dtype == np.int8 and not values[node.input[2]].any()
    # x, r1 (conv2 and the skip), r2 (conv3 and conv4), f: the pre-ReLU and output pairs are gone.
    assert sorted(node.input[0] for node in activations) == ["f", "r1", "r2", "x"]
    for node in activations:
        assert values[node.input[2]].dtype == np.int8 and values[node.input[2]] == 0


def test_numerics_match_the_generic_file_in_onnx_runtime(rewritten: tuple[Any, Any, Any]) -> None:
    generic, model, _ = rewritten
    batch = np.random.default_rng(7).uniform(-1, 1, size=(16, 3, 6, 6)).astype(np.float32)
    expected, actual = _run(generic, batch), _run(model, batch)
    # What moved: a pre-ReLU rounding (y1) dropped, the skip rounded (r1), the output rounding dropped;
    # each is at most half a step of its calibrated scale, so the logits agree to a few steps.
    assert np.abs(expected - actual).max() < 4 * SCALES["logits"]
    assert (expected.argmax(axis=1) == actual.argmax(axis=1)).mean() >= 0.9
    assert np.abs(expected - actual).max() > 0  # the placement really differs from the generic file


def test_where_only_the_output_qdq_goes_the_difference_is_half_a_step() -> None:
    """x → Q/DQ → Conv → Q/DQ → out: the conv's Q/DQ stay, so ORT differs by the output rounding only."""
    nodes: list[Any] = []
    initializers = [numpy_helper.from_array(np.array(0, np.int8), "zero")]
    initializers += [
        numpy_helper.from_array(np.array(value, np.float32), f"{name}_s") for name, value in SCALES.items()
    ]
    weight = _weight(nodes, initializers, "conv2d_1.w_0", (CHANNELS, 3, 3, 3), 1)
    nodes.append(helper.make_node("Conv", [_qdq(nodes, "x", "x"), weight], ["logits"]))
    nodes += [
        helper.make_node("QuantizeLinear", ["logits", "logits_s", "zero"], ["logits_q"]),
        helper.make_node("DequantizeLinear", ["logits_q", "logits_s", "zero"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 6, 6])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, CHANNELS, 4, 4])],
        initializers,
    )
    generic = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model, summary = qdq_tensorrt.tensorrt_model(generic)
    assert summary.removed_activation_qdq == 1 and summary.layer_input_qdq == 1
    batch = np.random.default_rng(3).uniform(-1, 1, size=(8, 3, 6, 6)).astype(np.float32)
    expected, actual = _run(generic, batch), _run(model, batch)
    inside = np.abs(expected) < 126 * SCALES["logits"]  # outside, the generic file saturates at 127 steps
    assert inside.mean() > 0.9
    difference = np.abs(expected - actual)[inside].max()
    assert 0 < difference <= SCALES["logits"] / 2 + 1e-6


def test_float_layers_lose_their_qdq(rewritten: tuple[Any, Any, Any]) -> None:
    generic, _, _ = rewritten
    model, summary = qdq_tensorrt.tensorrt_model(generic, frozenset({"conv2d_2.w_0"}))
    producers = _producers(model)
    conv2 = _node(model, "Conv", "y2")
    assert producers.get(conv2.input[0]) is None or producers[conv2.input[0]].op_type != "DequantizeLinear"
    assert conv2.input[1] not in producers  # a float initializer
    assert summary.float_layers == ["conv2d_2.w_0"]
    _run(model, np.zeros((1, 3, 6, 6), np.float32))


def test_write_tensorrt_model_is_what_the_trt_backend_loads(tmp_path: Path) -> None:
    from paddlecls_q.model_files import ModelFiles
    from paddlecls_q.runtime.convert import onnx_model_for

    source = tmp_path / "paddle2onnx.onnx"
    onnx.save(residual_model(), str(source))
    folder = tmp_path / "int8"
    folder.mkdir()
    (folder / "inference.pdmodel").write_bytes(b"program")
    (folder / "inference.pdiparams").write_bytes(b"params")
    summary = qdq_tensorrt.write_tensorrt_model(source, folder)
    assert summary.residual_adds_quantized == 1
    files = ModelFiles(folder, folder / "inference.pdmodel", folder / "inference.pdiparams", True, True)
    assert onnx_model_for(files, "trt", tmp_path / "cache") == folder / "inference.trt.onnx"
    onnx.checker.check_model(onnx.load(str(folder / "inference.trt.onnx")))


def test_a_matmul_classifier_keeps_its_input_qdq_and_loses_the_output_one() -> None:
    """Flatten → Q/DQ → MatMul (per-tensor int8 weight) → Q/DQ → out, as paddle2onnx writes a `mul` layer."""
    weight = np.random.default_rng(9).normal(0, 0.3, size=(6, 3)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
        numpy_helper.from_array(np.array(SCALES["f"], np.float32), "f_s"),
        numpy_helper.from_array(np.array(SCALES["logits"], np.float32), "logits_s"),
        numpy_helper.from_array(weight, "fc.w_0"),
        numpy_helper.from_array(np.array(np.abs(weight).max() / 127, np.float32), "w_s"),
    ]
    nodes: list[Any] = [helper.make_node("Flatten", ["x"], ["f"])]
    fq = _qdq(nodes, "f", "f")
    nodes += [
        helper.make_node("QuantizeLinear", ["fc.w_0", "w_s", "zero"], ["w_q"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "zero"], ["w_dq"]),
        helper.make_node("MatMul", [fq, "w_dq"], ["logits"]),
        helper.make_node("QuantizeLinear", ["logits", "logits_s", "zero"], ["logits_q"]),
        helper.make_node("DequantizeLinear", ["logits_q", "logits_s", "zero"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6, 1, 1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 3])],
        initializers,
    )
    generic = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model, summary = qdq_tensorrt.tensorrt_model(generic)
    producers = _producers(model)
    matmul = _node(model, "MatMul", "logits")
    assert [producers[name].op_type for name in matmul.input] == ["DequantizeLinear", "DequantizeLinear"]
    assert producers["out"].op_type == "Identity"
    assert summary.per_tensor_weights == 1 and summary.layer_input_qdq == 1 and summary.removed_activation_qdq == 1
    batch = np.random.default_rng(4).uniform(-1, 1, size=(4, 6, 1, 1)).astype(np.float32)
    assert np.abs(_run(generic, batch) - _run(model, batch)).max() <= SCALES["logits"] / 2 + 1e-6
