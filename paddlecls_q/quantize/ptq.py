"""Post-training quantization: PaddleSlim `quant_post_static` fed with our preprocessed images, then the
int8 weights of the convs oneDNN runs on signed input re-rounded onto the grid it computes with without VNNI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.model_files import ModelFiles
from paddlecls_q.quantize.images import CalibrationImages
from paddlecls_q.quantize.paddle_patches import fast_avg_sampling, quiet_paddle, seed_everything, static_mode
from paddlecls_q.quantize.plan import QuantizationPlan
from paddlecls_q.quantize.progress import Progress, raise_if_interrupted

# Paddle's oneDNN INT8 reads the outputs of these ops as unsigned (u8) tensors...
_UNSIGNED_OUTPUT_OPS = frozenset({"relu", "relu6"})
# ...and these ops (all with input X) pass a tensor's scale and sign on unchanged (compute_propagate_scales_onednn_pass).
_SCALE_PRESERVING_OPS = frozenset(
    {
        "quantize_linear",
        "dequantize_linear",
        "pool2d",
        "reshape2",
        "transpose2",
        "flatten_contiguous_range",
        "squeeze2",
        "unsqueeze2",
    }
)
_CONV_OPS = frozenset({"conv2d", "depthwise_conv2d"})


def run_ptq(
    plan: QuantizationPlan,
    images: CalibrationImages,
    work: Path,
    keep: list[str],
    progress: Progress,
    device: str = "cpu",
) -> tuple[Path, dict[str, Any]]:
    """Calibrate with PaddleSlim `quant_post_static` on `device` (cpu, gpu, gpu:N).

    Returns the INT8 model's folder and what was done to its weights (quantize_report.json's `encodings.paddle`).
    """
    from paddleslim.quant import quant_post_static

    from paddlecls_q.quantize.onnx_ptq import reduced_weights

    ptq = plan.config.PTQ
    batch_size = min(ptq.batch_size, len(images.paths))
    batches = [
        list(range(start, min(start + batch_size, len(images.paths))))
        for start in range(0, len(images.paths), batch_size)
    ]
    passes = 2 if ptq.calibration_method in ("KL", "hist") else 1
    task = progress.add(f"calibrating ({ptq.calibration_method})", len(batches) * passes)
    feed = plan.program.feed_names[0]

    def data_loader() -> Iterator[dict[str, np.ndarray]]:
        for indices in batches:
            raise_if_interrupted()
            yield {feed: images.batch(indices)}
            progress.advance(task)

    target = work / "ptq"
    regrid, reason = reduced_weights(ptq.weight_range)
    regrid = regrid and ptq.weight_quantize_type == "channel_wise_abs_max"
    seed_everything(plan.config.Global.seed)
    with static_mode(onednn=True, device=device) as executor, quiet_paddle(), fast_avg_sampling():
        quant_post_static(
            executor=executor,
            model_dir=str(plan.files.folder),
            quantize_model_path=str(target),
            data_loader=data_loader,
            model_filename=plan.files.program.name,
            params_filename=plan.files.params.name,
            save_model_filename="inference.pdmodel",
            save_params_filename="inference.pdiparams",
            batch_size=batch_size,
            batch_nums=len(batches),
            algo=ptq.calibration_method,
            hist_percent=ptq.hist_percent,
            bias_correction=ptq.bias_correction,
            quantizable_op_type=list(ptq.quantize_op_types),
            weight_quantize_type=ptq.weight_quantize_type,
            onnx_format=True,
            skip_tensor_list=keep or None,
        )
        layers = regrid_signed_input_weights(target, plan.files, executor) if regrid else []
    progress.done(task)
    weights = "int8 per-channel" if ptq.weight_quantize_type == "channel_wise_abs_max" else "int8 per-tensor"
    if layers:
        weights += f"; even integers (oneDNN's 7-bit grid) in the {len(layers)} convs with signed input"
    return target, {
        "engine": "paddle",
        "quantizer": "paddleslim quant_post_static",
        "calibration": ptq.calibration_method,
        "weights": weights,
        "weight_range_reason": reason,
        "full_range_weights": not regrid,  # oneDNN halves and re-rounds them on a CPU without VNNI
        "even_grid_layers": layers,
    }


def regrid_signed_input_weights(quantized: Path, fp32: ModelFiles, executor: Any) -> list[str]:
    """Round the FP32 weights of every quantized conv with signed input once, to even int8 values.

    Without VNNI, oneDNN runs a conv on signed (s8) input by shifting it to u8 and halving the weights
    as it reorders them (`scale_adjust` 0.5 in jit_uni_x8s8s32x_conv_kernel.cpp), so that VPMADDUBSW's
    int16 pair sums cannot saturate; Paddle Inference re-derives each channel's scale from max |w|.
    PaddleSlim's 8-bit integers are then rounded a second time, to 7 bits. Even integers halve exactly
    (each channel's maximum stays ±127, as Paddle's scale needs). Measured on real MobileNetV2, 900 val
    images: Paddle Inference 82.11 -> 82.56, images changed vs FP32 62 -> 53 (docs/accuracy.md).
    Only the weights file is rewritten. Returns the re-rounded weights' names.
    """
    import paddle

    def load(folder: Path, program: str, params: str) -> tuple[Any, Any]:
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            loaded = paddle.static.load_inference_model(
                str(folder), executor, model_filename=program, params_filename=params
            )
        return loaded[0], scope

    _, fp32_scope = load(fp32.folder, fp32.program.name, fp32.params.name)
    program, scope = load(quantized, "inference.pdmodel", "inference.pdiparams")
    ops = program.global_block().ops
    producer = {name: op for op in ops for name in op.output_arg_names}

    def signed(name: str) -> bool:
        op = producer.get(name)
        while op is not None and op.type in _SCALE_PRESERVING_OPS:
            op = producer.get(op.input("X")[0])
        return op is None or op.type not in _UNSIGNED_OUTPUT_OPS

    changed = []
    for op in ops:
        dequantize = producer.get(op.input("Filter")[0]) if op.type in _CONV_OPS else None
        if dequantize is None or dequantize.type != "dequantize_linear" or not signed(op.input("Input")[0]):
            continue
        name = dequantize.input("X")[0]
        fp32_var = fp32_scope.find_var(name)
        if fp32_var is None:
            continue
        weights = np.array(fp32_var.get_tensor()).astype(np.float64)
        scales = np.array(scope.find_var(dequantize.input("Scale")[0]).get_tensor()).astype(np.float64).reshape(-1)
        if scales.size != weights.shape[0]:  # per-tensor scales: oneDNN's per-channel grid is not an even one
            continue
        scales = scales.reshape(-1, *([1] * (weights.ndim - 1)))
        ratio = np.divide(weights, scales, out=np.zeros_like(weights), where=scales > 0)
        integers = 2 * np.clip(np.round(ratio * 63.5), -63, 63)
        integers = np.where(np.abs(ratio) >= 1, 127 * np.sign(ratio), integers)
        scope.find_var(name).get_tensor().set(integers.astype(np.int8), paddle.CPUPlace())
        changed.append(name)
    if changed:
        persistables = sorted(
            (var for var in program.list_vars() if paddle.static.io.is_persistable(var)), key=lambda var: var.name
        )
        with paddle.static.scope_guard(scope):
            paddle.static.io.save_vars(
                executor, str(quantized), program, vars=persistables, filename="inference.pdiparams"
            )
    return changed
