"""PTQ of the FP32 ONNX graph with ONNX Runtime's static quantizer, for the ONNX engines.

Re-encoding PaddleSlim's Q/DQ program for ONNX Runtime and OpenVINO lost 3-17 points on the real
ImageNet MobileNetV2; ONNX Runtime's own quantizer, calibrated on the same preprocessed images,
loses nothing on ONNX Runtime and gains 0.11 on OpenVINO (docs/accuracy.md). The settings are the
measured best: QDQ, per-channel symmetric int8 weights, asymmetric uint8 activations from the min/max
over the calibration images, every op ONNX Runtime can quantize (leaving the residual adds in float,
as PaddleSlim does, cost 6 points more).

CPUs without VNNI multiply u8 x s8 with VPMADDUBSW, whose int16 pair sums saturate with full-range
weights (-8.7 points here); `reduce_range` keeps weights in 7 bits for them, except in depthwise
convs, which accumulate in int32 and need every bit.

OpenVINO runs the quantizer's file; ONNX Runtime a copy whose last residual Add sums its conv's output in
float (`write_onnx_runtime_file`): OpenVINO fuses every residual Add into the conv and rounds once, ONNX
Runtime computes the file exactly, rounding the conv's output first (ORT -0.56 -> +-0.00 on MobileNetV2).

`PTQ.weight_rounding: gptq` then re-rounds the int8 weights on the same grid with GPTQ (`weight_rounding.py`).
On MobileNetV2 it lowered the mean KL(FP32 || INT8) over the 900 val images by 10-12 % on both engines for
three calibration sets, but top-1 fell on ONNX Runtime each time (-1.00 to -2.00 vs -0.44 to -0.67), so
nearest rounding stays the default (docs/accuracy.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from paddlecls_q.errors import ModelFormatError
from paddlecls_q.quantize.images import CalibrationImages
from paddlecls_q.quantize.progress import Progress, raise_if_interrupted
from paddlecls_q.validation import shorten

LAYER_OP_TYPES = ("Conv", "MatMul", "Gemm")  # the layers keep_fp32_layers names by their weight
CALIBRATION_BATCH = 8
# onnxruntime's pre-processing renames a Conv's weight when it folds a BatchNorm into it.
_FUSED_PREFIX = "ConvBnFusion_W_"
WeightRange = Literal["auto", "full", "reduced"]
WeightRounding = Literal["gptq", "nearest"]


@dataclass
class OnnxPtqSummary:
    """What the ONNX quantizer did, for quantize_report.json's `encodings`."""

    engine: str
    quantizer: str
    calibration: str = "minmax"
    activations: str = "uint8 asymmetric per-tensor"
    weights: str = ""
    weight_range_reason: str = ""
    full_range_weights: bool = False  # int8 weights on every layer: only CPUs with VNNI run them unsaturated
    weight_rounding: str = "nearest"
    quantized_layers: int = 0
    float_layers: list[str] = field(default_factory=list)
    float_residual_sum: str = ""
    pre_processed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def layer_name(weight: str) -> str:
    """A layer's weight name as the user gives it in keep_fp32_layers (the Paddle / ONNX initializer name)."""
    return weight.removeprefix(_FUSED_PREFIX)


def reduced_weights(choice: WeightRange) -> tuple[bool, str]:
    """Whether to keep weights in 7 bits, and why: `auto` reduces on a CPU without VNNI (this one's flags)."""
    from paddlecls_q.environment import cpu_info, vnni_flags

    if choice != "auto":
        return choice == "reduced", f"PTQ.weight_range: {choice}"
    model, vnni = cpu_info()[0], vnni_flags()
    if vnni:
        return False, f"auto: this CPU ({model}) has {', '.join(vnni)}"
    return True, f"auto: this CPU ({model}) has no VNNI; full-range int8 weights saturate its u8 x s8 kernels"


def depthwise_weights(model: Any) -> list[str]:
    """Weight initializers of the depthwise convs (one input channel per group, more than one group)."""
    shapes = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    names = []
    for node in model.graph.node:
        group = next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)
        shape = shapes.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if group > 1 and shape is not None and len(shape) == 4 and shape[1] == 1:
            names.append(node.input[1])
    return names


