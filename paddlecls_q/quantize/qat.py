"""Quantization-aware training: PaddleSlim ACT distillation of the INT8 student against the FP32 model."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.errors import ConfigError
from paddlecls_q.qdq_onnx import ReduceRange
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
_CONV_OPS = frozenset({"conv2d", "depthwise_conv2d"})
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


def _activation_abs_max(student: Path, images: CalibrationImages, batch_size: int, device: str) -> dict[str, float]:
    """max |x| over `images` of every input of the student's convs (PTQ's abs_max), by tensor name."""
    import paddle

    with static_mode(onednn=False, device=device) as executor, quiet_paddle():
        loaded: Any = paddle.static.load_inference_model(
            str(student), executor, model_filename="inference.pdmodel", params_filename="inference.pdiparams"
        )
        program, feed_names, _ = loaded
        names = sorted({op.input("Input")[0] for op in program.global_block().ops if op.type in _CONV_OPS})
        scales = dict.fromkeys(names, 0.0)
        for start in range(0, len(images.paths), batch_size):
            batch = images.batch(list(range(start, min(start + batch_size, len(images.paths)))))
            outputs = executor.run(program, feed={feed_names[0]: batch}, fetch_list=names)
            for name, value in zip(names, outputs, strict=True):
                scales[name] = max(scales[name], float(np.abs(value).max()))
    return scales


def _fix_activation_scales(program: Any, scales: dict[str, float]) -> int:
    """Set the activation quantizers of ACT's training program to `scales` and stop their moving averages.

    `is_test` makes Paddle's quantize_linear quantize with its Scale input as it is; the backward pass
    (straight-through) does not read it. Returns how many quantizers were set.
    """
    import paddle

    program = getattr(program, "_program", program)  # a CompiledProgram wraps it
    scope = paddle.static.global_scope()
    fixed = 0
    for op in program.global_block().ops:
        if op.type != "quantize_linear" or "InState" not in op.input_names or op.input("X")[0] not in scales:
            continue
        value = np.array([scales[op.input("X")[0]]], dtype=np.float32)
        scope.find_var(op.input("Scale")[0]).get_tensor().set(value, paddle.CPUPlace())
        op._set_attr("is_test", True)
        fixed += 1
    return fixed


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
    snapshot_steps: tuple[int, ...] = (),
) -> tuple[Path, int, float | None, dict[int, dict[str, np.ndarray]]]:
    """Distill with PaddleSlim ACT on `device`.

    Returns (INT8 model folder, iterations, final distillation loss, the student's float parameters after
    each of `snapshot_steps` steps, by step; the FP32 student program they belong to is `work/fp32_student`).
    """
    import paddle
    from paddleslim.auto_compression import AutoCompression

    from paddlecls_q.model_files import framework_proto, weight_variables

    settings, train = plan.config.Global, plan.config.TrainConfig
    student = work / "fp32_student"
    plan.warnings.extend(_prepare_student(plan, keep, student, device))
    program_desc = framework_proto().ProgramDesc.FromString((student / "inference.pdmodel").read_bytes())
    parameters = sorted(weight_variables(program_desc.blocks[0]))
    snapshots: dict[int, dict[str, np.ndarray]] = {}
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
    state: dict[str, Any] = {"loss": None, "training": False, "steps": 0}

    def snapshot() -> None:
        scope = paddle.static.global_scope()
        snapshots[state["steps"]] = {name: np.array(scope.find_var(name).get_tensor()) for name in parameters}

    def train_loader() -> Iterator[dict[str, np.ndarray]]:
        order = rng.permutation(len(images.paths))
        for start in range(0, per_epoch * batch_size, batch_size):
            raise_if_interrupted()
            if state["training"] and state["steps"] in snapshot_steps:
                snapshot()  # before the next batch: the previous step has run
            if state["steps"] >= iterations:
                return  # the extra step asked for below, so that the last snapshot is taken, is never run
            yield {feed: source.batch(order[start : start + batch_size])}
            if state["training"]:
                state["steps"] += 1
                note = f"loss {state['loss']:.4g}" if state["loss"] is not None else ""
                progress.advance(task, note=note)

    def eval_loader() -> Iterator[dict[str, np.ndarray]]:
        yield {feed: images.batch(list(range(batch_size)))}

    def on_loss(value: float) -> None:
        state["loss"] = value

    act_config = _act_config(plan)
    if snapshot_steps:  # one step more than is run, so that ACT asks for the batch after the last one
        act_config["TrainConfig"].update(train_iter=iterations + 1, epochs=iterations // per_epoch + 2)
    scales = _activation_abs_max(student, images, batch_size, device) if train.activation_scales == "calibrated" else {}

    def on_train_program(program: Any) -> None:
        if scales and not _fix_activation_scales(program, scales):
            plan.warnings.append("TrainConfig.activation_scales: calibrated found no activation quantizer to set")

    target = work / "qat"
    seed_everything(settings.seed)
    with (
        static_mode(onednn=False, device=device),
        quiet_paddle(on_loss),
        keep_learning_rate_schedule(on_train_program),
    ):
        compressor = AutoCompression(
            model_dir=str(student),
            model_filename="inference.pdmodel",
            params_filename="inference.pdiparams",
            save_dir=str(target),
            config=act_config,
            train_dataloader=train_loader,
            eval_dataloader=eval_loader,
            deploy_hardware=None,
        )
        task = progress.add("QAT (distillation)", iterations)
        state["training"] = True
        compressor.compress()
    progress.done(task)
    return target, iterations, state["loss"], snapshots


# Probabilities are floored before the KL, so that classes an INT8 model puts at ~0 do not dominate it.
PROBABILITY_FLOOR = 0.002
SELECTION_ENGINES = ("paddle", "ort", "openvino")
# A checkpoint replaces step 0 only when its mean KL is lower by more than this many standard errors of the
# per-image difference: on MobileNetV2 a 4 % lower mean on 50 held-out images was a worse model on val/.
SIGNIFICANT_ERRORS = 2.0


def checkpoint_steps(iterations: int, count: int) -> tuple[int, ...]:
    """`count` evenly spaced training steps ending at `iterations` (fewer when there are fewer steps)."""
    return tuple(sorted({max(1, round(iterations * (k + 1) / count)) for k in range(count)}))


def _write_checkpoint(student: Path, parameters: dict[str, np.ndarray], target: Path, device: str) -> None:
    """The FP32 student program with `parameters` as its weights, saved as an inference model folder."""
    import paddle

    target.mkdir(parents=True)
    shutil.copyfile(student / "inference.pdmodel", target / "inference.pdmodel")
    with static_mode(onednn=False, device=device) as executor, quiet_paddle():
        loaded: Any = paddle.static.load_inference_model(
            str(student), executor, model_filename="inference.pdmodel", params_filename="inference.pdiparams"
        )
        program = loaded[0]
        scope = paddle.static.global_scope()
        for name, value in parameters.items():
            scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())
        persistables = sorted(
            (var for var in program.list_vars() if paddle.static.io.is_persistable(var)), key=lambda var: var.name
        )
        paddle.static.io.save_vars(executor, str(target), program, vars=persistables, filename="inference.pdiparams")


def _probabilities(runtime: Any, batch: np.ndarray) -> np.ndarray:
    from paddlecls_q.postprocess import to_probabilities

    scores = np.concatenate([runtime.infer(batch[i : i + 10]) for i in range(0, len(batch), 10)])
    # The ONNX files end in a float softmax (onnx_ptq.float_softmax_output): to_probabilities reads them as
    # probabilities, as it does Paddle's; logits get their softmax.
    scores = to_probabilities(scores).astype(np.float64)
    scores = np.maximum(scores, PROBABILITY_FLOOR)
    return scores / scores.sum(axis=1, keepdims=True)


def holdout_divergence(
    plan: QuantizationPlan, folder: Path, batch: np.ndarray, reference: np.ndarray
) -> dict[str, np.ndarray]:
    """KL(FP32 || INT8) of the class probabilities of each image of `batch`, per engine, for the INT8 folder `folder`."""
    from paddlecls_q.model_files import find_model_files
    from paddlecls_q.quantize.accuracy import eval_options
    from paddlecls_q.runtime import create_runtime

    files = find_model_files(folder)
    divergence = {}
    for engine in SELECTION_ENGINES:
        with create_runtime(files, eval_options(plan, engine)) as runtime:
            quantized = _probabilities(runtime, batch)
        divergence[engine] = np.sum(reference * (np.log(reference) - np.log(quantized)), axis=1)
    return divergence


def run_qat_ptq_export(
    plan: QuantizationPlan,
    images: CalibrationImages,
    work: Path,
    folder: Path,
    keep: list[str],
    reduce_range: ReduceRange,
    progress: Progress,
    device: str = "cpu",
) -> tuple[dict[str, Any], int, float | None]:
    """QAT that starts from PTQ and cannot end behind it by a label-free measure (`TrainConfig.export: ptq`).

    The student trains on the even-numbered images; at step 0 and at `TrainConfig.checkpoints` later steps
    its FP32 weights go through the PTQ pipeline (PaddleSlim calibration on all the images, the even int8
    grid for oneDNN, ONNX Runtime's quantizer for ORT and OpenVINO), so step 0 is exactly the PTQ model.
    Each engine's file comes from the checkpoint with the lowest KL(FP32 || INT8) on the odd-numbered
    images, which training never saw, if it beats step 0 clearly (`SIGNIFICANT_ERRORS`); else from step 0. Writes the INT8 folder; returns (encodings, iterations, final loss).
    """
    from dataclasses import replace

    from paddlecls_q.model_files import find_model_files
    from paddlecls_q.quantize.accuracy import eval_options
    from paddlecls_q.quantize.assemble import _copy_deploy_files, assemble_folder
    from paddlecls_q.quantize.ptq import run_ptq
    from paddlecls_q.runtime import create_runtime
    from paddlecls_q.runtime.convert import paddle_to_onnx

    if len(images.paths) < 2:
        raise ConfigError("TrainConfig.export: ptq holds out half of the training images: it needs at least 2")
    training = CalibrationImages(images.paths[0::2], plan.files.folder, plan.config.Global.qat_preprocess)
    training.preprocess = images.preprocess
    holdout = images.batch(list(range(1, len(images.paths), 2)))
    train = plan.config.TrainConfig
    per_epoch = len(training.paths) // min(plan.config.Global.qat_batch_size, len(training.paths))
    by_epochs = None if train.epochs is None else train.epochs * per_epoch
    planned = min(count for count in (train.train_iter, by_epochs) if count is not None)
    _, iterations, loss, snapshots = run_qat(
        plan, training, work, keep, progress, device, checkpoint_steps(planned, train.checkpoints)
    )
    with create_runtime(plan.files, eval_options(plan, "ort")) as runtime:
        reference = _probabilities(runtime, holdout)
    task = progress.add("QAT checkpoints through PTQ", len(snapshots) + 1)
    candidates: dict[int, tuple[Path, dict[str, Any], dict[str, np.ndarray]]] = {}
    for step in (0, *sorted(snapshots)):
        files = plan.files
        if step:
            fp32 = work / f"fp32_step{step}"
            _write_checkpoint(work / "fp32_student", snapshots.pop(step), fp32, device)
            _copy_deploy_files(plan, fp32)
            # onnx_model_for reads a folder's own inference.ort.onnx first: the checkpoint's FP32 graph.
            paddle_to_onnx(fp32 / "inference.pdmodel", fp32 / "inference.pdiparams", fp32 / "inference.ort.onnx")
            files = find_model_files(fp32)
        step_plan = replace(plan, method="ptq", files=files)
        quantized, paddle_encoding = run_ptq(step_plan, images, work / f"ptq_step{step}", keep, progress, device)
        candidate = work / f"int8_step{step}"
        encodings = assemble_folder(step_plan, quantized, candidate, keep, reduce_range, images, progress)
        encodings["paddle"] = paddle_encoding
        candidates[step] = (candidate, encodings, holdout_divergence(plan, candidate, holdout, reference))
        progress.advance(
            task, note=f"step {step}: KL " + " ".join(f"{v.mean():.4f}" for v in candidates[step][2].values())
        )
    progress.done(task)

    def chosen(engine: str) -> int:
        """The lowest mean KL, if it beats step 0 (PTQ) by more than two standard errors over the images."""
        best = min(candidates, key=lambda step: (candidates[step][2][engine].mean(), step))
        gain = candidates[0][2][engine] - candidates[best][2][engine]
        return best if gain.mean() > SIGNIFICANT_ERRORS * gain.std(ddof=1) / math.sqrt(len(gain)) else 0

    paddle_step = chosen("paddle")
    shutil.copytree(candidates[paddle_step][0], folder)
    picks = {"paddle": paddle_step, "trt": paddle_step}  # the TensorRT file is exported from the Paddle program
    for engine in ("ort", "openvino"):
        picks[engine] = chosen(engine)
        shutil.copyfile(candidates[picks[engine]][0] / f"inference.{engine}.onnx", folder / f"inference.{engine}.onnx")
    result = {}
    for engine, step in picks.items():
        measured = "paddle" if engine == "trt" else engine
        result[engine] = {
            **candidates[step][1][engine],
            "qat_checkpoint": step,
            "holdout_kl_by_step": {str(s): round(float(c[2][measured].mean()), 6) for s, c in candidates.items()},
            "holdout_images": len(holdout),
        }
    return result, iterations, loss
