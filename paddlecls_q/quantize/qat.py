"""Quantization-aware training: PaddleSlim ACT distillation of the INT8 student against the FP32 model."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.quantize.images import CalibrationImages
from paddlecls_q.quantize.paddle_patches import (
    fold_batch_norm,
    keep_learning_rate_schedule,
    quiet_paddle,
    seed_everything,
    static_mode,
)
from paddlecls_q.quantize.plan import QuantizationPlan
from paddlecls_q.quantize.progress import Progress, raise_if_interrupted

SKIP_QUANT_SCOPE = "/skip_quant/"
# torchvision's RandomResizedCrop aspect range; a view that does not fit in 10 draws is the whole image.
CROP_ASPECT = (3 / 4, 4 / 3)


class AugmentedViews:
    """Random-resized crops and horizontal flips of the training images, preprocessed by the model's own ops.

    The teacher labels every view in the distillation, so the student sees a new sample each step
    instead of the same 100 images again. The draws come from `seed` alone: a run is repeatable.
    """

    def __init__(self, images: CalibrationImages, crop_scale: tuple[float, float], seed: int) -> None:
        self.images = images
        self.crop_scale = crop_scale
        self.rng = np.random.default_rng(seed)

    def _crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        low, high = self.crop_scale
        for _ in range(10):
            area = height * width * self.rng.uniform(low, high)
            aspect = math.exp(self.rng.uniform(math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1])))
            crop_width, crop_height = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                top = int(self.rng.integers(0, height - crop_height + 1))
                left = int(self.rng.integers(0, width - crop_width + 1))
                return top, left, crop_height, crop_width
        return 0, 0, height, width

    def view(self, index: int) -> np.ndarray:
        from paddlecls_q.preprocess import read_image

        image = read_image(self.images.paths[index])
        top, left, height, width = self._crop_box(*image.shape[:2])
        crop = image[top : top + height, left : left + width]
        if self.rng.random() < 0.5:
            crop = crop[:, ::-1]
        return self.images.preprocess(np.ascontiguousarray(crop))

    def batch(self, indices: list[int] | np.ndarray) -> np.ndarray:
        return np.stack([self.view(int(i)) for i in indices]).astype(np.float32, copy=False)


def _prepare_student(plan: QuantizationPlan, keep: list[str], target: Path, device: str = "cpu") -> list[str]:
    """The FP32 model with BatchNorm folded into its convs and FP32 layers marked skip_quant.

    ACT trains every op in train mode; a BatchNorm there would re-estimate its statistics from
    the few unlabeled images. Folding it first leaves nothing to drift. Returns warnings.
    """
    import paddle

    warnings = []
    with static_mode(onednn=False, device=device) as executor, quiet_paddle():
        loaded: Any = paddle.static.load_inference_model(
            str(plan.files.folder),
            executor,
            model_filename=plan.files.program.name,
            params_filename=plan.files.params.name,
        )
        program, feed_names, fetch_targets = loaded
        if plan.config.TrainConfig.freeze_bn:
            program = fold_batch_norm(program)
            left = sum(op.type == "batch_norm" for op in program.global_block().ops)
            if left:
                warnings.append(f"{left} BatchNorm layers do not follow a conv and stay trainable in QAT")
        keep_set = set(keep)
        for op in program.global_block().ops:
            if keep_set & set(op.input_arg_names):
                op._set_attr("op_namescope", SKIP_QUANT_SCOPE)
        block = program.global_block()
        paddle.static.save_inference_model(
            str(target / "inference"),
            [block.var(name) for name in feed_names],
            [block.var(var.name) for var in fetch_targets],
            executor,
            program=program,
            clip_extra=False,
        )
    return warnings


def _act_config(plan: QuantizationPlan) -> dict[str, Any]:
    config = plan.config
    train = config.TrainConfig
    rate = train.learning_rate
    learning_rate: float | dict[str, Any] = (
        float(rate.learning_rate or 0.0) if rate.type == "Constant" else {"type": rate.type, **rate.paddle_kwargs()}
    )
    optimizer: dict[str, Any] = {"type": train.optimizer_builder.optimizer.type}
    if train.optimizer_builder.optimizer.momentum is not None:
        optimizer["momentum"] = train.optimizer_builder.optimizer.momentum
    builder: dict[str, Any] = {"optimizer": optimizer}
    if train.optimizer_builder.weight_decay is not None:
        builder["weight_decay"] = float(train.optimizer_builder.weight_decay)
    quant = config.QuantAware
    not_quant = list(dict.fromkeys([*quant.not_quant_pattern, SKIP_QUANT_SCOPE.strip("/")]))
    return {
        "Distillation": {
            "alpha": float(config.Distillation.alpha),
            "loss": config.Distillation.loss,
            "node": list(plan.distillation_nodes),
        },
        "QuantAware": {
            "use_pact": quant.use_pact,
            "activation_bits": quant.activation_bits,
            "weight_bits": quant.weight_bits,
            "is_full_quantize": quant.is_full_quantize,
            "onnx_format": True,
            "activation_quantize_type": quant.activation_quantize_type,
            "weight_quantize_type": quant.weight_quantize_type,
            "not_quant_pattern": not_quant,
            "quantize_op_types": list(quant.quantize_op_types),
        },
        "TrainConfig": {
            "epochs": train.epochs,
            "train_iter": train.train_iter,
            "learning_rate": learning_rate,
            "optimizer_builder": builder,
            # Accuracy is measured on the deployed engines afterwards; ACT's own eval loop stays off.
            "eval_iter": 1 << 30,
            "logging_iter": 1,
        },
    }


def run_qat(
    plan: QuantizationPlan,
    images: CalibrationImages,
    work: Path,
    keep: list[str],
    progress: Progress,
    device: str = "cpu",
) -> tuple[Path, int, float | None]:
    """Distill with PaddleSlim ACT on `device`; returns (INT8 model folder, iterations, final distillation loss)."""
    from paddleslim.auto_compression import AutoCompression

    settings, train = plan.config.Global, plan.config.TrainConfig
    student = work / "fp32_student"
    plan.warnings.extend(_prepare_student(plan, keep, student, device))
    batch_size = min(settings.qat_batch_size, len(images.paths))
    per_epoch = len(images.paths) // batch_size
    # The config requires train_iter or epochs; with both, the smaller count of steps wins.
    by_epochs = None if train.epochs is None else train.epochs * per_epoch
    iterations = min(count for count in (train.train_iter, by_epochs) if count is not None)
    rng = np.random.default_rng(settings.seed)
    source: CalibrationImages | AugmentedViews = (
        AugmentedViews(images, train.crop_scale, settings.seed + 1) if train.augment else images
    )
    feed = plan.program.feed_names[0]
    task = None
    state: dict[str, Any] = {"loss": None, "training": False}

    def train_loader() -> Iterator[dict[str, np.ndarray]]:
        order = rng.permutation(len(images.paths))
        for start in range(0, per_epoch * batch_size, batch_size):
            raise_if_interrupted()
            yield {feed: source.batch(order[start : start + batch_size])}
            if state["training"]:
                note = f"loss {state['loss']:.4g}" if state["loss"] is not None else ""
                progress.advance(task, note=note)

    def eval_loader() -> Iterator[dict[str, np.ndarray]]:
        yield {feed: images.batch(list(range(batch_size)))}

    def on_loss(value: float) -> None:
        state["loss"] = value

    target = work / "qat"
    seed_everything(settings.seed)
    with static_mode(onednn=False, device=device), quiet_paddle(on_loss), keep_learning_rate_schedule():
        compressor = AutoCompression(
            model_dir=str(student),
            model_filename="inference.pdmodel",
            params_filename="inference.pdiparams",
            save_dir=str(target),
            config=_act_config(plan),
            train_dataloader=train_loader,
            eval_dataloader=eval_loader,
            deploy_hardware=None,
        )
        task = progress.add("QAT (distillation)", iterations)
        state["training"] = True
        compressor.compress()
    progress.done(task)
    return target, iterations, state["loss"]