def last_residual_sum(model: Any) -> str | None:
    """The conv output read only by the last residual Add (an Add of two quantized activations), if any."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    producer = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def quantized(name: str) -> str | None:
        """`tensor` where `name` is DequantizeLinear(QuantizeLinear(tensor)) of an activation."""
        dq = producer.get(name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        return (
            q.input[0] if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in initializers else None
        )

    adds = [node for node in model.graph.node if node.op_type == "Add" and all(map(quantized, node.input))]
    if not adds:
        return None
    for name in adds[-1].input:
        tensor = quantized(name) or ""
        q = producer[producer[name].input[0]]
        read_once = consumers[tensor] == [q] and consumers[q.output[0]] == [producer[name]]
        if tensor in producer and producer[tensor].op_type == "Conv" and read_once and consumers[name] == [adds[-1]]:
            return tensor
    return None


def sum_in_float(model: Any, tensor: str) -> None:
    """Remove the Q/DQ pair between `tensor` (a conv output) and the residual Add that alone reads it.

    ONNX Runtime then runs that conv in float fused with the Add (FusedConv) and rounds once, on the Add's
    output, as OpenVINO does for every residual Add (it fuses the Add into the conv's int8 kernel).
    """
    nodes = model.graph.node
    q = next(node for node in nodes if node.op_type == "QuantizeLinear" and node.input[0] == tensor)
    dq = next(node for node in nodes if node.op_type == "DequantizeLinear" and node.input[0] == q.output[0])
    for node in nodes:
        for index, name in enumerate(node.input):
            if name == dq.output[0]:
                node.input[index] = tensor
    nodes.remove(dq)
    nodes.remove(q)


def write_onnx_runtime_file(source: Path, target: Path, summary: OnnxPtqSummary) -> OnnxPtqSummary:
    """Write ONNX Runtime's copy of the quantized file `source` to `target`; returns its summary.

    ONNX Runtime runs each quantized op exactly as the Q/DQ file says (measured op by op on MobileNetV2),
    so a residual Add rounds twice: the conv's output onto its own grid, then the sum. OpenVINO fuses the
    Add into the conv and rounds once, and scored KL(FP32 || INT8) 0.407 vs ORT's 0.481 on the same file.
    The last residual Add carries the largest steps; summing it in float took ORT's KL on held-out calib
    halves from 0.0273 / 0.0238 to 0.0234 / 0.0215 (docs/accuracy.md) at the cost of one conv in float.
    OpenVINO keeps `source`: it fuses the Add itself.
    """
    import onnx

    model = onnx.load(str(source))
    tensor = last_residual_sum(model)
    if tensor is not None:
        sum_in_float(model, tensor)
    onnx.save(model, str(target))
    return OnnxPtqSummary(**{**summary.to_dict(), "engine": "ort", "float_residual_sum": tensor or ""})


def float_softmax_output(model: Any) -> bool:
    """Remove the Q/DQ pair between a Softmax and the graph output it alone feeds; True if there was one.

    The quantizer rounds the class probabilities onto a 1/255 grid: rows then sum to 0.85-1.1 (so they are not
    recognised as probabilities and get a second softmax: 0.003 shown for a 0.9 goldfish) and the two best
    classes tie on one step for 16-28 of the 900 val images. The softmax of the dequantized logits costs
    nothing more and is what the model means.
    """
    nodes = model.graph.node
    outputs = {output.name for output in model.graph.output}
    producer = {output: node for node in nodes for output in node.output}
    readers: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for name in outputs:
        dq = producer.get(name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        softmax = producer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
        if dq is None or q is None or softmax is None or softmax.op_type != "Softmax":
            continue
        if readers.get(softmax.output[0]) != 1 or readers.get(q.output[0]) != 1:
            continue
        nodes.remove(dq)
        nodes.remove(q)
        softmax.output[0] = name
        unused = {*q.input[1:], *dq.input[1:]} - {tensor for node in nodes for tensor in node.input}
        for initializer in [tensor for tensor in model.graph.initializer if tensor.name in unused]:
            model.graph.initializer.remove(initializer)
        return True
    return False


def _name_nodes(model: Any) -> None:
    """nodes_to_exclude matches node names: give every node one."""
    taken = {node.name for node in model.graph.node if node.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def quantize_onnx(
    fp32_onnx: Path,
    target: Path,
    images: CalibrationImages,
    keep: frozenset[str],
    weight_range: WeightRange,
    progress: Progress,
    work: Path,
    tensorrt: bool = False,
    weight_rounding: WeightRounding = "nearest",
) -> OnnxPtqSummary:
    """Write `target`: `fp32_onnx` quantized by onnxruntime.quantization.quantize_static on `images`.

    `tensorrt`: symmetric int8 activations (zero point 0), the only kind TensorRT takes.
    `weight_rounding`: "gptq" re-rounds the int8 weights on the same grid from the calibration images'
    activations (`weight_rounding.round_weights`); "nearest" keeps ONNX Runtime's rounding.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from paddlecls_q import qdq_onnx

    work.mkdir(parents=True, exist_ok=True)
    summary = OnnxPtqSummary(engine="ort", quantizer=f"onnxruntime {onnxruntime.__version__} quantize_static")
    source = work / "fp32_pre.onnx"
    try:
        quant_pre_process(str(fp32_onnx), str(source), skip_symbolic_shape=True)
    except Exception:  # an optimizer that dislikes the graph: quantize the graph as it is
        shutil.copyfile(fp32_onnx, source)
        summary.pre_processed = False
    model = onnx.load(str(source))
    _name_nodes(model)
    input_name = model.graph.input[0].name
    kept = [
        node
        for node in model.graph.node
        if node.op_type in LAYER_OP_TYPES and len(node.input) > 1 and layer_name(node.input[1]) in keep
    ]
    excluded = [node.name for node in kept]
    summary.float_layers = sorted(layer_name(node.input[1]) for node in kept)
    depthwise = depthwise_weights(model)
    named = work / "fp32_named.onnx"
    onnx.save(model, str(named))

    count = len(images.paths)
    batches = [
        list(range(start, min(start + CALIBRATION_BATCH, count))) for start in range(0, count, CALIBRATION_BATCH)
    ]
    task = progress.add("calibrating (ONNX Runtime, minmax)", len(batches))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[list[int]] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            raise_if_interrupted()
            indices = next(self.batches, None)
            if indices is None:
                return None
            progress.advance(task)
            return {input_name: images.batch(indices)}

    reduce_range, summary.weight_range_reason = reduced_weights(weight_range)
    summary.full_range_weights = not reduce_range
    summary.weights = "int8 per-channel symmetric" + (", 7-bit range except depthwise convs" if reduce_range else "")
    # Depthwise convs accumulate each tap in int32 (no int16 pair sums to saturate), and 9 weights per channel
    # need every bit: on MobileNetV2 8-bit depthwise weights took ONNX Runtime from -1.78 to -0.56, OpenVINO
    # from -2.00 to +0.11 (docs/accuracy.md).
    overrides = {name: [{"axis": 0, "reduce_range": False}] for name in depthwise} if reduce_range else {}
    if tensorrt:
        summary.activations = "int8 symmetric per-tensor"
    try:
        quantize_static(
            str(named),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=reduce_range,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=excluded,
            extra_options={"ActivationSymmetric": tensorrt, "WeightSymmetric": True, "TensorQuantOverrides": overrides},
        )
    except Exception as error:  # onnxruntime raises assorted types on graphs it cannot quantize
        raise ModelFormatError(
            f"{fp32_onnx}: ONNX Runtime could not quantize it: {type(error).__name__}: {shorten(error)}"
        ) from None
    progress.done(task)
    quantized = onnx.load(str(target))
    if float_softmax_output(quantized):
        onnx.save(quantized, str(target))
    if weight_rounding == "gptq":
        from paddlecls_q.quantize.weight_rounding import round_weights

        def calibration_batches() -> Iterator[np.ndarray]:
            return (images.batch(indices) for indices in batches)

        rounded = round_weights(quantized, model, calibration_batches, len(batches), progress)
        summary.weight_rounding = f"gptq on {count} images, biases re-fitted ({rounded} layers)"
        onnx.save(quantized, str(target))
    summary.quantized_layers = len(qdq_onnx.quantized_layers(quantized))
    return summary
