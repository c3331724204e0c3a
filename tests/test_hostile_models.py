"""Hostile model folders: a yaml whose size the model can't take, params from another model, folders where files
should be. Each is one line and exit 2 when the folder is loaded, before any engine runs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error
from httpserver import INFERENCE_CLS_YAML_TEXT
from typer.testing import CliRunner

import paddlecls_q  # noqa: F401  (before paddle: selects the legacy .pdmodel format)
from paddlecls_q.cli import app
from paddlecls_q.errors import ModelFormatError
from paddlecls_q.model_files import find_model_files, read_params_tensors, weight_variables

runner = CliRunner()
SIZE_KEY = "key 'PreProcess.transform_ops.0.ResizeImage.size': the preprocessing makes 224x224 images"


def export_tiny(folder: Path, classes: int, channels: int = 4) -> Path:
    """A real Paddle inference model (Conv2D+BN+pool+Linear, input [N,3,32,32]) with `classes` outputs."""
    import paddle

    class TinyNet(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, channels, 3)
            self.bn = paddle.nn.BatchNorm2D(channels)
            self.pool = paddle.nn.AdaptiveAvgPool2D(1)
            self.fc = paddle.nn.Linear(channels, classes)

        def forward(self, x):
            return self.fc(paddle.flatten(self.pool(self.bn(self.conv(x))), 1))

    paddle.seed(0)
    net = TinyNet()
    net.eval()
    folder.mkdir(parents=True, exist_ok=True)
    spec = [paddle.static.InputSpec([None, 3, 32, 32], "float32", name="x")]
    paddle.jit.save(net, str(folder / "inference"), input_spec=spec)
    (folder / "inference_cls.yaml").write_text(INFERENCE_CLS_YAML_TEXT.replace("    class_id_map_file: labels.txt\n", ""))
    return folder


@pytest.fixture()
def model_copy(demo_model_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(demo_model_dir, folder)
    return folder


def crop_to_224(folder: Path) -> None:
    yaml_path = folder / "inference_cls.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("size: 32", "size: 224"))


# ---- the yaml's image size against the model's input ----------------------------------------------------------


def test_a_size_the_model_cannot_take_is_refused_by_infer(model_copy: Path, fashion_image: Path):
    crop_to_224(model_copy)
    result = runner.invoke(app, ["infer", "--model-dir", str(model_copy), "--image", str(fashion_image)])
    assert_one_line_error(result, 2, SIZE_KEY)
    assert f"the input of {model_copy / 'inference.pdmodel'} is [-1, 3, 32, 32]" in result.output


def test_a_size_the_model_cannot_take_is_refused_by_eval(model_copy: Path, fashion_image: Path, tmp_path: Path):
    crop_to_224(model_copy)
    shutil.copy(fashion_image, tmp_path / "a.png")
    (tmp_path / "list.txt").write_text("a.png 0\n")
    result = runner.invoke(app, ["eval", "--model-dir", str(model_copy), "--data", str(tmp_path / "list.txt")])
    assert_one_line_error(result, 2, SIZE_KEY)


def test_a_size_the_model_cannot_take_is_refused_by_bench(model_copy: Path):
    crop_to_224(model_copy)
    command = ["bench", "--model-dir", str(model_copy), "--backends", "ort", "--modes", "fp32", "--iters", "1"]
    result = runner.invoke(app, command)
    assert_one_line_error(result, 2, SIZE_KEY)


def test_a_size_the_model_cannot_take_is_refused_by_quantize(model_copy: Path, fashion_image: Path, tmp_path: Path):
    crop_to_224(model_copy)
    (tmp_path / "images").mkdir()
    shutil.copy(fashion_image, tmp_path / "images" / "a.png")
    config = tmp_path / "q.yaml"
    config.write_text(f"Global:\n  model_dir: {model_copy}\n  image_path: {tmp_path / 'images'}\n")
    result = runner.invoke(app, ["quantize", "--config", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        next(line for line in result.output.splitlines() if SIZE_KEY in line)
    ]
    assert not (tmp_path / "out").exists()


def test_the_size_check_leaves_free_input_sizes_and_matching_sizes_alone(tmp_path: Path, fashion_image: Path):
    folder = export_tiny(tmp_path / "tiny", classes=10)  # crop 32 into [-1, 3, 32, 32]
    assert find_model_files(folder).input_shape == (-1, 3, 32, 32)
    result = runner.invoke(app, ["infer", "--model-dir", str(folder), "--image", str(fashion_image)])
    assert result.exit_code == 0, result.output


# ---- params from another model ---------------------------------------------------------------------------------


def test_params_of_the_same_architecture_with_other_shapes_are_refused(tmp_path: Path, fashion_image: Path):
    ten, twelve = export_tiny(tmp_path / "ten", classes=10), export_tiny(tmp_path / "twelve", classes=12)
    shutil.copy(twelve / "inference.pdiparams", ten / "inference.pdiparams")
    result = runner.invoke(app, ["infer", "--model-dir", str(ten), "--image", str(fashion_image)])
    assert_one_line_error(result, 2, f"{ten / 'inference.pdiparams'}: weight 'linear_")
    assert "has shape [12] where the program declares [10] (a params file from another model?)" in result.output


def test_params_of_a_different_model_are_refused(demo_model_dir: Path, tmp_path: Path, fashion_image: Path):
    tiny = export_tiny(tmp_path / "tiny", classes=10)
    shutil.copy(demo_model_dir / "inference.pdiparams", tiny / "inference.pdiparams")  # larger: no truncation
    result = runner.invoke(app, ["infer", "--model-dir", str(tiny), "--image", str(fashion_image)])
    assert_one_line_error(
        result, 2, "does not hold the 8 weights inference.pdmodel declares (a params file from another model?)"
    )


def test_the_params_walk_reads_every_weight_and_refuses_extra_bytes(demo_model_dir: Path, tmp_path: Path):
    from paddlecls_q.model_files import framework_proto

    desc = framework_proto().ProgramDesc.FromString((demo_model_dir / "inference.pdmodel").read_bytes())
    names = sorted(weight_variables(desc.blocks[0]))
    stored = read_params_tensors(demo_model_dir / "inference.pdiparams", names)
    assert stored is not None and list(stored) == names
    padded = tmp_path / "padded.pdiparams"
    padded.write_bytes((demo_model_dir / "inference.pdiparams").read_bytes() + b"\0")
    assert read_params_tensors(padded, names) is None
    assert read_params_tensors(demo_model_dir / "inference.pdiparams", names[:-1]) is None


# ---- folders and devices where the model's files should be -----------------------------------------------------


@pytest.mark.parametrize("name", ["inference.pdmodel", "inference.pdiparams"])
def test_a_model_file_that_is_a_folder_is_one_line(model_copy: Path, fashion_image: Path, name: str):
    (model_copy / name).unlink()
    (model_copy / name).mkdir()
    result = runner.invoke(app, ["infer", "--model-dir", str(model_copy), "--image", str(fashion_image)])
    assert_one_line_error(result, 2, f"{model_copy / name}: is a folder, not a model file")


def test_a_model_file_that_is_a_device_is_refused_without_reading_it(model_copy: Path):
    (model_copy / "inference.pdmodel").unlink()
    os.symlink("/dev/zero", model_copy / "inference.pdmodel")
    with pytest.raises(ModelFormatError, match="inference.pdmodel: not a regular file"):
        find_model_files(model_copy)


def test_an_onnx_model_gets_the_same_size_check_and_folder_rule(demo_model_dir: Path, tmp_path: Path, fashion_image):
    from paddlecls_q.runtime.convert import paddle_to_onnx

    files = find_model_files(demo_model_dir)
    folder = tmp_path / "onnx_model"
    folder.mkdir()
    paddle_to_onnx(files.program, files.params, folder / "inference.onnx")
    shutil.copy(demo_model_dir / "inference_cls.yaml", folder / "inference_cls.yaml")
    assert find_model_files(folder).input_shape == (-1, 3, 32, 32)
    crop_to_224(folder)
    result = runner.invoke(app, ["infer", "--model-dir", str(folder), "--image", str(fashion_image)])
    assert_one_line_error(result, 2, SIZE_KEY)
    (folder / "inference.onnx").unlink()
    (folder / "inference.onnx").mkdir()
    result = runner.invoke(app, ["infer", "--model-dir", str(folder), "--image", str(fashion_image)])
    assert_one_line_error(result, 2, f"{folder / 'inference.onnx'}: is a folder, not a model file")
