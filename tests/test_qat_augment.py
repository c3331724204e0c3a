"""QAT's augmented views (paddlecls_q/quantize/qat.py AugmentedViews) and its TrainConfig keys."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from quantize_support import write_config

from paddlecls_q import preprocess
from paddlecls_q.config import load_quantize_config
from paddlecls_q.model_files import find_model_files
from paddlecls_q.quantize.images import CalibrationImages
from paddlecls_q.quantize.plan import plan_quantization
from paddlecls_q.quantize.qat import AugmentedViews

# The shared fixtures (demo_model, fashion, bad_input) live in tests/quantize_support.py.
pytest_plugins = ["quantize_support"]


def _qat_config(model: Path, images: Path, output: Path, **train: Any) -> dict[str, Any]:
    return {
        "Global": {
            "model_dir": str(model),
            "qat_image_path": str(images),
            "qat_batch_size": 4,
            "output_dir": str(output),
        },
        "TrainConfig": {"train_iter": 2, **train},
    }


@pytest.fixture()
def calib_and_val(fashion: Path, tmp_path: Path) -> Path:
    """A dataset laid out like imagenet-sample: calib/ for training, val/ beside it for accuracy only."""
    train = sorted((fashion / "images" / "train").iterdir())[:8]
    test = sorted((fashion / "images" / "test").iterdir())[:8]
    for folder, files in (("calib", train), ("val", test)):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for file in files:
            shutil.copy(file, tmp_path / "data" / folder / file.name)
    return tmp_path / "data"


def _views(demo_model: Path, data: Path, tmp_path: Path, seed: int = 0) -> tuple[AugmentedViews, CalibrationImages]:
    config = load_quantize_config(write_config(tmp_path, _qat_config(demo_model, data / "calib", tmp_path / "out")))
    plan = plan_quantization(config)
    images = CalibrationImages(plan.images, plan.files.folder, config.Global.qat_preprocess)
    return AugmentedViews(images, config.TrainConfig.crop_scale, seed), images


def test_views_are_deterministic_and_new_crops_of_the_training_images(
    demo_model: Path, calib_and_val: Path, tmp_path: Path
) -> None:
    first, images = _views(demo_model, calib_and_val, tmp_path)
    again, _ = _views(demo_model, calib_and_val, tmp_path)
    other, _ = _views(demo_model, calib_and_val, tmp_path, seed=1)
    indices = list(range(len(images.paths)))
    batch = first.batch(indices)
    assert batch.shape == images.batch(indices).shape and batch.dtype == np.float32
    assert np.array_equal(batch, again.batch(indices))  # the same seed: the same views, run after run
    assert not np.array_equal(batch, other.batch(indices))
    assert not np.array_equal(batch, images.batch(indices))  # crops and flips, not the eval preprocessing
    assert not np.array_equal(batch, first.batch(indices))  # every pass draws new views


def test_views_never_read_the_val_folder(
    demo_model: Path, calib_and_val: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    views, images = _views(demo_model, calib_and_val, tmp_path)
    opened: list[Path] = []
    real_read = preprocess.read_image

    def recording_read(path: Any, grey: bool = False) -> np.ndarray:
        opened.append(Path(path))
        return real_read(path, grey)

    monkeypatch.setattr(preprocess, "read_image", recording_read)
    for _ in range(3):
        views.batch(list(range(len(images.paths))))
    assert len(opened) == 3 * 8
    assert {path.parent for path in opened} == {calib_and_val / "calib"}


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ([0.0, 1.0], "0 < low <= high <= 1"),
        ([0.8, 0.4], "0 < low <= high <= 1"),
        ([0.5, 1.5], "<= 1"),
        ("big", "crop_scale"),
    ],
)
def test_bad_crop_scale_is_one_line_exit_2(
    bad_input: Any, demo_model: Path, fashion: Path, tmp_path: Path, value: Any, expect: str
) -> None:
    data = _qat_config(demo_model, fashion / "images" / "train", tmp_path / "out" / "int8", crop_scale=value)
    line = bad_input(data=data, expect=expect)
    assert "TrainConfig.crop_scale" in line


def test_augment_must_be_a_boolean(bad_input: Any, demo_model: Path, fashion: Path, tmp_path: Path) -> None:
    data = _qat_config(demo_model, fashion / "images" / "train", tmp_path / "out" / "int8", augment="sometimes")
    bad_input(data=data, expect="TrainConfig.augment")


@pytest.mark.slow
def test_qat_trains_on_augmented_views(demo_model: Path, calib_and_val: Path, tmp_path: Path) -> None:
    from paddlecls_q.quantize import quantize

    data = _qat_config(demo_model, calib_and_val / "calib", tmp_path / "qat", augment=True, crop_scale=[0.5, 1.0])
    report = quantize(load_quantize_config(write_config(tmp_path, data)))
    assert report.method == "qat" and report.train_iterations == 2 and report.images_used == 8
    assert report.final_distillation_loss is not None and np.isfinite(report.final_distillation_loss)
    assert report.config["TrainConfig"]["augment"] is True
    assert find_model_files(tmp_path / "qat").is_quantized
