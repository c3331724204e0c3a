"""`paddlecls-q infer` through CliRunner and the installed entry point, including every bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from helpers import assert_one_line_error
from paddlecls_q.cli import app

runner = CliRunner()
ENTRY_POINT = str(Path(sys.executable).parent / "paddlecls-q")


def infer(*args: str):
    return runner.invoke(app, ["infer", *args])


@pytest.fixture()
def model_copy(demo_model_dir, tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(demo_model_dir, folder)
    return folder


@pytest.mark.parametrize("backend", ["paddle", "ort", "openvino"])
def test_demo_model_classifies_a_real_fashion_mnist_image(demo_model_dir, fashion_image, backend):
    result = infer("--model", "demo", "--image", str(fashion_image), "--backend", backend, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == "paddlecls-q/infer"
    prediction = document["predictions"][0]
    # Test image 0 of Fashion-MNIST is an ankle boot (class 9).
    assert prediction["class_ids"][0] == 9 and prediction["labels"][0] == "Ankle boot"
    assert prediction["scores"] == sorted(prediction["scores"], reverse=True)
    assert len(prediction["class_ids"]) == 3  # the yaml's topk


def test_table_output_and_folder_input(demo_model_dir, fashion_image, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(fashion_image, folder / "a.png")
    shutil.copy(fashion_image, folder / "b.png")
    (folder / "notes.txt").write_text("not an image")
    result = infer("--model-dir", str(demo_model_dir), "--image", str(folder), "--topk", "2")
    assert result.exit_code == 0, result.output
    assert "a.png" in result.output and "b.png" in result.output and "Ankle boot" in result.output


def test_full_size_model_gets_imagenet_labels(mobilenet_v1_dir, photo):
    result = infer("--model-dir", str(mobilenet_v1_dir), "--image", str(photo), "--json", "--topk", "5")
    assert result.exit_code == 0, result.output
    prediction = json.loads(result.stdout)["predictions"][0]
    assert len(prediction["class_ids"]) == 5 and all(prediction["labels"])


def test_installed_entry_point_runs(demo_model_dir, fashion_image):
    completed = subprocess.run(
        [ENTRY_POINT, "infer", "--model", "demo", "--image", str(fashion_image), "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["predictions"][0]["class_ids"][0] == 9


def test_entry_point_bad_input_is_one_line_on_stderr(tmp_path, fashion_image):
    completed = subprocess.run(
        [ENTRY_POINT, "infer", "--model-dir", str(tmp_path / "nope"), "--image", str(fashion_image)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2
    assert completed.stdout == "" and "Traceback" not in completed.stderr
    assert completed.stderr.strip().count("\n") == 0 and "model folder not found" in completed.stderr


def test_cmyk_jpeg_is_classified_like_its_rgb_original(tmp_path, demo_model_dir, fashion_image):
    rgb = Image.open(fashion_image).convert("RGB").resize((224, 224))
    rgb.save(tmp_path / "rgb.jpg", quality=95)
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    ids = []
    for name in ("rgb.jpg", "cmyk.jpg"):
        result = infer("--model-dir", str(demo_model_dir), "--image", str(tmp_path / name), "--json")
        assert result.exit_code == 0, result.output
        ids.append(json.loads(result.stdout)["predictions"][0]["class_ids"][0])
    assert ids[0] == ids[1]


# ---- bad input: one line, non-zero exit, nothing written ------------------------------------------------


def test_missing_model_folder(tmp_path, fashion_image):
    assert_one_line_error(infer("--model-dir", str(tmp_path / "nope"), "--image", str(fashion_image)), 2, "model folder not found")


def test_folder_without_a_model(tmp_path, fashion_image):
    assert_one_line_error(infer("--model-dir", str(tmp_path), "--image", str(fashion_image)), 2, "no Paddle inference model")


@pytest.mark.parametrize("name", ["inference.pdmodel", "inference.pdiparams"])
def test_truncated_model_files(model_copy, fashion_image, name):
    path = model_copy / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_one_line_error(infer("--model-dir", str(model_copy), "--image", str(fashion_image)), 2, "truncated")


def test_corrupt_model_file(model_copy, fashion_image):
    (model_copy / "inference.pdmodel").write_bytes(b"\x00garbage" * 100)
    assert_one_line_error(infer("--model-dir", str(model_copy), "--image", str(fashion_image)), 2, "corrupt")


def test_missing_inference_cls_yaml_says_where_to_get_it(model_copy, fashion_image):
    (model_copy / "inference_cls.yaml").unlink()
    result = infer("--model-dir", str(model_copy), "--image", str(fashion_image))
    assert_one_line_error(result, 2, "copy it from the FP32 model folder")


def test_yaml_with_an_unknown_op(model_copy, fashion_image):
    yaml_path = model_copy / "inference_cls.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("ToCHWImage", "ToCHWImg"))
    result = infer("--model-dir", str(model_copy), "--image", str(fashion_image))
    assert_one_line_error(result, 2, "unsupported preprocessing op 'ToCHWImg'")
    assert "did you mean 'ToCHWImage'" in result.output


def test_yaml_with_a_bad_value(model_copy, fashion_image):
    yaml_path = model_copy / "inference_cls.yaml"
    text = yaml_path.read_text()
    assert "size: 32" in text
    yaml_path.write_text(text.replace("size: 32", "size: -32"))
    assert_one_line_error(infer("--model-dir", str(model_copy), "--image", str(fashion_image)), 2, "size")


def test_image_path_that_does_not_exist(demo_model_dir, tmp_path):
    result = infer("--model-dir", str(demo_model_dir), "--image", str(tmp_path / "cat.jpg"))
    assert_one_line_error(result, 2, "not found")


def test_non_image_and_zero_byte_files(demo_model_dir, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("hello, not a picture")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert_one_line_error(infer("--model-dir", str(demo_model_dir), "--image", str(text)), 2, "notes.jpg")
    assert_one_line_error(infer("--model-dir", str(demo_model_dir), "--image", str(empty)), 2, "empty.png")


def test_huge_image_is_refused_before_decoding(demo_model_dir, tmp_path):
    huge = tmp_path / "huge.png"
    cv2.imwrite(str(huge), np.zeros((10000, 10000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert_one_line_error(infer("--model-dir", str(demo_model_dir), "--image", str(huge)), 2, "10000")


def test_trt_backend_without_gpu_stack_names_the_package(demo_model_dir, fashion_image):
    result = infer("--model-dir", str(demo_model_dir), "--image", str(fashion_image), "--backend", "trt")
    assert_one_line_error(result, 2, "TensorRT")


def test_unknown_backend(demo_model_dir, fashion_image):
    result = infer("--model-dir", str(demo_model_dir), "--image", str(fashion_image), "--backend", "onnx")
    assert_one_line_error(result, 2, "unknown backend 'onnx'")


def test_model_not_downloaded_yet(fashion_image):
    result = infer("--model", "ResNet50_vd", "--quantized", "--image", str(fashion_image))
    assert_one_line_error(result, 2, "paddlecls-q download ResNet50_vd --quantized")


def test_bad_input_writes_nothing(model_copy, fashion_image, tmp_path):
    before = sorted(p.name for p in model_copy.iterdir())
    (model_copy / "inference_cls.yaml").write_text("PreProcess: {transform_ops: [{Bogus: {}}]}\n")
    infer("--model-dir", str(model_copy), "--image", str(fashion_image))
    assert sorted(p.name for p in model_copy.iterdir()) == before


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (("--topk", "0"), "--topk"),
        (("--threads", "many"), "--threads"),
        (("--no-such-option",), "No such option"),
    ],
)
def test_bad_option_values_are_one_red_line_not_a_box(demo_model_dir, fashion_image, args, pattern):
    """Typer's own checks (range, type, unknown option) print one line and exit 2, like our errors."""
    result = infer("--model-dir", str(demo_model_dir), "--image", str(fashion_image), *args)
    assert_one_line_error(result, 2, pattern)


