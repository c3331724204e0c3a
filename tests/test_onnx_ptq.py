"""ONNX Runtime PTQ of an FP32 ONNX graph and its GPTQ weight rounding (paddlecls_q/quantize/onnx_ptq.py,
weight_rounding.py), on a small hand-made conv net run by the real ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

from paddlecls_q.postprocess import are_probabilities
from paddlecls_q.quantize.onnx_ptq import last_residual_sum, quantize_onnx, write_onnx_runtime_file
from paddlecls_q.quantize.progress import Progress
from paddlecls_q.quantize.weight_rounding import Layer, gptq_round, im2col

pytest_plugins = ["quantize_support"]


class ArrayImages:
    """Preprocessed calibration tensors held in memory, in the shape quantize_onnx reads them."""

    def __init__(self, tensors: np.ndarray) -> None:
        self.tensors = tensors
        self.paths = list(range(len(tensors)))

    def batch(self, indices: list[int]) -> np.ndarray:
        return self.tensors[np.asarray(indices)]


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """3x3 conv + bias, ReLU, depthwise 3x3, ReLU, 1x1 conv, global pool, Gemm: the layer kinds of MobileNetV2."""
    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="depthwise", group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="project"),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], name="classifier", transB=1),
    ]
    initializers = [
        tensor("w0", 16, 3, 3, 3), tensor("b0", 16), tensor("w1", 16, 1, 3, 3), tensor("b1", 16),
        tensor("w2", 24, 16, 1, 1), tensor("b2", 24), tensor("w3", 10, 24), tensor("b3", 10),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def smooth_images(count: int, seed: int) -> np.ndarray:
    """Spatially correlated images (neighbouring pixels alike), as in photographs: H is far from diagonal."""
    noise = np.random.default_rng(seed).normal(size=(count, 3, 18, 18))
    blurred = sum(noise[:, :, i : i + 16, j : j + 16] for i in range(3) for j in range(3)) / 3.0
    return blurred.astype(np.float32)


def outputs(
    model: onnx.ModelProto | Path, images: np.ndarray, names: list[str], disable_optimizations: bool = False
) -> dict[str, np.ndarray]:
    """The named tensors of `model` on `images`, run by ONNX Runtime as it runs the file (or, with
    `disable_optimizations`, its float reading: every Q/DQ pair simulated in float)."""
    loaded = onnx.load(str(model)) if isinstance(model, Path) else model
    present = {output.name for output in loaded.graph.output}
    loaded.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names if name not in present)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if disable_optimizations:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(loaded.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, {"x": images}), strict=True))


def weights(path: Path) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in onnx.load(str(path)).graph.initializer}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The net quantized with 7-bit weights, rounded to nearest and by GPTQ, on the same 64 calibration images."""
    folder = tmp_path_factory.mktemp("onnx_ptq")
    fp32 = folder / "fp32.onnx"
    onnx.save(conv_net(), str(fp32))
    calibration = smooth_images(64, seed=1)
    files: dict[str, Any] = {"fp32": fp32, "calibration": calibration}
    for rounding in ("nearest", "gptq"):
        target = folder / f"{rounding}.onnx"
        with Progress(False) as progress:
            files[f"{rounding}_summary"] = quantize_onnx(
                fp32, target, ArrayImages(calibration), frozenset(), "reduced", progress, folder / rounding,
                weight_rounding=rounding,
            )  # fmt: skip
        files[rounding] = target
    return files


def test_gptq_round_lowers_the_output_error_of_one_layer() -> None:
    rng = np.random.default_rng(3)
    inputs = np.cumsum(rng.normal(size=(40, 2000)), axis=0)[::2]  # 20 correlated input columns
    weight = rng.normal(size=(1, 12, 20))
    scale = np.abs(weight).max(axis=2) / 63
    hessian = 2 * inputs @ inputs.T
    nearest = np.clip(np.round(weight / scale[..., None]), -63, 63)
    integers, floats = gptq_round(weight, hessian[None], scale, 63)
    assert integers.dtype == np.int8 and floats.shape == (1, 12, 0)
    assert np.abs(integers).max() <= 63

    def error(values: np.ndarray) -> float:
        return float(np.sum(((weight - values * scale[..., None])[0] @ inputs) ** 2))

    assert error(integers) < 0.7 * error(nearest)


