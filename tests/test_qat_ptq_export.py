"""QAT exported through the PTQ pipeline, with checkpoints chosen by KL on held-out images (`TrainConfig.export: ptq`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from quantize_support import write_config

from paddlecls_q.config import load_quantize_config
from paddlecls_q.model_files import find_model_files
from paddlecls_q.quantize.images import CalibrationImages
from paddlecls_q.quantize.plan import plan_quantization
from paddlecls_q.quantize.qat import _probabilities, checkpoint_steps, holdout_divergence

pytest_plugins = ["quantize_support"]


def test_checkpoint_steps_are_spread_and_end_at_the_last_step() -> None:
    assert checkpoint_steps(80, 4) == (20, 40, 60, 80)
    assert checkpoint_steps(3, 4) == (1, 2, 3)
    assert checkpoint_steps(1, 1) == (1,)


@pytest.mark.slow
def test_step_0_is_the_ptq_model_and_each_engine_gets_its_lowest_kl_checkpoint(
    demo_model: Path, fashion: Path, tmp_path: Path
) -> None:
    from paddlecls_q.quantize import quantize
    from paddlecls_q.runtime import create_runtime
    from paddlecls_q.quantize.accuracy import eval_options

    images = str(fashion / "images" / "train")
    qat = {
        "Global": {"model_dir": str(demo_model), "qat_image_path": images, "qat_batch_size": 8, "output_dir": "qat"},
        "Distillation": {"loss": "l2"},
        "TrainConfig": {"train_iter": 4, "train_images": 32, "learning_rate": 0.001, "export": "ptq", "checkpoints": 2},
    }
    config = load_quantize_config(write_config(tmp_path, qat, "qat.yaml"))
    report = quantize(config)
    output = tmp_path / "qat"
    assert report.method == "qat" and report.train_iterations == 4 and report.images_used == 32
    assert set(report.encodings) == {"paddle", "ort", "openvino", "trt"}
    for encoding in report.encodings.values():
        by_step = encoding["holdout_kl_by_step"]
        assert set(by_step) == {"0", "2", "4"}
        assert encoding["qat_checkpoint"] in (0, int(min(by_step, key=by_step.get)))  # the best, or PTQ
        assert by_step[str(encoding["qat_checkpoint"])] <= by_step["0"]  # never behind PTQ on the held-out images
    assert report.encodings["paddle"]["quantizer"] == "paddleslim quant_post_static"  # PTQ's own pipeline
    assert find_model_files(output).is_quantized

    # A plain PTQ run (the PTQ section's defaults, the same 32 images) gives step 0's held-out KL on every engine.
    ptq = {"Global": {"model_dir": str(demo_model), "ptq_image_path": images, "output_dir": "ptq"}}
    ptq["PTQ"] = {"calibration_images": 32}
    quantize(load_quantize_config(write_config(tmp_path, ptq, "ptq.yaml")))
    plan = plan_quantization(config, None, tmp_path / "unused")
    calibration = CalibrationImages(plan.images, plan.files.folder, config.Global.qat_preprocess)
    holdout = calibration.batch(list(range(1, 32, 2)))
    with create_runtime(plan.files, eval_options(plan, "ort")) as runtime:
        reference = _probabilities(runtime, holdout)
    step_0 = holdout_divergence(plan, tmp_path / "ptq", holdout, reference)
    for engine, divergence in step_0.items():
        assert report.encodings[engine]["holdout_kl_by_step"]["0"] == pytest.approx(divergence.mean(), abs=2e-6)
    # the shipped ORT file is the chosen checkpoint's; where that is step 0 it is the PTQ file itself
    if report.encodings["ort"]["qat_checkpoint"] == 0:
        assert (output / "inference.ort.onnx").read_bytes() == (tmp_path / "ptq" / "inference.ort.onnx").read_bytes()
    assert np.isfinite(report.final_distillation_loss or 0.0)


@pytest.mark.slow
def test_calibrated_activation_scales_do_not_move_in_training(demo_model: Path, fashion: Path, tmp_path: Path) -> None:
    import paddle

    from paddlecls_q.quantize.paddle_patches import static_mode
    from paddlecls_q.quantize.qat import _activation_abs_max
    from paddlecls_q.quantize import quantize

    qat = {
        "Global": {"model_dir": str(demo_model), "qat_image_path": str(fashion / "images" / "train")},
        "Distillation": {"loss": "l2"},
        "TrainConfig": {"train_iter": 3, "train_images": 16, "learning_rate": 0.01, "activation_scales": "calibrated"},
    }
    qat["Global"].update(qat_batch_size=8, output_dir="qat")
    config = load_quantize_config(write_config(tmp_path, qat))
    quantize(config)
    plan = plan_quantization(config, None, tmp_path / "unused")
    images = CalibrationImages(plan.images, plan.files.folder, config.Global.qat_preprocess)
    expected = _activation_abs_max(plan.files.folder, images, 8, "cpu")  # BN folding leaves conv inputs alone
    with static_mode(onednn=False) as executor:
        program, _, _ = paddle.static.load_inference_model(str(tmp_path / "qat" / "inference"), executor)
        scope = paddle.static.global_scope()
        trained = {
            op.input("X")[0]: float(np.array(scope.find_var(op.input("Scale")[0]).get_tensor()).reshape(-1)[0])
            for op in program.global_block().ops
            if op.type == "quantize_linear" and op.input("X")[0] in expected
        }
    assert trained  # every quantized conv input of the exported model...
    for name, scale in trained.items():  # ...kept the max |x| of the training images through 3 steps at lr 0.01
        assert scale == pytest.approx(expected[name], rel=1e-5), name
