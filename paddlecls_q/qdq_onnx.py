"""One calibration, each engine's fastest ONNX Q/DQ encoding that cannot saturate on this CPU.

paddle2onnx 1.3.1 turns a PaddleSlim INT8 model into a Q/DQ graph with symmetric int8
activations (zero point 0), float weights behind a QuantizeLinear, and an extra Q/DQ pair between
each quantized op and its ReLU. This module rewrites that graph, keeping the calibrated (or
QAT-trained) activation grids:

- both engines: weights become initializers (the weight QuantizeLinear folded: 4x smaller files);
  the Q/DQ pair between an op and the ReLU/ReLU6 right after it is dropped (Paddle Inference fuses
  conv+ReLU and requantizes once, and so do the engines); after a ReLU, activations become uint8
  with zero point 0 on the same scale (every point of the int8 (s, 0) grid, continued to 255*s).
- `ort`: signed activations (the image, residual sums) become uint8 (s, 128), exactly the int8
  (s, 0) grid (ONNX Runtime's s8s8 kernels are slow on AVX2). A ReLU6 output's scale is fitted to
  6/255 (Clip(0, hi): hi/255) so that ONNX Runtime folds the Clip into the QuantizeLinear and forms QLinearConv (a finer
  grid on the same range; without it the convs before each ReLU6 run in float, 2x slower than FP32).
- `openvino`: signed activations stay int8 (s, 0).
- weights (`default_weight_encoding`): int8 on CPUs with VNNI. Without VNNI (AVX2 only) a u8 x s8
  kernel sums pairs of products in int16 (VPMADDUBSW) and saturates on full-range weights
  (MobileNetV2: OpenVINO -16.6 pt): ONNX Runtime gets uint8 weights (int8 + 128, zero point 128,
  the very same values, u8u8 kernels that widen first; 0.86x of FP32 speed instead of 1.0x, for
  0.6 pt) and OpenVINO 7-bit weights (requantized) on the convs whose input is signed.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from paddlecls_q.environment import vnni_flags

ENGINES = ("ort", "openvino")
ReduceRange = Literal["none", "full_range_inputs", "all"]
WeightEncoding = Literal["auto", "int8", "int7", "uint8"]
# x86 flags of an int8 dot product that accumulates in int32 (no int16 pair sums to saturate).
# Ops whose output is non-negative whenever their (first) input is.
_SIGN_PRESERVING_OPS = {"MaxPool", "AveragePool", "GlobalAveragePool", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
_QUANTIZED_LAYER_OPS = {"Conv", "MatMul", "Gemm", "ConvTranspose"}


@dataclass
class EncodingSummary:
    """What an encoding did, for the quantize report."""

    engine: str
    weights: str = "int8"
    cpu_vnni: bool = False
    full_range_weights: bool = False  # int8 weights on every layer: only CPUs with VNNI run them unsaturated
    activation_encodings: dict[str, int] = field(default_factory=dict)
    int8_weights: int = 0
    reduced_range_weights: int = 0
    uint8_weights: int = 0
    fitted_clip_scales: int = 0
    dropped_pre_relu_qdq: int = 0
    float_layers: list[str] = field(default_factory=list)
    nodes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@functools.cache
def cpu_has_vnni() -> bool:
    """Whether this CPU multiplies int8 with VNNI/AMX (environment.vnni_flags, read once)."""
    return bool(vnni_flags())


def default_weight_encoding(engine: str, vnni: bool | None = None) -> str:
    """int8 weights where the CPU has VNNI; without it the encoding that cannot saturate: uint8
    (zero point 128, the very same values) for ONNX Runtime, 7-bit int8 for OpenVINO (whose
    kernels want signed weights; NNCF's overflow fix does the same). Measured in docs/accuracy.md."""
    if cpu_has_vnni() if vnni is None else vnni:
        return "int8"
    return "uint8" if engine == "ort" else "int7"


class _Graph:
    """Producer/consumer indexes over an onnx GraphProto, rebuilt after each structural edit."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.graph = model.graph
        self.reindex()

    def reindex(self) -> None:
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.graph_outputs = {output.name for output in self.graph.output}

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.initializers[name])

    def set_initializer(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(value, name)
        if name in self.initializers:
            self.initializers[name].CopyFrom(tensor)
        else:
            self.graph.initializer.append(tensor)
            self.initializers[name] = self.graph.initializer[-1]
        return name

    def unique(self, name: str) -> str:
        candidate, number = name, 1
        while candidate in self.initializers or candidate in self.producer:
            candidate, number = f"{name}_{number}", number + 1
        return candidate

    def remove_nodes(self, nodes: list[Any]) -> None:
        doomed = {id(node) for node in nodes}
        kept = [node for node in self.graph.node if id(node) not in doomed]
        del self.graph.node[:]
        self.graph.node.extend(kept)
        self.reindex()

    def rename_input(self, old: str, new: str) -> None:
        for node in self.consumers.get(old, []):
            for index, name in enumerate(node.input):
                if name == old:
                    node.input[index] = new

    def drop_unused_initializers(self) -> None:
        used = {name for node in self.graph.node for name in node.input} | self.graph_outputs
        kept = [init for init in self.graph.initializer if init.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)
        self.reindex()


def _constants_to_initializers(graph: _Graph) -> None:
    """paddle2onnx emits weights and scales as Constant nodes; engines and edits prefer initializers."""
    from onnx import numpy_helper

    constants = [node for node in graph.graph.node if node.op_type == "Constant" and len(node.attribute) == 1]
    constants = [node for node in constants if node.attribute[0].name == "value"]
    for node in constants:
        graph.set_initializer(node.output[0], numpy_helper.to_array(node.attribute[0].t))
    graph.remove_nodes(constants)


def _broadcast(parameter: np.ndarray, rank: int, axis: int) -> np.ndarray:
    if parameter.ndim == 0:
        return parameter
    shape = [1] * rank
    shape[axis] = parameter.size
    return parameter.reshape(shape)


def _quantize(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int) -> np.ndarray:
    """ONNX QuantizeLinear semantics: round half to even, add the zero point, saturate."""
    info = np.iinfo(zero_point.dtype)
    rank = values.ndim
    scaled = np.rint(values.astype(np.float64) / _broadcast(scale.astype(np.float64), rank, axis))
    shifted = scaled + _broadcast(zero_point.astype(np.int64), rank, axis)
    return np.clip(shifted, info.min, info.max).astype(zero_point.dtype)


def _axis(node: Any) -> int:
    for attribute in node.attribute:
        if attribute.name == "axis":
            return int(attribute.i)
    return 1


def _fold_weight_quantizers(graph: _Graph) -> int:
    """QuantizeLinear(float constant) → an int8 initializer the DequantizeLinear reads directly."""
    folded = []
    for node in graph.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in graph.initializers:
            continue
        weights = graph.array(node.input[0])
        if weights.dtype.kind != "f" or len(node.input) < 3 or node.input[2] not in graph.initializers:
            continue
        quantized = _quantize(weights, graph.array(node.input[1]), graph.array(node.input[2]), _axis(node))
        name = graph.set_initializer(graph.unique(f"{node.input[0]}_quantized"), quantized)
        graph.rename_input(node.output[0], name)
        folded.append(node)
    graph.remove_nodes(folded)
    return len(folded)


def _is_relu_like(graph: _Graph, node: Any) -> bool:
    """Relu, or a Clip whose lower bound is 0 (paddle2onnx's ReLU6): its output is never negative."""
    if node.op_type == "Relu":
        return True
    if node.op_type != "Clip" or len(node.input) < 2 or node.input[1] not in graph.initializers:
        return False
    return float(graph.array(node.input[1])) >= 0.0


def _drop_pre_relu_qdq(graph: _Graph) -> int:
    """X → Q → DQ → Relu (or ReLU6) becomes X → Relu: the quantize that counts is the one after it.

    The dropped pair quantizes the op's pre-activation output: for ReLU6 its range is often twice the
    clipped one (MobileNetV2: 12.8 vs 6.0), so keeping it rounds to a step twice as coarse. Paddle
    Inference fuses conv+ReLU6 and requantizes once, after the activation.
    """
    doomed: list[Any] = []
    for node in graph.graph.node:
        if not _is_relu_like(graph, node):
            continue
        dequantize = graph.producer.get(node.input[0])
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        quantize = graph.producer.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear" or quantize.input[0] in graph.initializers:
            continue
        if len(graph.consumers[dequantize.output[0]]) != 1 or len(graph.consumers[quantize.output[0]]) != 1:
            continue
        if dequantize.output[0] in graph.graph_outputs or quantize.output[0] in graph.graph_outputs:
            continue
        node.input[0] = quantize.input[0]
        doomed.extend([quantize, dequantize])
    graph.remove_nodes(doomed)
    return len(doomed) // 2


def _is_non_negative(graph: _Graph, name: str, depth: int = 0) -> bool:
    node = graph.producer.get(name)
    if node is None or depth > 8:
        return False
    if _is_relu_like(graph, node):
        return True
    if node.op_type in _SIGN_PRESERVING_OPS:
        return _is_non_negative(graph, node.input[0], depth + 1)
    if node.op_type == "DequantizeLinear" and len(node.input) >= 3 and node.input[2] in graph.initializers:
        zero_point = graph.array(node.input[2])
        return bool(np.all(zero_point == np.iinfo(zero_point.dtype).min))
    return False


def _activation_quantizers(graph: _Graph) -> list[Any]:
    return [
        node
        for node in graph.graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in graph.initializers and len(node.input) >= 3
    ]


def _reencode_activations(graph: _Graph, summary: EncodingSummary, signed_as_uint8: bool) -> dict[str, int]:
    """Non-negative tensors: int8 (s, 0) → uint8 (s, 0). Signed ones: → uint8 (s, 128) if
    `signed_as_uint8`, else left int8 (s, 0). Returns the uint8 zero point per Q output."""
    zero_points: dict[str, int] = {}
    for quantize in _activation_quantizers(graph):
        old = graph.array(quantize.input[2])
        consumers = graph.consumers[quantize.output[0]]
        if old.dtype != np.int8 or np.any(old != 0) or any(node.op_type != "DequantizeLinear" for node in consumers):
            _count(summary, f"{old.dtype}_zero_point_{int(old.flat[0]) if old.size else 0}")
            continue
        if _is_non_negative(graph, quantize.input[0]):
            zero_point = 0
        elif signed_as_uint8:
            zero_point = 128
        else:
            _count(summary, "int8_zero_point_0")
            continue
        name = graph.set_initializer(
            graph.unique(f"{quantize.output[0]}_zero_point_u8"), np.full(old.shape, zero_point, dtype=np.uint8)
        )
        quantize.input[2] = name
        for dequantize in consumers:
            dequantize.input[2] = name
        zero_points[quantize.output[0]] = zero_point
        _count(summary, f"uint8_zero_point_{zero_point}")
    graph.reindex()
    return zero_points


def _count(summary: EncodingSummary, key: str) -> None:
    summary.activation_encodings[key] = summary.activation_encodings.get(key, 0) + 1


def _layer_inputs(graph: _Graph, node: Any) -> tuple[Any | None, Any | None, Any | None]:
    """(activation DQ, weight DQ, bias DQ) feeding a Conv/MatMul, where present."""
    dequantizers = [graph.producer.get(name) if name else None for name in node.input]
    dequantizers = [d if d is not None and d.op_type == "DequantizeLinear" else None for d in dequantizers]
    activation = dequantizers[0] if dequantizers else None
    weight = dequantizers[1] if len(dequantizers) > 1 else None
    if weight is not None and weight.input[0] not in graph.initializers:
        weight = None
    bias = dequantizers[2] if len(dequantizers) > 2 else None
    return activation, weight, bias


def _rescale_bias(graph: _Graph, bias: Any | None, factor: float, tag: str) -> None:
    """An int32 bias's scale is input scale x weight scale: when either changes by `factor`, keep the
    bias's real value on the new grid."""
    if bias is None or bias.input[0] not in graph.initializers or graph.array(bias.input[0]).dtype != np.int32:
        return
    bias_scale = graph.array(bias.input[1]).astype(np.float64)
    real_bias = graph.array(bias.input[0]).astype(np.float64) * bias_scale
    new_bias_scale = (bias_scale * factor).astype(np.float32)
    requantized = np.rint(real_bias / new_bias_scale.astype(np.float64)).astype(np.int32)
    bias.input[0] = graph.set_initializer(graph.unique(f"{bias.input[0]}_{tag}"), requantized)
    bias.input[1] = graph.set_initializer(graph.unique(f"{bias.input[1]}_{tag}"), new_bias_scale)


def _reduce_weight_range(graph: _Graph, node: Any) -> bool:
    """Requantize one layer's int8 weights to 7 bits (scale x 127/63) and its int32 bias to match."""
    _, weight, bias = _layer_inputs(graph, node)
    if weight is None:
        return False
    values = graph.array(weight.input[0])
    if values.dtype != np.int8:
        return False
    scale = graph.array(weight.input[1]).astype(np.float64)
    axis = _axis(weight)
    real = values.astype(np.float64) * _broadcast(scale, values.ndim, axis)
    new_scale = (scale * 127.0 / 63.0).astype(np.float32)
    reduced = np.clip(np.rint(real / _broadcast(new_scale.astype(np.float64), values.ndim, axis)), -64, 63).astype(
        np.int8
    )
    graph.set_initializer(weight.input[0], reduced)
    scale_name = graph.set_initializer(graph.unique(f"{weight.input[0]}_scale_7bit"), new_scale)
    weight.input[1] = scale_name
    _rescale_bias(graph, bias, 127.0 / 63.0, "7bit")
    return True


def _uint8_weights(graph: _Graph, node: Any) -> bool:
    """int8 weights w → uint8 w + 128 with zero point 128: the very same values, run by ONNX Runtime's
    u8u8 kernels, which widen to int16 before multiplying and so cannot saturate without VNNI."""
    _, weight, _ = _layer_inputs(graph, node)
    if weight is None or len(weight.input) < 3 or weight.input[2] not in graph.initializers:
        return False
    values, zero_point = graph.array(weight.input[0]), graph.array(weight.input[2])
    if values.dtype != np.int8 or np.any(zero_point != 0):
        return False
    shifted = (values.astype(np.int16) + 128).astype(np.uint8)
    graph.set_initializer(weight.input[0], shifted)
    weight.input[2] = graph.set_initializer(
        graph.unique(f"{weight.input[0]}_zero_point_u8"), np.full(zero_point.shape, 128, dtype=np.uint8)
    )
    return True


def _fit_clip_scales(graph: _Graph) -> set[str]:
    """Clip(0, hi) → Q (uint8, zero point 0) whose range 255·s passes hi: scale → hi/255, so that the
    uint8 range is exactly [0, hi] and ONNX Runtime folds the Clip into the Q (and forms QLinearConv;
    with the Clip left in, the conv before it runs in float). A finer grid on the same range; the
    int32 biases of the layers reading it are requantized to the new input scale."""
    fitted = set()
    for quantize in _activation_quantizers(graph):
        clip = graph.producer.get(quantize.input[0])
        if clip is None or clip.op_type != "Clip" or not _is_relu_like(graph, clip) or len(clip.input) < 3:
            continue
        if clip.input[2] not in graph.initializers or graph.array(quantize.input[2]).dtype != np.uint8:
            continue
        if np.any(graph.array(quantize.input[2]) != 0):
            continue
        high, scale = float(graph.array(clip.input[2])), graph.array(quantize.input[1])
        if scale.size != 1 or float(scale) * 255 <= high:
            continue
        new = np.float32(high / 255)
        while np.float32(new * np.float32(255)) > np.float32(high):  # ORT compares in float32
            new = np.nextafter(new, np.float32(0))
        factor = float(new) / float(scale)
        name = graph.set_initializer(graph.unique(f"{quantize.output[0]}_scale_fit"), np.array(new, np.float32))
        quantize.input[1] = name
        for dequantize in graph.consumers[quantize.output[0]]:
            dequantize.input[1] = name
            for layer in graph.consumers[dequantize.output[0]]:
                if layer.op_type in _QUANTIZED_LAYER_OPS and layer.input[0] == dequantize.output[0]:
                    _rescale_bias(graph, _layer_inputs(graph, layer)[2], factor, "fit")
        fitted.add(quantize.output[0])
    graph.reindex()
    return fitted


def _apply_reduce_range(graph: _Graph, zero_points: dict[str, int], fitted: set[str], mode: ReduceRange) -> int:
    """7-bit weights on every layer ("all") or on those whose input integers span the full 8-bit range
    ("full_range_inputs": signed inputs, and ReLU6 outputs fitted to 255 steps). A non-negative input
    on its int8 scale stays below 128, so its pair sums cannot saturate even with 8-bit weights."""
    if mode == "none":
        return 0
    reduced = 0
    for node in list(graph.graph.node):
        if node.op_type not in _QUANTIZED_LAYER_OPS:
            continue
        activation, _, _ = _layer_inputs(graph, node)
        if activation is None:
            continue
        name = activation.input[0]
        full_range = zero_points.get(name) != 0 or name in fitted  # signed: uint8 zero point 128 or int8
        if (mode == "all" or full_range) and _reduce_weight_range(graph, node):
            reduced += 1
    graph.reindex()
    return reduced


def encode(
    model: Any,
    engine: str,
    reduce_range: ReduceRange = "none",
    float_layers: frozenset[str] = frozenset(),
    weights: WeightEncoding = "auto",
) -> tuple[Any, EncodingSummary]:
    """A copy of the paddle2onnx Q/DQ `model` in `engine`'s encoding ('ort' or 'openvino').

    `float_layers` (Paddle weight names) run in float: paddle2onnx re-quantizes a layer that
    PaddleSlim skipped whenever its input is quantized, so the FP32 choice is applied here too.
    `weights`: int8, int7 (7-bit weights where the layer's input spans the full 8-bit range), uint8 (ONNX Runtime only:
    int8 + 128, zero point 128) or auto (`default_weight_encoding` for this CPU). `reduce_range`
    additionally keeps the named layers' weights to 7 bits.
    """
    import onnx

    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; encodings exist for {', '.join(ENGINES)}")
    chosen = default_weight_encoding(engine) if weights == "auto" else weights
    if chosen not in ("int8", "int7", "uint8") or (chosen == "uint8" and engine != "ort"):
        raise ValueError(f"weights {weights!r} is not an encoding for {engine}")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = _Graph(copy)
    summary = EncodingSummary(engine=engine, weights=chosen, cpu_vnni=cpu_has_vnni())
    _constants_to_initializers(graph)
    summary.float_layers = _keep_float(graph, set(float_layers))
    summary.int8_weights = _fold_weight_quantizers(graph)
    summary.dropped_pre_relu_qdq = _drop_pre_relu_qdq(graph)
    zero_points = _reencode_activations(graph, summary, signed_as_uint8=engine == "ort")
    fitted = _fit_clip_scales(graph) if engine == "ort" else set()
    summary.fitted_clip_scales = len(fitted)
    mode = "full_range_inputs" if chosen == "int7" and reduce_range == "none" else reduce_range
    summary.reduced_range_weights = _apply_reduce_range(graph, zero_points, fitted, mode)
    summary.full_range_weights = chosen == "int8" and mode == "none"
    if chosen == "uint8":
        layers = [node for node in graph.graph.node if node.op_type in _QUANTIZED_LAYER_OPS]
        summary.uint8_weights = sum(_uint8_weights(graph, node) for node in layers)
        graph.reindex()
    graph.drop_unused_initializers()
    summary.nodes = len(graph.graph.node)
    onnx.checker.check_model(copy)
    return copy, summary


def _weight_source(graph: _Graph, dequantize: Any) -> tuple[str, np.ndarray] | None:
    """(Paddle weight name, float values) behind a weight DequantizeLinear, in either graph form:
    paddle2onnx's float constant -> QuantizeLinear -> DequantizeLinear, or an int8 initializer."""
    source = dequantize.input[0]
    quantize = graph.producer.get(source)
    if quantize is not None and quantize.op_type == "QuantizeLinear" and quantize.input[0] in graph.initializers:
        values = graph.array(quantize.input[0])
        return (quantize.input[0], values) if values.dtype.kind == "f" else None
    if source not in graph.initializers:
        return None
    return source.split("_quantized")[0], _dequantized(graph, dequantize)


def _dequantized(graph: _Graph, dequantize: Any) -> np.ndarray:
    values = graph.array(dequantize.input[0]).astype(np.float64)
    scale = graph.array(dequantize.input[1]).astype(np.float64)
    zero_point = graph.array(dequantize.input[2]).astype(np.float64) if len(dequantize.input) > 2 else np.zeros(())
    axis = _axis(dequantize)
    real = (values - _broadcast(zero_point, values.ndim, axis)) * _broadcast(scale, values.ndim, axis)
    return real.astype(np.float32)


def _quantized_layer_weights(graph: _Graph) -> list[tuple[Any, Any, str, np.ndarray]]:
    """(layer node, weight DequantizeLinear, Paddle weight name, float weights) of every quantized layer."""
    layers = []
    for node in graph.graph.node:
        if node.op_type not in _QUANTIZED_LAYER_OPS or len(node.input) < 2:
            continue
        dequantize = graph.producer.get(node.input[1])
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        source = _weight_source(graph, dequantize)
        if source is not None:
            layers.append((node, dequantize, *source))
    return layers


def quantized_layers(model: Any) -> list[str]:
    """Paddle weight names (e.g. conv2d_3.w_0) of the quantized Conv/MatMul layers, in graph order."""
    return [name for _, _, name, _ in _quantized_layer_weights(_Graph(model))]


def _remove_orphans(graph: _Graph) -> None:
    while True:
        used = {name for node in graph.graph.node for name in node.input} | graph.graph_outputs
        orphans = [
            node
            for node in graph.graph.node
            if node.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(out in used for out in node.output)
        ]
        if not orphans:
            return
        graph.remove_nodes(orphans)


def _keep_float(graph: _Graph, weight_names: set[str]) -> list[str]:
    """Run the named layers in float: float weights and bias, and their input bypasses its Q/DQ pair."""
    kept = []
    for node, _, name, weights in _quantized_layer_weights(graph):
        if name not in weight_names:
            continue
        node.input[1] = graph.set_initializer(graph.unique(f"{name}_float"), weights)
        bias = graph.producer.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if bias is not None and bias.op_type == "DequantizeLinear" and bias.input[0] in graph.initializers:
            node.input[2] = graph.set_initializer(graph.unique(f"{bias.input[0]}_float"), _dequantized(graph, bias))
        activation = graph.producer.get(node.input[0])
        if activation is not None and activation.op_type == "DequantizeLinear":
            quantize = graph.producer.get(activation.input[0])
            if quantize is not None and quantize.op_type == "QuantizeLinear":
                node.input[0] = quantize.input[0]
        kept.append(name)
        graph.reindex()
    _remove_orphans(graph)
    return kept


def dequantize_layers(model: Any, weight_names: set[str]) -> Any:
    """A copy of `model` where the named layers run in float (what keeping them FP32 would give
    without recalibrating; sensitivity ranking uses it)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = _Graph(copy)
    _keep_float(graph, set(weight_names))
    graph.drop_unused_initializers()
    return copy


def write_engine_models(
    paddle2onnx_file: Path,
    folder: Path,
    engines: tuple[str, ...] = ENGINES,
    reduce_range: ReduceRange = "none",
    float_layers: frozenset[str] = frozenset(),
    weights: WeightEncoding = "auto",
) -> dict[str, EncodingSummary]:
    """Write `inference.<engine>.onnx` for each engine into `folder` (the runtime layer picks them up)."""
    import onnx

    source = onnx.load(str(paddle2onnx_file))
    summaries = {}
    for engine in engines:
        encoded, summaries[engine] = encode(source, engine, reduce_range, float_layers, weights)
        onnx.save(encoded, str(Path(folder) / f"inference.{engine}.onnx"))
    return summaries
