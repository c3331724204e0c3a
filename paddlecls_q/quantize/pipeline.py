"""The `quantize` flow: plan → read images → PTQ or QAT → assemble the folder → accuracy budget
(→ sensitivity: keep the most sensitive layers in FP32 and rebuild) → report → publish by rename.

The output folder holds the INT8 Paddle model, the FP32 folder's `inference_cls.yaml` and label
file, one ONNX Q/DQ graph per CPU engine in that engine's fastest encoding (`qdq_onnx`), and
`quantize_report.json`. It is built in a hidden temporary folder next to the output and renamed
into place only when complete, so an interrupted run leaves no output folder.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paddlecls_q.config import QuantizeConfig
from paddlecls_q.errors import AccuracyBudgetError
from paddlecls_q.qdq_onnx import ReduceRange
from paddlecls_q.quantize.accuracy import measure_accuracy, rank_layers
from paddlecls_q.quantize.assemble import assemble_folder, assemble_onnx_folder, folder_size, quantized_weights
from paddlecls_q.quantize.images import CalibrationImages
from paddlecls_q.quantize.paddle_patches import check_quantize_device
from paddlecls_q.quantize.plan import plan_quantization
from paddlecls_q.quantize.progress import Progress, handle_interrupts, raise_if_interrupted
from paddlecls_q.quantize.ptq import run_ptq
from paddlecls_q.quantize.qat import run_qat, run_qat_ptq_export
from paddlecls_q.quantize.quantize_report import REPORT_FILE, QuantizeReport, installed_package_versions
from paddlecls_q.quantize.workspace import Workspace

# on_message(kind, text): kind is "warning" (also kept in the report) or "info" (progress of --sensitivity).
Message = Callable[[str, str], None]


def quantize(
    config: QuantizeConfig,
    method: str | None = None,
    output_dir: str | Path | None = None,
    *,
    force: bool = False,
    allow_few: bool = False,
    sensitivity: bool = False,
    progress: bool = False,
    reduce_range: ReduceRange = "none",
    on_message: Message | None = None,
    device: str = "cpu",
) -> QuantizeReport:
    """Quantize the config's model with PTQ or QAT and publish a complete, deployable output folder.

    Raises AccuracyBudgetError (exit code 3) when `accuracy.eval_list` is set and INT8 top-1 drops
    by more than `accuracy.max_drop` points on an engine (after `sensitivity` kept the most
    sensitive layers in FP32, if asked); the complete folder then goes to `<output>.rejected`.
    PTQ/QAT run on `device` (cpu, gpu, gpu:N: CUDAPlace with a CUDA build of paddle).
    """
    started = time.perf_counter()
    place = check_quantize_device(device)  # a GPU this paddle can't give fails before any work
    plan = plan_quantization(config, method, output_dir, force, allow_few, sensitivity)
    say = on_message or (lambda kind, text: None)
    for warning in plan.warnings:
        say("warning", warning)
    if plan.method == "ptq" and config.PTQ.calibration_images is None:
        say(
            "info",
            f"calibrating on all {len(plan.images)} images of {plan.image_folder} (PTQ.calibration_images unset)",
        )
    stages: dict[str, float] = {}
    report = QuantizeReport(
        method=plan.method,
        model_dir=str(plan.files.folder.resolve()),
        output_dir=str(plan.output_dir),
        config=config.model_dump(mode="json"),
        packages=installed_package_versions(),
        image_folder=str(plan.image_folder),
        images_used=len(plan.images),
        images_found=plan.images_found,
        seed=config.Global.seed,
        keep_fp32_layers=list(plan.keep_fp32_layers),
        warnings=plan.warnings,
        device=f"{place[0]}:{place[1]}" if place[0] == "gpu" else "cpu",
    )
    preprocess = config.Global.ptq_preprocess if plan.method == "ptq" else config.Global.qat_preprocess
    with handle_interrupts(), Progress(progress) as bars, Workspace(plan.output_dir) as workspace:
        images = CalibrationImages(plan.images, plan.files.folder, preprocess)
        mark = time.perf_counter()
        images.check(bars)
        stages["read_images"] = time.perf_counter() - mark

        def build(keep: list[str], attempt: int) -> Path:
            mark = time.perf_counter()
            work = workspace.path / f"work{attempt}"
            folder = workspace.path / f"model{attempt}"
            if plan.files.format == "onnx":  # PTQ of an ONNX model: ONNX Runtime's quantizer only
                report.encodings = assemble_onnx_folder(plan, folder, keep, images, bars, work)
                stages["ptq"] = stages.get("ptq", 0.0) + time.perf_counter() - mark
                shutil.rmtree(work, ignore_errors=True)
                return folder
            if plan.method == "qat" and config.TrainConfig.export == "ptq":  # trains, then PTQ per checkpoint
                report.encodings, report.train_iterations, report.final_distillation_loss = run_qat_ptq_export(
                    plan, images, work, folder, keep, reduce_range, bars, device
                )
                stages["qat"] = stages.get("qat", 0.0) + time.perf_counter() - mark
                shutil.rmtree(work, ignore_errors=True)
                return folder
            paddle_encoding: dict[str, Any] = {}
            if plan.method == "ptq":
                quantized, paddle_encoding = run_ptq(plan, images, work, keep, bars, device)
            else:
                quantized, report.train_iterations, report.final_distillation_loss, _ = run_qat(
                    plan, images, work, keep, bars, device
                )
            stages[plan.method] = stages.get(plan.method, 0.0) + time.perf_counter() - mark
            raise_if_interrupted()
            mark = time.perf_counter()
            task = bars.add("exporting ONNX", 1)
            report.encodings = assemble_folder(plan, quantized, folder, keep, reduce_range, images, bars)
            if paddle_encoding:
                report.encodings["paddle"] = paddle_encoding
            bars.done(task)
            shutil.rmtree(work, ignore_errors=True)
            stages["export_onnx"] = stages.get("export_onnx", 0.0) + time.perf_counter() - mark
            return folder

        folder = build(plan.keep_fp32_layers, 0)
        fp32_results: dict[str, Any] | None = None
        if plan.eval_list is not None:
            mark = time.perf_counter()
            report.accuracy, fp32_results = measure_accuracy(plan, folder, None, progress)
            stages["accuracy"] = time.perf_counter() - mark
        if sensitivity and report.accuracy is not None and not report.accuracy["within_budget"]:
            mark = time.perf_counter()
            ranking = rank_layers(plan, folder, images)
            history = [{"fp32_layers": list(plan.keep_fp32_layers), "worst_drop": report.accuracy["worst_drop"]}]
            candidates = [row["layer"] for row in ranking if row["layer"] not in plan.keep_fp32_layers]
            limit = config.accuracy.max_fp32_layers
            keep = list(plan.keep_fp32_layers)
            for layer in candidates[:limit]:
                keep.append(layer)
                say("info", f"sensitivity: keeping {len(keep)} layer(s) in FP32, adding {layer}")
                shutil.rmtree(folder, ignore_errors=True)
                folder = build(keep, len(keep))
                report.accuracy, fp32_results = measure_accuracy(plan, folder, fp32_results, progress)
                history.append({"fp32_layers": list(keep), "worst_drop": report.accuracy["worst_drop"]})
                if report.accuracy["within_budget"]:
                    break
            report.keep_fp32_layers = keep
            report.sensitivity = {"ranking": ranking, "history": history}
            stages["sensitivity"] = time.perf_counter() - mark

        report.quantized_layers = len(quantized_weights(folder / "inference.ort.onnx"))
        report.sizes_bytes = {
            "fp32_params": plan.files.params.stat().st_size,
            "int8_params": (folder / ("inference.onnx" if plan.files.format == "onnx" else "inference.pdiparams"))
            .stat()
            .st_size,
            **{
                f"{engine}_onnx": (folder / f"inference.{engine}.onnx").stat().st_size
                for engine in report.encodings
                if engine != "paddle"  # the Paddle program: int8_params
            },
        }
        passed = report.accuracy is None or report.accuracy["within_budget"]
        target = plan.output_dir if passed else plan.output_dir.with_name(plan.output_dir.name + ".rejected")
        report.published_as = str(target)
        report.warnings = list(dict.fromkeys(report.warnings))
        report.stage_seconds = {name: round(seconds, 2) for name, seconds in stages.items()}
        report.wall_seconds = round(time.perf_counter() - started, 2)
        report.sizes_bytes["output_folder"] = folder_size(folder)
        (folder / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
        raise_if_interrupted()
        workspace.publish(folder, target, plan.force)
    if not passed:
        assert report.accuracy is not None  # `passed` is True without an accuracy check
        worst = max(report.accuracy["engines"], key=lambda row: row["drop"])
        error = AccuracyBudgetError(
            f"INT8 top-1 dropped {worst['drop']:.2f} points on {worst['engine']} "
            f"({worst['fp32_top1']:.2f} -> {worst['int8_top1']:.2f}), over accuracy.max_drop "
            f"{config.accuracy.max_drop:.2f}; the model was written to {target} for inspection"
            + ("" if sensitivity else "; try --sensitivity to keep the most sensitive layers in FP32")
        )
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report