@pytest.mark.parametrize(
    ("groups", "kernel", "stride", "pad", "dilation", "max_rows"),
    [(1, 3, 2, 1, 1, 10**9), (4, 3, 1, 1, 1, 20), (2, 3, 2, 0, 2, 10**9), (1, 1, 1, 0, 1, 20)],
)
def test_im2col_times_the_weight_is_onnx_runtimes_conv(
    groups: int, kernel: int, stride: int, pad: int, dilation: int, max_rows: int
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 11, 11)).astype(np.float32)
    weight = rng.normal(size=(8, 4 // groups, kernel, kernel)).astype(np.float32)
    node = helper.make_node(
        "Conv", ["x", "w"], ["y"], group=groups, strides=[stride] * 2, pads=[pad] * 4, dilations=[dilation] * 2
    )
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [numpy_helper.from_array(weight, "w")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    expected = onnxruntime.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    layer = Layer(
        "conv", "Conv", "x", "w", weight.reshape(groups, 8 // groups, -1), np.ones((groups, 8 // groups)), 127,
        groups, (kernel, kernel), (stride, stride), (pad,) * 4, (dilation, dilation),
    )  # fmt: skip
    columns = im2col(x, layer, max_rows)  # (groups, columns, positions); every k-th output row when capped
    every = -(-2 * expected.shape[2] * expected.shape[3] // max_rows)
    kept = (
        expected[:, :, ::every]
        .reshape(2, groups, 8 // groups, -1)
        .transpose(1, 2, 0, 3)
        .reshape(groups, 8 // groups, -1)
    )
    assert np.abs(np.matmul(layer.fp32, columns) - kept).max() < 1e-4


def test_gptq_weights_stay_on_the_files_grid(quantized: dict[str, Any]) -> None:
    nearest, gptq = weights(quantized["nearest"]), weights(quantized["gptq"])
    assert nearest.keys() == gptq.keys()
    moved = 0
    for name, values in nearest.items():
        if name.endswith("_scale") or name.endswith("_zero_point"):
            assert np.array_equal(values, gptq[name]), name  # same scales and zero points: the same grid
        elif values.dtype == np.int8:
            limit = np.abs(values.astype(np.int16)).max()
            assert limit in (63, 64, 127), name  # 7-bit, depthwise 8-bit
            assert gptq[name].dtype == np.int8 and np.abs(gptq[name].astype(np.int16)).max() <= limit, name
            moved += int(np.sum(values != gptq[name]))
    assert moved > 0
    assert quantized["nearest_summary"].weight_rounding == "nearest"
    assert quantized["gptq_summary"].weight_rounding == "gptq on 64 images, biases re-fitted (4 layers)"


def test_gptq_lowers_every_layers_output_error_on_the_calibration_images(quantized: dict[str, Any]) -> None:
    calibration = quantized["calibration"]
    layers = ("stem", "depthwise", "project")

    def layer_outputs(path: Path) -> dict[str, np.ndarray]:
        by_node = {node.name: node.output[0] for node in onnx.load(str(path)).graph.node}
        got = outputs(path, calibration, [by_node[layer] for layer in layers] + ["y"])
        return {layer: got[by_node[layer]] for layer in layers} | {"y": got["y"]}

    reference = layer_outputs(quantized["fp32"])
    errors = {}
    for rounding in ("nearest", "gptq"):
        got = layer_outputs(quantized[rounding])
        errors[rounding] = {name: float(np.mean((got[name] - reference[name]) ** 2)) for name in reference}
    for name in reference:
        assert errors["gptq"][name] < errors["nearest"][name], (name, errors)


def test_gptq_also_lowers_the_error_on_images_it_never_saw(quantized: dict[str, Any]) -> None:
    held_out = smooth_images(64, seed=7)
    session = onnxruntime.InferenceSession(str(quantized["fp32"]), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"x": held_out})[0]
    errors = {}
    for rounding in ("nearest", "gptq"):
        session = onnxruntime.InferenceSession(str(quantized[rounding]), providers=["CPUExecutionProvider"])
        errors[rounding] = float(np.mean((session.run(None, {"x": held_out})[0] - reference) ** 2))
    assert errors["gptq"] < errors["nearest"], errors


def test_weight_rounding_key_is_checked(bad_input: Any) -> None:
    bad_input(lambda c: c["PTQ"].update(weight_rounding="adaround"), expect="PTQ.weight_rounding")


def residual_net(seed: int = 0) -> onnx.ModelProto:
    """Stem conv, two residual blocks (1x1 conv + Add) and a 1x1 conv reading the last sum, as in MobileNetV2."""
    rng = np.random.default_rng(seed)

    def tensor(name: str, *shape: int, scale: float = 0.3) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.normal(size=shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["s0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["s0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], name="block1"),
        helper.make_node("Add", ["s0", "c1"], ["a1"]),
        helper.make_node("Relu", ["a1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="block2"),
        helper.make_node("Add", ["a1", "c2"], ["a2"]),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["y"], name="head"),
    ]
    initializers = [
        tensor("w0", 16, 3, 3, 3), tensor("b0", 16), tensor("w1", 16, 16, 1, 1), tensor("b1", 16),
        tensor("w2", 16, 16, 1, 1), tensor("b2", 16), tensor("w3", 8, 16, 1, 1), tensor("b3", 8),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "residual_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def optimized_ops(path: Path, folder: Path) -> list[str]:
    """The op types ONNX Runtime runs for `path` after its graph optimizations (what a session executes)."""
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(folder / f"{path.stem}.optimized.onnx")
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


def test_onnx_runtime_sums_the_last_residual_add_in_float(tmp_path: Path) -> None:
    fp32 = tmp_path / "fp32.onnx"
    onnx.save(residual_net(), str(fp32))
    plain, ort = tmp_path / "plain.onnx", tmp_path / "ort.onnx"
    with Progress(False) as progress:
        summary = quantize_onnx(
            fp32, plain, ArrayImages(smooth_images(64, seed=1)), frozenset(), "reduced", progress, tmp_path / "work"
        )
    ort_summary = write_onnx_runtime_file(plain, ort, summary)
    assert last_residual_sum(onnx.load(str(plain))) == "c2"  # the block conv of the last Add, not the Add a1
    assert ort_summary.float_residual_sum == "c2" and ort_summary.engine == "ort" and summary.float_residual_sum == ""
    plain_ops, ort_ops = optimized_ops(plain, tmp_path), optimized_ops(ort, tmp_path)
    assert plain_ops.count("QLinearConv") == 4 and plain_ops.count("QLinearAdd") == 2
    assert ort_ops.count("QLinearConv") == 3 and ort_ops.count("QLinearAdd") == 1 and ort_ops.count("FusedConv") == 1

    # One rounding instead of two: the last sum is closer to FP32 on images the calibration never saw, and
    # ONNX Runtime's fused graph computes what the file says (its float reading, up to ties in the rounding).
    held_out = smooth_images(64, seed=7)
    reference = outputs(fp32, held_out, ["a2"])["a2"]
    plain_model, ort_model = onnx.load(str(plain)), onnx.load(str(ort))
    quantized = next(node.output[0] for node in ort_model.graph.node if node.input[0] == "a2")
    dequantized = next(node.output[0] for node in ort_model.graph.node if node.input[0] == quantized)
    errors = {
        name: float(np.mean((outputs(model, held_out, [dequantized])[dequantized] - reference) ** 2))
        for name, model in (("plain", plain_model), ("ort", ort_model))
    }
    assert errors["ort"] < errors["plain"], errors
    fused = outputs(ort_model, held_out, [quantized])[quantized].astype(np.int16)
    reading = outputs(ort_model, held_out, [quantized], disable_optimizations=True)[quantized].astype(np.int16)
    assert np.abs(fused - reading).max() <= 1 and np.mean(fused != reading) < 0.01


def test_a_net_without_residual_adds_is_written_unchanged(tmp_path: Path) -> None:
    fp32, plain, ort = tmp_path / "fp32.onnx", tmp_path / "plain.onnx", tmp_path / "ort.onnx"
    onnx.save(conv_net(), str(fp32))
    with Progress(False) as progress:
        summary = quantize_onnx(
            fp32, plain, ArrayImages(smooth_images(16, seed=1)), frozenset(), "reduced", progress, tmp_path / "work"
        )
    assert write_onnx_runtime_file(plain, ort, summary).float_residual_sum == ""
    assert onnx.load(str(ort)).graph == onnx.load(str(plain)).graph


def test_the_class_probabilities_stay_float(tmp_path: Path) -> None:
    """The quantizer would round the softmax output onto a 1/255 grid (rows summing to 0.85-1.1, read as logits
    by postprocess and softmaxed again); the file ends in the float Softmax of the dequantized logits."""
    model = conv_net()
    model.graph.node[-1].output[0] = "logits"
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["y"], axis=1))
    fp32, target = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save(model, str(fp32))
    with Progress(False) as progress:
        quantize_onnx(fp32, target, ArrayImages(smooth_images(32, seed=1)), frozenset(), "reduced", progress, tmp_path)
    quantized = onnx.load(str(target))
    assert quantized.graph.node[-1].op_type == "Softmax" and quantized.graph.node[-1].output[0] == "y"
    assert quantized.graph.node[-2].op_type == "DequantizeLinear"  # the logits themselves stay quantized
    held_out = smooth_images(16, seed=7)
    probabilities = outputs(target, held_out, ["y"])["y"]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert are_probabilities(probabilities)
    reference = outputs(fp32, held_out, ["y"])["y"]
    assert np.abs(probabilities - reference).max() < 0.1
