"""FastDeploy's own compress configs of every era, run through its documented command from its documented layout.

The layout is FastDeploy's README's: the working directory holds `configs/classification/*.yaml`,
`ResNet50_vd_infer/` (here: the bundled demo model renamed) and `ImageNet_val_640/` (here:
Fashion-MNIST PNGs). The configs under tests/data/fastdeploy_configs/ are FastDeploy's files
unchanged, each with its origin in a header comment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from paddlecls_q import registry
from paddlecls_q.cli.app import app
from paddlecls_q.config import load_quantize_config
from paddlecls_q.errors import ConfigError
from paddlecls_q.fastdeploy_compat import FASTDEPLOY_CALIBRATION, translate

runner = CliRunner()
CONFIGS = Path(__file__).parent / "data" / "fastdeploy_configs"
ERAS = sorted(path.name for path in CONFIGS.iterdir())
ENTRY_POINT = Path(sys.executable).with_name("paddlecls-q")


@pytest.fixture(scope="module")
def fashion_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from paddlecls_q.datasets import write_fashion_mnist

    folder = write_fashion_mnist(tmp_path_factory.mktemp("data") / "fashion_mnist", "train", limit=330).folder
    return folder / "images" / "train"


def fastdeploy_layout(work: Path, era: str, fashion_train: Path, images: int) -> Path:
    """FastDeploy's documented working folder: configs/, ResNet50_vd_infer/, ImageNet_val_640/."""
    (work / "configs" / "classification").mkdir(parents=True)
    for config in (CONFIGS / era).glob("*.yaml"):
        shutil.copy(config, work / "configs" / "classification" / config.name)
    shutil.copytree(registry.DEMO_MODEL_DIR, work / "ResNet50_vd_infer")
    (work / "ImageNet_val_640").mkdir()
    for path in sorted(fashion_train.glob("*.png"))[:images]:
        shutil.copy(path, work / "ImageNet_val_640" / path.name)
    return work


def test_every_era_is_copied_with_its_origin() -> None:
    assert len(ERAS) >= 4
    for era in ERAS:
        for config in (CONFIGS / era).glob("*.yaml"):
            header = config.read_text(encoding="utf-8").splitlines()[0]
            assert header.startswith("# Copied unchanged from github.com/PaddlePaddle/FastDeploy, tools/")
            assert len(header.split("at commit ")[1]) == 40


