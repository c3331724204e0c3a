"""The Q/DQ placement TensorRT fuses best, from paddle2onnx's generic Q/DQ export.

TensorRT's explicit-quantization rules (its developer guide, "Q/DQ layer-placement
recommendations"; NVIDIA ModelOpt and the TensorFlow quantization toolkit's ResNetV1QDQCase
apply them): quantize the inputs of weighted layers (Conv, Gemm, MatMul), not their outputs;
TensorRT propagates the scales and fuses conv + bias + ReLU, requantizing once. A residual Add
fuses into the epilogue of the conv that feeds it when the Add's *other* input (the skip, or
identity, branch) arrives through a DequantizeLinear, so that branch gets Q/DQ and the conv's own
output does not. Nothing on the network's outputs is quantized.

The rewrite changes no calibrated scale: weights keep paddle2onnx's per-channel symmetric
QuantizeLinear on axis 0 (float constant → Q → DQ, the form every TensorRT from 8.6 folds), and
activations stay symmetric int8 (zero point 0). A skip branch is given the Q/DQ pair its tensor
already has (in ResNet blocks the skip tensor is quantized for the next conv); where no
calibrated scale exists (a shortcut that is itself a conv, as in ResNet50_vd's downsampling
blocks) the Add stays float and the summary counts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.qdq_onnx import _axis, _constants_to_initializers, _Graph, _keep_float, _remove_orphans

ENGINE = "trt"
LAYER_OPS = {"Conv", "Gemm", "MatMul"}
# Ops between a layer and a residual Add that TensorRT folds into the layer's epilogue.
_EPILOGUE_OPS = {"BatchNormalization", "Add"}


@dataclass
class TensorRtSummary:
    """What the TensorRT placement did, for the quantize report."""

    engine: str = ENGINE
    layer_input_qdq: int = 0
    removed_activation_qdq: int = 0
    residual_adds_quantized: int = 0
    residual_adds_float: int = 0
    per_channel_weights: int = 0
    per_tensor_weights: int = 0
    float_layers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    nodes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _activation_pairs(graph: _Graph) -> list[tuple[Any, list[Any]]]:
    """(QuantizeLinear, its DequantizeLinears) for every activation (non-constant) quantizer."""
    pairs = []
    for node in graph.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in graph.initializers:
            continue
        consumers = graph.consumers.get(node.output[0], [])
        if consumers and all(consumer.op_type == "DequantizeLinear" for consumer in consumers):
            pairs.append((node, consumers))
    return pairs


def _is_layer_input(node: Any, index: int) -> bool:
    """Data inputs of a weighted layer: Conv/Gemm input 0, MatMul inputs 0 and 1 (input 1 of Conv/Gemm is the weight)."""
    if node.op_type == "MatMul":
        return index < 2
    return node.op_type in LAYER_OPS and index == 0


def _keep_only_layer_inputs(graph: _Graph, summary: TensorRtSummary) -> None:
    """Consumers other than a layer's data input read the float tensor; unused Q/DQ pairs go."""
    from onnx import helper

    identities = []
    for quantize, dequantizers in _activation_pairs(graph):
        zero_point = graph.array(quantize.input[2]) if len(quantize.input) > 2 else np.zeros((), np.uint8)
        if zero_point.dtype != np.int8 or np.any(zero_point != 0):
            summary.problems.append(
                f"{quantize.output[0]}: activation zero point {zero_point.dtype} {zero_point.flat[0]}"
            )
        for dequantize in dequantizers:
            for consumer in list(graph.consumers.get(dequantize.output[0], [])):
                for index, name in enumerate(consumer.input):
                    if name == dequantize.output[0] and not _is_layer_input(consumer, index):
                        consumer.input[index] = quantize.input[0]
            if dequantize.output[0] in graph.graph_outputs:
                # The network's output is the float tensor: the DQ becomes an Identity of the Q's input.
                identities.append(helper.make_node("Identity", [quantize.input[0]], [dequantize.output[0]]))
                dequantize.output[0] = graph.unique(f"{dequantize.output[0]}_unused")
    graph.graph.node.extend(identities)
    graph.reindex()
    before = sum(1 for node in graph.graph.node if node.op_type == "QuantizeLinear")
    _remove_orphans(graph)
    after = sum(1 for node in graph.graph.node if node.op_type == "QuantizeLinear")
    summary.removed_activation_qdq = before - after


def _from_layer(graph: _Graph, name: str, depth: int = 0) -> bool:
    """Whether `name` is a layer's output, through ops TensorRT folds into the layer's epilogue."""
    node = graph.producer.get(name)
    if node is None or depth > 4:
        return False
    if node.op_type in LAYER_OPS:
        return True
    if node.op_type == "BatchNormalization":
        return _from_layer(graph, node.input[0], depth + 1)
    if node.op_type == "Add" and sum(1 for i in node.input if i in graph.initializers) == 1:  # a bias add
        other = next(i for i in node.input if i not in graph.initializers)
        return _from_layer(graph, other, depth + 1)
    return False


