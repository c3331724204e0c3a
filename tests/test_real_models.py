"""torchvision's ImageNet MobileNetV2 converted by `make real-models`: parity with torch, FP32 top-1, bad weights.

Needs the folder `make real-models` writes, its torch side venv and ../shared/data/imagenet-sample; each
test skips with the reason when one is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from paddlecls_q.cli import app
from paddlecls_q.config import RuntimeOptions
from paddlecls_q.infer import Classifier
from paddlecls_q.preprocess import read_image

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / ".cache" / "models" / "MobileNetV2_imagenet"
NPZ = ROOT / ".cache" / "mobilenet_v2_torchvision.npz"
CONVERT_PYTHON = ROOT / ".venv-convert" / "bin" / "python"
CONVERT = ROOT / "scripts" / "convert_torchvision_mobilenet_v2.py"
# `make test` sets IMAGENET_SAMPLE (and builds MODEL_DIR when the folder is there).
IMAGENET_SAMPLE = Path(os.environ.get("IMAGENET_SAMPLE", ROOT.parent / "shared" / "data" / "imagenet-sample"))

needs_model = pytest.mark.skipif(not MODEL_DIR.is_dir(), reason=f"{MODEL_DIR} absent: run `make real-models`")
needs_torch = pytest.mark.skipif(
    not (CONVERT_PYTHON.is_file() and NPZ.is_file()), reason="torch side venv or npz absent: run `make real-models`"
)
needs_data = pytest.mark.skipif(
    not (IMAGENET_SAMPLE / "val_list.txt").is_file(), reason=f"{IMAGENET_SAMPLE} absent (real ImageNet images)"
)


def val_images(count: int) -> list[Path]:
    lines = (IMAGENET_SAMPLE / "val_list.txt").read_text(encoding="utf-8").splitlines()
    return [IMAGENET_SAMPLE / line.split()[0] for line in lines[:: len(lines) // count][:count]]


@needs_model
@needs_torch
@needs_data
@pytest.mark.parametrize("backend", ["paddle", "ort"])
def test_scores_equal_torch_on_the_same_tensors(tmp_path: Path, backend: str) -> None:
    classifier = Classifier(MODEL_DIR, RuntimeOptions(backend=backend, threads=1))
    batch = classifier.preprocess.batch([read_image(path) for path in val_images(8)])
    ours = classifier.runtime.infer(batch)
    np.save(tmp_path / "input.npy", batch)
    subprocess.run(
        [
            str(CONVERT_PYTHON),
            str(CONVERT),
            "torch-probs",
            str(NPZ),
            str(tmp_path / "input.npy"),
            str(tmp_path / "torch.npy"),
        ],
        check=True,
    )
    reference = np.load(tmp_path / "torch.npy")
    assert ours.shape == reference.shape == (8, 1000)
    assert float(np.abs(ours - reference).max()) <= 1e-4
    assert (ours.argmax(1) == reference.argmax(1)).all()


@needs_model
@needs_data
def test_fp32_top1_on_the_900_val_images() -> None:
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--data",
            str(IMAGENET_SAMPLE / "val_list.txt"),
            "--model-dir",
            str(MODEL_DIR),
            "--threads",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    model = json.loads(result.output)["model"]
    assert (model["count"], model["correct_top1"]) == (900, 746)  # 82.89
    assert round(model["top1"], 2) == 82.89


@needs_torch
def test_wrong_weights_are_one_line_exit_2(tmp_path: Path) -> None:
    wrong = tmp_path / "resnet.pth"
    subprocess.run(
        [
            str(CONVERT_PYTHON),
            "-c",
            f"import torch; torch.save({{'conv1.weight': torch.zeros(64, 3, 7, 7)}}, {str(wrong)!r})",
        ],
        check=True,
    )
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    for pth, message in [(wrong, "not torchvision's MobileNetV2 weights"), (tmp_path / "garbage.pth", "not a torch")]:
        npz = tmp_path / f"{pth.stem}.npz"
        result = subprocess.run(
            [str(CONVERT_PYTHON), str(CONVERT), "pth-to-npz", str(pth), str(npz)], capture_output=True, text=True
        )
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
        assert not npz.exists()


@needs_model
def test_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, str(CONVERT), "npz-to-paddle", str(NPZ), str(out)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "--force" in result.stderr
    assert (out / "keep.txt").read_text() == "mine"


@needs_model
@needs_data
def test_int8_budget_on_a_subset(tmp_path: Path) -> None:
    """The shipped minimal PTQ config on the 100 calib images, then 150 val images: INT8 within budget on every
    CPU engine. Its output goes to tmp_path instead of .cache/mobilenet_v2_ptq; nothing else changes."""
    shipped = yaml.safe_load((ROOT / "configs" / "mobilenet_v2_ptq.yaml").read_text(encoding="utf-8"))
    assert sorted(shipped) == ["Global"] and sorted(shipped["Global"]) == ["model_dir", "output_dir", "ptq_image_path"]
    shipped["Global"]["model_dir"] = str((ROOT / "configs" / shipped["Global"]["model_dir"]).resolve())
    assert shipped["Global"]["model_dir"] == str(MODEL_DIR)
    shipped["Global"].update(ptq_image_path=str(IMAGENET_SAMPLE / "calib"), output_dir=str(tmp_path / "int8"))
    config = tmp_path / "ptq.yaml"
    config.write_text(yaml.safe_dump(shipped), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["quantize", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "int8" / "quantize_report.json").read_text())["images_used"] == 100
    for backend in ("paddle", "ort", "openvino"):
        result = runner.invoke(
            app,
            ["eval", "--data", str(IMAGENET_SAMPLE / "val_list.txt"), "--model-dir", str(MODEL_DIR), "--compare",
             str(tmp_path / "int8"), "--backend", backend, "--limit", "150", "--threads", "2", "--json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        comparison = json.loads(result.output)["comparison"]
        # 150 images: 1 image = 0.67 pt. On the full 900 (docs/accuracy.md): Paddle -0.78, ONNX Runtime's
        # quantizer -0.56 (ort) and +0.11 (openvino). avg calibration: -7.1.
        assert comparison["top1_drop"] <= 2.0, (backend, comparison)
