"""Post-training quantization: PaddleSlim `quant_post_static` fed with our preprocessed images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from paddlecls_q.quantize.images import CalibrationImages
from paddlecls_q.quantize.paddle_patches import fast_avg_sampling, quiet_paddle, seed_everything, static_mode
from paddlecls_q.quantize.plan import QuantizationPlan
from paddlecls_q.quantize.progress import Progress, raise_if_interrupted


def run_ptq(
    plan: QuantizationPlan,
    images: CalibrationImages,
    work: Path,
    keep: list[str],
    progress: Progress,
    device: str = "cpu",
) -> Path:
    """Calibrate with PaddleSlim `quant_post_static` on `device` (cpu, gpu, gpu:N); returns the INT8 model's folder."""
    from paddleslim.quant import quant_post_static

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
    progress.done(task)
    return target