def _dequantized_copy(graph: _Graph, name: str) -> str | None:
    """The output of an existing DequantizeLinear of float tensor `name`, if it is quantized anywhere."""
    for node in graph.consumers.get(name, []):
        if node.op_type != "QuantizeLinear" or node.input[0] != name:
            continue
        for dequantize in graph.consumers.get(node.output[0], []):
            if dequantize.op_type == "DequantizeLinear":
                return str(dequantize.output[0])
    return None


def _place_residual_qdq(graph: _Graph, summary: TensorRtSummary) -> None:
    """Residual Add (layer output + skip): the skip input reads a DequantizeLinear, the layer output stays float."""
    for node in list(graph.graph.node):
        if node.op_type != "Add" or len(node.input) != 2 or any(i in graph.initializers for i in node.input):
            continue
        from_layer = [_from_layer(graph, name) for name in node.input]
        if not any(from_layer):
            continue
        skip = 1 if from_layer[0] else 0
        producer = graph.producer.get(node.input[skip])
        if producer is not None and producer.op_type == "DequantizeLinear":
            summary.residual_adds_quantized += 1
            continue
        dequantized = _dequantized_copy(graph, node.input[skip])
        if dequantized is None:
            summary.residual_adds_float += 1
            continue
        node.input[skip] = dequantized
        summary.residual_adds_quantized += 1
    graph.reindex()


def _check_weights(graph: _Graph, summary: TensorRtSummary) -> None:
    """Weights must be symmetric, per channel on the output-channel axis 0 (or per tensor)."""
    for node in graph.graph.node:
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        dequantize = graph.producer.get(node.input[1])
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        scale = graph.array(dequantize.input[1]) if dequantize.input[1] in graph.initializers else None
        zero_point = graph.array(dequantize.input[2]) if len(dequantize.input) > 2 and dequantize.input[2] else None
        if zero_point is not None and np.any(zero_point != 0):
            summary.problems.append(f"{node.input[1]}: weight zero point is not 0")
        if scale is None or scale.size == 1:
            summary.per_tensor_weights += 1
        elif _axis(dequantize) == 0 or node.op_type == "MatMul":  # MatMul weights are [K, N]: channels on axis 1
            summary.per_channel_weights += 1
        else:
            summary.problems.append(f"{node.input[1]}: per-channel weight scales on axis {_axis(dequantize)}, not 0")


def tensorrt_model(model: Any, float_layers: frozenset[str] = frozenset()) -> tuple[Any, TensorRtSummary]:
    """A copy of the paddle2onnx Q/DQ `model` with TensorRT's Q/DQ placement; `float_layers`
    (Paddle weight names) run in float, as in the other engines' files."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = _Graph(copy)
    summary = TensorRtSummary()
    _constants_to_initializers(graph)
    summary.float_layers = _keep_float(graph, set(float_layers))
    _keep_only_layer_inputs(graph, summary)
    _place_residual_qdq(graph, summary)
    _check_weights(graph, summary)
    summary.layer_input_qdq = sum(
        1
        for node in graph.graph.node
        for index, name in enumerate(node.input)
        if _is_layer_input(node, index)
        and (producer := graph.producer.get(name)) is not None
        and producer.op_type == "DequantizeLinear"
        and not _dequantizes_a_constant(graph, producer)
    )
    graph.drop_unused_initializers()
    _sort_topologically(copy)
    summary.nodes = len(copy.graph.node)
    onnx.checker.check_model(copy)
    return copy, summary


def _dequantizes_a_constant(graph: _Graph, dequantize: Any) -> bool:
    """A weight DQ: it reads an int8 initializer, or a QuantizeLinear of a float initializer."""
    source = dequantize.input[0]
    quantize = graph.producer.get(source)
    if quantize is not None and quantize.op_type == "QuantizeLinear":
        source = quantize.input[0]
    return source in graph.initializers


def _sort_topologically(model: Any) -> None:
    """Identity nodes appended for the outputs may sit after their consumers; ONNX wants producers first."""
    graph = model.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            ordered.extend(pending)  # a cycle or a dangling input: leave it to onnx.checker to name
            break
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        placed = {id(node) for node in ready}
        pending = [node for node in pending if id(node) not in placed]
    del graph.node[:]
    graph.node.extend(ordered)


def write_tensorrt_model(
    paddle2onnx_file: Path, folder: Path, float_layers: frozenset[str] = frozenset()
) -> TensorRtSummary:
    """Write `inference.trt.onnx` into `folder`; the `trt` backend loads it in place of the generic export."""
    import onnx

    model, summary = tensorrt_model(onnx.load(str(paddle2onnx_file)), float_layers)
    onnx.save(model, str(Path(folder) / f"inference.{ENGINE}.onnx"))
    return summary
