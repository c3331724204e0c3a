"""GPTQ rounding of the int8 weights in an ONNX Runtime QDQ file, from the calibration images' activations.

Nearest rounding treats every weight alone; GPTQ (Frantar et al. 2022, OBQ for convs) rounds one input
column at a time and moves each rounding error onto the columns not yet rounded, weighted by the inverse of
H = 2 X^T X of the layer's inputs (im2col rows for a conv), so the layer's output on real inputs moves less.
The weights stay on the file's own per-channel grid (its scales, its 7- or 8-bit range): the engines run the
same ops at the same speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from paddlecls_q.quantize.progress import Progress, raise_if_interrupted

DAMPING = 0.01  # of the mean of H's diagonal, as in GPTQ
BLOCK = 128  # columns rounded before the rest are updated with one matrix product
MAX_ROWS = 4096  # output positions of one layer per calibration batch that H is summed over


@dataclass
class Layer:
    """One Conv / MatMul / Gemm whose weight the QDQ file holds as int8 on a symmetric per-channel grid."""

    node: str
    op_type: str
    input_name: str  # the layer's activation input in the FP32 graph
    weight: str  # the int8 initializer in the QDQ graph
    fp32: np.ndarray  # the FP32 weight, (groups, rows, columns): one row per output channel
    scale: np.ndarray  # (groups, rows)
    qmax: int
    groups: int = 1
    kernel: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    transposed: bool = False  # MatMul / Gemm without transB: the stored weight is (inputs, outputs)
    input_grid: tuple[float, int, int, int] | None = None  # the input's scale, zero point, lowest, highest integer
    bias: np.ndarray | None = None  # the FP32 bias (groups, rows), when the QDQ file holds it as int32
    bias_weight: str = ""  # its int32 initializer in the QDQ graph
    bias_scale: np.ndarray | None = None  # (groups, rows)


def _attributes(node: Any) -> dict[str, Any]:
    import onnx

    values = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
    return {name: value.decode() if isinstance(value, bytes) else value for name, value in values.items()}


def find_layers(qdq_model: Any, fp32_model: Any, qmax_by_weight: dict[str, int]) -> list[Layer]:
    """The QDQ graph's int8-weight layers that also appear (by node name) in the FP32 graph.

    `qmax_by_weight`: the grid's largest integer per FP32 weight name (63/64 for 7-bit, 127 for 8-bit);
    a weight missing from it is skipped.
    """
    import onnx
    from onnx import numpy_helper

    qdq_initializers = {tensor.name: tensor for tensor in qdq_model.graph.initializer}
    fp32_initializers = {tensor.name: tensor for tensor in fp32_model.graph.initializer}
    producers = {output: node for node in qdq_model.graph.node for output in node.output}
    fp32_nodes = {node.name: node for node in fp32_model.graph.node if node.name}
    layers = []
    for node in qdq_model.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm") or node.name not in fp32_nodes or len(node.input) < 2:
            continue
        original = fp32_nodes[node.name]
        dequantize = producers.get(node.input[1])
        if dequantize is None or dequantize.op_type != "DequantizeLinear" or original.input[1] not in qmax_by_weight:
            continue
        if dequantize.input[0] not in qdq_initializers or original.input[1] not in fp32_initializers:
            continue
        quantized = numpy_helper.to_array(qdq_initializers[dequantize.input[0]])
        scale = numpy_helper.to_array(qdq_initializers[dequantize.input[1]]).astype(np.float64)
        zero_point = numpy_helper.to_array(qdq_initializers[dequantize.input[2]]) if len(dequantize.input) > 2 else 0
        if quantized.dtype != np.int8 or np.any(zero_point != 0) or scale.ndim != 1:
            continue  # only symmetric per-channel int8 grids
        weight = numpy_helper.to_array(fp32_initializers[original.input[1]]).astype(np.float64)
        attributes = _attributes(node)
        if node.op_type == "Conv":
            if weight.ndim != 4 or attributes.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
                continue  # 2-D convs with explicit pads (paddle2onnx writes them); SAME padding keeps nearest rounding
            groups = int(attributes.get("group", 1))
            outputs = weight.shape[0]
            fp32 = weight.reshape(groups, outputs // groups, -1)
            layer = Layer(
                node.name, "Conv", original.input[0], dequantize.input[0], fp32,
                scale.reshape(groups, outputs // groups), qmax_by_weight[original.input[1]], groups,
                (weight.shape[2], weight.shape[3]),
                _pair(attributes.get("strides", (1, 1))),
                _pads(attributes.get("pads", (0, 0, 0, 0))),
                _pair(attributes.get("dilations", (1, 1))),
            )  # fmt: skip
        else:
            if weight.ndim != 2 or attributes.get("transA", 0):
                continue
            transposed = not attributes.get("transB", 0)
            rows = weight.T if transposed else weight
            layer = Layer(
                node.name, node.op_type, original.input[0], dequantize.input[0], rows[None],
                scale[None], qmax_by_weight[original.input[1]], transposed=transposed,
            )  # fmt: skip
        if layer.scale.shape != layer.fp32.shape[:2]:
            continue
        layer.input_grid = _grid(producers.get(node.input[0]), qdq_initializers)
        bias = producers.get(node.input[2]) if node.op_type == "Conv" and len(node.input) > 2 else None
        if bias is not None and bias.op_type == "DequantizeLinear" and len(original.input) > 2:
            stored = qdq_initializers.get(bias.input[0])
            fp32_bias = fp32_initializers.get(original.input[2])
            if stored is not None and fp32_bias is not None and stored.data_type == onnx.TensorProto.INT32:
                layer.bias = numpy_helper.to_array(fp32_bias).astype(np.float64).reshape(layer.scale.shape)
                layer.bias_weight = bias.input[0]
                layer.bias_scale = (
                    numpy_helper.to_array(qdq_initializers[bias.input[1]]).astype(np.float64).reshape(layer.scale.shape)
                )
        layers.append(layer)
    return layers


def _pair(values: Any) -> tuple[int, int]:
    first, second = (int(value) for value in values)
    return first, second


def _pads(values: Any) -> tuple[int, int, int, int]:
    top, left, bottom, right = (int(value) for value in values)
    return top, left, bottom, right


def _grid(dequantize: Any, initializers: dict[str, Any]) -> tuple[float, int, int, int] | None:
    """The per-tensor uint8/int8 grid a DequantizeLinear reads its input on, or None."""
    from onnx import numpy_helper

    if dequantize is None or dequantize.op_type != "DequantizeLinear" or len(dequantize.input) < 3:
        return None
    quantize_scale = initializers.get(dequantize.input[1])
    zero_point = initializers.get(dequantize.input[2])
    if quantize_scale is None or zero_point is None:
        return None
    scale, zero = numpy_helper.to_array(quantize_scale), numpy_helper.to_array(zero_point)
    if scale.size != 1 or zero.dtype not in (np.uint8, np.int8):
        return None
    info = np.iinfo(zero.dtype)
    return float(scale), int(zero), int(info.min), int(info.max)


def im2col(x: np.ndarray, layer: Layer, max_rows: int = MAX_ROWS) -> np.ndarray:
    """The layer's input as (groups, columns, positions), columns in the weight's order.

    Only every k-th row of output positions is kept when a batch has more than `max_rows` of them: the
    early high-resolution layers have few columns and 10^5 positions a batch, and H needs far fewer.
    """
    if layer.op_type != "Conv":
        return x.reshape(-1, x.shape[-1]).T[None]
    n, channels, height, width = x.shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.strides, layer.dilations
    top, left, bottom, right = layer.pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right))) if any(layer.pads) else x
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw - 1) * dw - 1) // sw + 1
    every = max(1, -(-n * out_h * out_w // max_rows))
    rows = range(0, out_h, every)
    shifts = [
        padded[:, :, i * dh + sh * rows.start : i * dh + sh * (rows[-1]) + 1 : sh * every, j * dw : j * dw + sw * (out_w - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]  # fmt: skip
    stacked = np.stack(shifts, axis=2)  # (n, channels, kh*kw, rows, out_w)
    per_group = channels // layer.groups
    stacked = stacked.reshape(n, layer.groups, per_group * kh * kw, -1)
    return stacked.transpose(1, 2, 0, 3).reshape(layer.groups, per_group * kh * kw, -1)


def fake_quantize(x: np.ndarray, grid: tuple[float, int, int, int]) -> np.ndarray:
    """`x` as the engine reads it: rounded onto the activation grid and back."""
    scale, zero, lowest, highest = grid
    return ((np.clip(np.round(x / scale) + zero, lowest, highest) - zero) * scale).astype(np.float32)


def statistics(
    fp32_model: Any,
    layers: list[Layer],
    batches: Iterable[np.ndarray],
    advance: Callable[[], None],
    quantized_inputs: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer and group, H = 2 X~ X~^T and C = 2 X X~^T, summed batch by batch over the calibration images.

    X: the FP32 model's inputs of the layer (im2col columns, plus a row of ones when the bias can move);
    X~: the same rounded onto the layer's input grid (`quantized_inputs`), else X itself.
    """
    import onnx
    import onnxruntime

    model = onnx.ModelProto()
    model.CopyFrom(fp32_model)
    graph_inputs = {tensor.name for tensor in model.graph.input}
    wanted = list(dict.fromkeys(layer.input_name for layer in layers if layer.input_name not in graph_inputs))
    del model.graph.output[:]
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in wanted)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    sizes = [layer.fp32.shape[2] + (layer.bias is not None) for layer in layers]
    sums = [
        (np.zeros((layer.groups, size, size)), np.zeros((layer.groups, size, size)))
        for layer, size in zip(layers, sizes, strict=True)
    ]
    for batch in batches:
        raise_if_interrupted()
        values = dict(zip(wanted, session.run(wanted, {input_name: batch}), strict=True)) if wanted else {}
        values[input_name] = batch
        for layer, (hessian, cross) in zip(layers, sums, strict=True):
            x = values[layer.input_name].astype(np.float32, copy=False)
            exact = _with_ones(im2col(x, layer), layer)
            if quantized_inputs and layer.input_grid is not None:
                rounded = _with_ones(im2col(fake_quantize(x, layer.input_grid), layer), layer)
                hessian += 2.0 * np.matmul(rounded, rounded.transpose(0, 2, 1))
                cross += 2.0 * np.matmul(exact, rounded.transpose(0, 2, 1))
            else:
                product = 2.0 * np.matmul(exact, exact.transpose(0, 2, 1))
                hessian += product
                cross += product
        advance()
    return sums


