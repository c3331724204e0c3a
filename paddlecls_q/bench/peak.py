"""What INT8 can buy on this CPU at most: one dense 3×3 conv timed in FP32 and as ONNX Runtime INT8, side by side.

A model's INT8 speedup is bounded by how much faster the CPU multiplies int8 than float32. With VNNI
(`avx512_vnni`, `avx_vnni`) one instruction does 4 int8 products per lane; with AVX2 alone the int8 kernels
chain VPMADDUBSW and VPMADDWD, and on some CPUs (AMD Zen 1, 128-bit units) that runs no faster than FP32 FMA.
The ratio here is that bound, measured, so a bench table whose INT8 is not faster can say why.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from paddlecls_q.bench.measure import Timings

CHANNELS, SIZE = 128, 28  # 231 M multiply-adds: a few ms per call on one core, ResNet50's middle-stage shape
CALLS, WARMUP, BLOCK = 24, 3, 4
LITTLE_GAIN = 1.25  # below this INT8 / FP32 ratio bench warns that INT8 can buy little speed on this CPU


def conv_models() -> tuple[bytes, bytes]:
    """The FP32 conv and its INT8 form (uint8 activations, per-channel int8 weights in Q/DQ pairs, as our files)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.integers(-64, 64, (CHANNELS, CHANNELS, 3, 3)).astype(np.int8)
    shape = [1, CHANNELS, SIZE, SIZE]

    def model(nodes: list[Any], initializers: list[Any]) -> bytes:
        graph = helper.make_graph(
            nodes,
            "conv",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
            initializers,
        )
        return onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    conv: dict[str, Any] = {"pads": [1, 1, 1, 1]}
    fp32 = model(
        [helper.make_node("Conv", ["x", "w"], ["y"], **conv)],
        [numpy_helper.from_array(weight.astype(np.float32) / 64, "w")],
    )
    scale, zero = numpy_helper.from_array(np.array(1 / 64, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")
    int8 = model(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
            helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
            helper.make_node("Conv", ["xd", "wd"], ["c"], **conv),
            helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
            helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["y"]),
        ],
        [
            scale,
            zero,
            numpy_helper.from_array(weight, "wq"),
            numpy_helper.from_array(np.full(CHANNELS, 1 / 64, np.float32), "ws"),
            numpy_helper.from_array(np.zeros(CHANNELS, np.int8), "wz"),
        ],
    )
    return fp32, int8


def conv_peak(threads: int) -> dict[str, Any]:
    """Giga multiply-adds per second of the conv in FP32 and INT8 on ONNX Runtime (`threads` threads), and INT8 / FP32."""
    import onnxruntime as ort

    from paddlecls_q.runtime.ort_backend import cpu_session_options

    batch = {"x": np.random.default_rng(1).uniform(0, 2, (1, CHANNELS, SIZE, SIZE)).astype(np.float32)}
    sessions = {
        name: ort.InferenceSession(model, cpu_session_options(threads), providers=["CPUExecutionProvider"])
        for name, model in zip(("fp32", "int8"), conv_models())
    }
    calls = {name: functools.partial(session.run, None, batch) for name, session in sessions.items()}
    timings = {name: Timings(CALLS) for name in sessions}
    for call in calls.values():
        for _ in range(WARMUP):
            call()
    for _ in range(CALLS // BLOCK):  # interleaved, so that a busy minute slows both
        for name, call in calls.items():
            for _ in range(BLOCK):
                timings[name].time(call)
    macs = CHANNELS * CHANNELS * 9 * SIZE * SIZE
    rates = {name: macs / timing.wall_stats().median / 1e6 for name, timing in timings.items()}
    return {
        "what": f"one {CHANNELS}-channel 3x3 conv on {SIZE}x{SIZE}, ONNX Runtime {ort.__version__}, {threads} thread(s), "
        f"median of {CALLS} interleaved calls",
        "fp32_gmacs": round(rates["fp32"], 2),
        "int8_gmacs": round(rates["int8"], 2),
        "int8_over_fp32": round(rates["int8"] / rates["fp32"], 2),
    }