@pytest.mark.parametrize("era", ERAS)
def test_each_era_runs_the_documented_ptq_command_from_the_documented_layout(
    era: str, fashion_train: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = fastdeploy_layout(tmp_path / "work", era, fashion_train, images=12)
    monkeypatch.chdir(work)
    result = runner.invoke(
        app,
        [
            "compress",
            "--config_path=./configs/classification/resnet50_vd_quant.yaml",
            "--method='PTQ'",
            "--save_dir=./resnet50_vd_ptq_model/",  # the shell's quotes, removed as a shell would
            "--devices=cpu",
            "--fastdeploy",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["calibration_preset"] == "fastdeploy"
    assert report["images_used"] == 10
    assert report["config"]["PTQ"]["batch_size"] == 1
    assert report["config"]["PTQ"]["quantize_op_types"] == ["conv2d", "depthwise_conv2d", "mul"]
    assert report["model_dir"] == str((work / "ResNet50_vd_infer").resolve())
    assert (work / "resnet50_vd_ptq_model" / "inference.pdmodel").is_file()
    arch = "arch:" in (CONFIGS / era / "resnet50_vd_quant.yaml").read_text()
    assert ("ignoring Global.arch" in result.stderr) == arch


def test_documented_command_with_our_calibration_through_the_entry_point(fashion_train: Path, tmp_path: Path) -> None:
    """The command exactly as FastDeploy's README gives it (program name changed), default calibration."""
    work = fastdeploy_layout(tmp_path / "work", "2022-12_common_tools", fashion_train, images=330)
    command = (
        f"{ENTRY_POINT} compress --config_path=./configs/classification/resnet50_vd_quant.yaml "
        "--method='PTQ' --save_dir='./resnet50_vd_ptq_model/'"
    )
    result = subprocess.run(command, shell=True, cwd=work, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 0, result.stderr
    assert "calibration: paddlecls-q choices (every image of the folder in batches of 32" in " ".join(result.stderr.split())
    report = json.loads((work / "resnet50_vd_ptq_model" / "quantize_report.json").read_text())
    assert report["images_used"] == 330
    assert "matmul" in report["config"]["PTQ"]["quantize_op_types"]


@pytest.mark.parametrize("era", ERAS)
def test_each_era_translates_its_qat_sections(era: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for config_file in (CONFIGS / era).glob("*.yaml"):
        config = load_quantize_config(config_file)
        assert config.resolve_method("'QAT'") == "qat"
        assert config.QuantAware.use_pact is True
        assert config.QuantAware.quantize_op_types[0] == "conv2d"
        assert config.TrainConfig.train_iter or config.TrainConfig.epochs
        assert config.Global.qat_preprocess == "cls_image_preprocess"
        assert config.Global.input_list
        # Nothing exists beside the config or in cwd: the path stays the config-relative one.
        assert config.Global.model_dir.parent == config_file.parent.resolve()


def test_relative_paths_prefer_the_config_folder_then_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "beside").mkdir()
    (tmp_path / "beside").mkdir()
    (tmp_path / "only_cwd").mkdir()
    config_file = tmp_path / "configs" / "q.yaml"
    config_file.write_text(
        yaml.safe_dump({"Global": {"model_dir": "beside", "image_path": "only_cwd", "output_dir": "out"}})
    )
    monkeypatch.chdir(tmp_path)
    config = load_quantize_config(config_file)
    assert config.Global.model_dir == (tmp_path / "configs" / "beside").resolve()
    assert config.Global.image_path == (tmp_path / "only_cwd").resolve()
    assert config.Global.output_dir == (tmp_path / "configs" / "out").resolve()


def test_model_and_params_files_with_different_stems(fashion_train: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(registry.DEMO_MODEL_DIR, model)
    (model / "inference.pdmodel").rename(model / "model.pdmodel")
    (model / "inference.pdiparams").rename(model / "weights.pdiparams")
    config_file = tmp_path / "q.yaml"
    config_file.write_text(yaml.safe_dump({
        "Global": {"model_dir": str(model), "model_filename": "model.pdmodel", "params_filename": "weights.pdiparams",
                   "ptq_image_path": str(fashion_train)},
        "PTQ": {"calibration_method": "avg"},
    }))
    result = runner.invoke(app, ["quantize", "--config", str(config_file), "--output", str(tmp_path / "int8"),
                                 "--fastdeploy", "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "int8" / "inference.pdmodel").is_file()


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        ({"format": "tflite"}, "format 'tflite' is not supported: give 'paddle' or 'onnx'"),
        ({"ptq_preprocess": "yolo_image_preprocess"}, "YOLO detection preprocessing"),
        ({"preprocess": "my_preprocess"}, "never runs code from a config"),
        ({"input_name": "x", "input_list": ["x"]}, "both 'Global.input_name' and 'Global.input_list'"),
    ],
)
def test_what_cannot_be_honoured_is_one_clear_error(edit: dict, expect: str, tmp_path: Path) -> None:
    data = yaml.safe_load((CONFIGS / "2022-12_common_tools" / "resnet50_vd_quant.yaml").read_text())
    data["Global"].update(edit)
    config_file = tmp_path / "q.yaml"
    config_file.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["compress", f"--config_path={config_file}", "--method=PTQ"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert expect in " ".join(result.stderr.split())
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]]
    assert "Traceback" not in result.output


def test_unknown_keys_still_fail_with_a_suggestion(tmp_path: Path) -> None:
    config_file = tmp_path / "q.yaml"
    config_file.write_text(yaml.safe_dump({"Global": {"model_dir": "m", "arhc": "ResNet50"}}))
    with pytest.raises(ConfigError, match="unknown key 'Global.arhc'"):
        load_quantize_config(config_file)


def test_both_quant_sections_is_an_error() -> None:
    with pytest.raises(ConfigError, match="both 'Quantization'"):
        translate({"Quantization": {}, "QuantAware": {}}, "x.yaml")


def test_fastdeploy_preset_overrides_the_ptq_section() -> None:
    data = translate({"Global": {"model_dir": "m"}, "PTQ": {"calibration_images": 500}}, "x.yaml", None, "fastdeploy")
    assert data["PTQ"] == FASTDEPLOY_CALIBRATION


def test_gpu_quantization_is_refused_with_the_reason(tmp_path: Path) -> None:
    result = runner.invoke(app, ["compress", f"--config_path={CONFIGS / '2022-12_common_tools' / 'resnet50_vd_quant.yaml'}",
                                 "--method=PTQ", "--devices=gpu"])
    assert result.exit_code == 2
    assert "device 'gpu'" in result.stderr