def test_entry_point_usage_error_is_one_line_on_stderr(fashion_image):
    completed = subprocess.run(
        [ENTRY_POINT, "infer", "--model", "demo", "--image", str(fashion_image), "--topk", "0"],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.strip().count("\n") == 0 and "--topk" in completed.stderr


@pytest.mark.parametrize("backend", ["paddle", "ort", "openvino"])
def test_batch_size_gives_the_same_predictions_and_a_throughput(demo_model_dir, fashion_image, tmp_path, backend):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in "abcde":
        shutil.copy(fashion_image, folder / f"{name}.png")
    one = json.loads(infer("--model-dir", str(demo_model_dir), "--image", str(folder), "--backend", backend, "--json").stdout)
    result = infer("--model-dir", str(demo_model_dir), "--image", str(folder), "--backend", backend,
                   "--batch-size", "3", "--json")
    assert result.exit_code == 0, result.output
    batched = json.loads(result.stdout)
    assert [p["class_ids"] for p in batched["predictions"]] == [p["class_ids"] for p in one["predictions"]]
    for a, b in zip(batched["predictions"], one["predictions"]):
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    assert batched["throughput"]["batch_size"] == 3 and batched["throughput"]["images"] == 5
    assert batched["throughput"]["images_per_s"] > 0
