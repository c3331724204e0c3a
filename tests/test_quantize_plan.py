"""`quantize` checks before anything is written (paddlecls_q/quantize/plan.py, images.py, paddle_patches.py):
one red line, exit 2, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from quantize_support import ptq_config, write_config

from paddlecls_q import registry
from paddlecls_q.config import QuantizeConfig, load_quantize_config

# The shared fixtures (demo_model, fashion, bad_input) live in tests/quantize_support.py.
pytest_plugins = ["quantize_support"]
REPO = Path(__file__).resolve().parents[1]


def test_unknown_keys_are_rejected_with_a_suggestion(bad_input: Any) -> None:
    bad_input(
        lambda c: c.update(Distilation={"alpha": 1.0}), expect="unknown key 'Distilation'; did you mean 'Distillation'?"
    )
    bad_input(
        lambda c: c["Global"].update(ptq_image_pth="x"),
        expect="unknown key 'Global.ptq_image_pth'; did you mean 'ptq_image_path'?",
    )
    bad_input(lambda c: c["PTQ"].update(calibration_image=10), expect="did you mean 'calibration_images'?")


def test_wrong_types_and_values_are_rejected(bad_input: Any) -> None:
    bad_input(lambda c: c["PTQ"].update(calibration_images="many"), expect="key 'PTQ.calibration_images'")
    bad_input(lambda c: c["PTQ"].update(calibration_method="kl_div"), expect="unknown calibration method 'kl_div'")
    bad_input(lambda c: c["Global"].update(ptq_preprocess="yolo_image_preprocess"), expect="unknown preprocess")
    bad_input(lambda c: c["Global"].update(format="onnx"), expect="Global.format is onnx but the folder holds no inference.onnx")
    bad_input(lambda c: c["Global"].update(format="tflite"), expect="format 'tflite' is not supported")
    bad_input(lambda c: c.update(QuantAware={"onnx_format": False}), expect="onnx_format must be true")
    bad_input(lambda c: c.update(TrainConfig={"learning_rate": 0.1}), expect="needs train_iter or epochs")


def test_method_names(bad_input: Any) -> None:
    assert QuantizeConfig.model_validate({"Global": {"model_dir": "m"}}).resolve_method("'QAT'") == "qat"
    bad_input(None, "--method", "qta", expect="unknown method 'qta'; did you mean 'qat'?")
    # Case and quotes are normalised: 'PTQ' is accepted and the run goes on to the next check.
    bad_input(
        lambda c: c["Global"].update(ptq_image_path="/nonexistent"),
        "--method",
        "'PTQ'",
        expect="image folder not found",
    )


def test_calibration_folder_problems(bad_input: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "notes.txt").write_text("not an image")
    broken = tmp_path / "broken"
    broken.mkdir()
    for index in range(64):
        (broken / f"{index}.png").write_bytes(b"\x89PNG not really")
    bad_input(lambda c: c["Global"].update(ptq_image_path=str(tmp_path / "missing")), expect="image folder not found")
    bad_input(lambda c: c["Global"].update(ptq_image_path=str(empty)), expect="image folder is empty")
    bad_input(
        lambda c: c["Global"].update(ptq_image_path=str(texts)), expect="holds no images (1 other files: notes.txt)"
    )
    bad_input(lambda c: c["Global"].update(ptq_image_path=str(broken)), expect="not a usable image")
    bad_input(lambda c: c["PTQ"].update(calibration_images=1000), expect="only 400 images, the config asks for 1000")


def test_allow_few_uses_every_image(demo_model: Path, fashion: Path, tmp_path: Path) -> None:
    from paddlecls_q.quantize import plan_quantization

    data = ptq_config(demo_model, fashion / "images" / "train", tmp_path / "int8", PTQ={"calibration_images": 1000})
    plan = plan_quantization(load_quantize_config(write_config(tmp_path, data)), allow_few=True)
    assert len(plan.images) == 400 and "fewer than the 1000 configured" in plan.warnings[-1]


def test_model_folder_problems(bad_input: Any, tmp_path: Path, demo_model: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "inference.pdmodel").write_bytes(b"not a program")
    (junk / "inference.pdiparams").write_bytes(b"nor weights")
    no_yaml = tmp_path / "no_yaml"
    shutil.copytree(demo_model, no_yaml)
    (no_yaml / "inference_cls.yaml").unlink()
    bad_input(lambda c: c["Global"].update(model_dir=str(tmp_path / "missing")), expect="model folder not found")
    bad_input(lambda c: c["Global"].update(model_dir=str(junk)), expect="not a Paddle program")
    bad_input(lambda c: c["Global"].update(model_dir=str(no_yaml)), expect="inference_cls.yaml is missing")
    bad_input(lambda c: c["Global"].update(model_filename="model.pdmodel"), expect="Global.model_filename")


def test_output_folder_problems(bad_input: Any, demo_model: Path, tmp_path: Path) -> None:
    bad_input(lambda c: c["Global"].update(output_dir=str(demo_model)), expect="is the input model folder or inside it")
    bad_input(lambda c: c["Global"].update(output_dir=str(demo_model / "int8")), expect="inside it")
    bad_input(lambda c: c["Global"].update(output_dir=str(demo_model.parent)), expect="contains the input model folder")
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    bad_input(lambda c: c["Global"].update(output_dir=str(existing)), expect="already exists; pass --force")
    assert (existing / "keep.txt").read_text() == "mine"


def test_layers_to_keep_in_fp32_must_exist(bad_input: Any) -> None:
    message = bad_input(lambda c: c["PTQ"].update(skip_tensor_list=["conv2d_99.w_0"]), expect="layer 'conv2d_99.w_0'")
    assert "did you mean 'conv2d_9.w_0'?" in message
    bad_input(
        lambda c: c["Global"].update(keep_fp32_layers=["batch_norm_0.w_0"]), expect="not an input of a quantized op"
    )


def test_sensitivity_needs_an_eval_list(bad_input: Any) -> None:
    bad_input(None, "--sensitivity", expect="--sensitivity needs accuracy.eval_list")


def test_shipped_configs_load() -> None:
    names = sorted(path.stem for path in (REPO / "configs").glob("*.yaml"))
    assert {
        "demo_ptq",
        "demo_qat",
        "resnet50_vd_ptq",
        "resnet50_vd_qat",
        "mobilenetv1_ssld_ptq",
        "mobilenetv1_ssld_qat",
    } <= set(names)
    for name in names:
        config = load_quantize_config(REPO / "configs" / f"{name}.yaml")
        assert config.resolve_method(None) == name.rsplit("_", 1)[1]
        assert config.Global.model_dir.is_absolute()
    demo = load_quantize_config(REPO / "configs" / "demo_ptq.yaml")
    assert demo.Global.model_dir == registry.DEMO_MODEL_DIR.resolve()
    assert (
        demo.accuracy.max_drop == 0.3
        and load_quantize_config(REPO / "configs" / "demo_qat.yaml").accuracy.max_drop == 0.1
    )