def _with_ones(columns: np.ndarray, layer: Layer) -> np.ndarray:
    if layer.bias is None:
        return columns
    return np.concatenate([columns, np.ones_like(columns[:, :1])], axis=1)


def gptq_round(
    weight: np.ndarray,
    hessian: np.ndarray,
    scale: np.ndarray,
    qmax: int,
    damping: float = DAMPING,
    cross: np.ndarray | None = None,
    float_columns: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """GPTQ's integers for `weight` (groups, rows, columns) on the grid `scale` (groups, rows) * [-qmax, qmax].

    `cross` (C = 2 X X~^T, with H = 2 X~ X~^T): the layer reads rounded inputs X~, so the target is the
    least-squares weight W C H^-1 that best maps X~ to the FP32 output W X. The last `float_columns` (the
    bias, against a row of ones) are not rounded: they take the rounding errors left and come back as floats.
    Returns the integers (int8) and the float columns.
    """
    weight = weight.astype(np.float64).copy()
    hessian = hessian.astype(np.float64).copy()
    diagonal = np.einsum("gii->gi", hessian)  # a view: writing it writes H's diagonal
    dead = diagonal == 0
    diagonal[dead] = 1.0
    added = damping * diagonal.mean(axis=1, keepdims=True)
    diagonal += added
    if cross is not None:
        # the damping counts in C too, as if a few inputs were read exactly: W itself when X~ = X
        cross = cross.astype(np.float64) + added[:, :, None] * np.eye(cross.shape[1])
        weight = np.linalg.solve(hessian, np.matmul(cross.transpose(0, 2, 1), weight.transpose(0, 2, 1)))
        weight = weight.transpose(0, 2, 1)  # W C H^-1, H symmetric
    weight[np.broadcast_to(dead[:, None, :], weight.shape)] = 0.0
    groups, rows, columns = weight.shape
    rounded_columns = columns - float_columns
    # U upper with U^T U = H^-1: row i of U carries column i's rounding error onto the later columns.
    upper = np.linalg.cholesky(np.linalg.inv(hessian)).transpose(0, 2, 1)
    step = scale.astype(np.float64)
    safe = np.where(step > 0, step, 1.0)
    integers = np.zeros((groups, rows, rounded_columns))
    for start in range(0, rounded_columns, BLOCK):
        end = min(start + BLOCK, rounded_columns)
        errors = np.zeros((groups, rows, end - start))
        for column in range(start, end):
            values = weight[:, :, column]
            rounded = np.clip(np.round(values / safe), -qmax, qmax)
            integers[:, :, column] = rounded
            error = (values - rounded * step) / upper[:, column, column][:, None]
            weight[:, :, column + 1 : end] -= error[:, :, None] * upper[:, None, column, column + 1 : end]
            errors[:, :, column - start] = error
        weight[:, :, end:] -= np.matmul(errors, upper[:, start:end, end:])
    integers[np.broadcast_to((step <= 0)[:, :, None], integers.shape)] = 0
    return integers.astype(np.int8), weight[:, :, rounded_columns:]


def file_grids(qdq_model: Any, fp32_model: Any) -> dict[str, int]:
    """Each int8 weight's grid limit as the file holds it (max |q|: 64 for 7-bit, 127 for 8-bit), by FP32 weight name."""
    from onnx import numpy_helper

    initializers = {tensor.name: tensor for tensor in qdq_model.graph.initializer}
    producers = {output: node for node in qdq_model.graph.node for output in node.output}
    fp32_nodes = {node.name: node for node in fp32_model.graph.node if node.name}
    limits = {}
    for node in qdq_model.graph.node:
        dequantize = producers.get(node.input[1]) if len(node.input) > 1 else None
        if node.name not in fp32_nodes or dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        stored = initializers.get(dequantize.input[0])
        if stored is not None and stored.data_type == 3:  # INT8
            limit = int(np.abs(numpy_helper.to_array(stored).astype(np.int16)).max())
            if limit > 0:
                limits[fp32_nodes[node.name].input[1]] = limit
    return limits


def round_weights(
    qdq_model: Any,
    fp32_model: Any,
    batches: Callable[[], Iterable[np.ndarray]],
    batch_count: int,
    progress: Progress,
    quantized_inputs: bool = True,
) -> int:
    """Re-round `qdq_model`'s int8 weights (and re-fit its int32 biases) with GPTQ, in place; returns the layers done.

    `fp32_model`: the graph `qdq_model` was quantized from, with the same node names.
    """
    from onnx import numpy_helper

    layers = find_layers(qdq_model, fp32_model, file_grids(qdq_model, fp32_model))
    if not layers:
        return 0
    task = progress.add("rounding weights (GPTQ)", batch_count + len(layers))
    sums = statistics(fp32_model, layers, batches(), lambda: progress.advance(task), quantized_inputs)
    initializers = {tensor.name: tensor for tensor in qdq_model.graph.initializer}
    for layer, (hessian, cross) in zip(layers, sums, strict=True):
        raise_if_interrupted()
        weight = layer.fp32 if layer.bias is None else np.concatenate([layer.fp32, layer.bias[..., None]], axis=2)
        integers, floats = gptq_round(
            weight, hessian, layer.scale, layer.qmax, cross=cross if quantized_inputs else None,
            float_columns=int(layer.bias is not None),
        )  # fmt: skip
        stored = initializers[layer.weight]
        shape = tuple(stored.dims)
        rows = integers.reshape(layer.fp32.shape[0] * layer.fp32.shape[1], -1)
        values = rows.T if layer.transposed else rows.reshape(shape)
        stored.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(values, dtype=np.int8), layer.weight))
        if layer.bias is not None and layer.bias_scale is not None:
            bias = np.round(floats[..., 0] / layer.bias_scale).reshape(-1)
            info = np.iinfo(np.int32)
            bias = np.clip(bias, info.min, info.max).astype(np.int32)
            initializers[layer.bias_weight].CopyFrom(numpy_helper.from_array(bias, layer.bias_weight))
        progress.advance(task)
    progress.done(task)
    return len(layers)
