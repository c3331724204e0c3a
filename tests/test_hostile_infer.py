"""Hostile `infer` input: special files, label files outside the model, markup in labels, huge resize sizes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error
from typer.testing import CliRunner

from paddlecls_q.cli import app

runner = CliRunner()
HOSTILE = "[link=http://evil]boot[/link] :x:"


def infer(*args: str):
    return runner.invoke(app, ["infer", *args])


@pytest.fixture()
def model_copy(demo_model_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(demo_model_dir, folder)
    return folder


def set_label_file(folder: Path, value: str) -> None:
    yaml_path = folder / "inference_cls.yaml"
    yaml_path.write_text(
        yaml_path.read_text().replace("class_id_map_file: label_list.txt", f"class_id_map_file: {value}")
    )


def test_dev_zero_and_a_fifo_as_image_are_refused_at_once(demo_model_dir: Path, tmp_path: Path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    for image in ("/dev/zero", str(fifo)):
        assert_one_line_error(infer("--model-dir", str(demo_model_dir), "--image", image), 2, "not a regular file")


def test_a_label_file_outside_the_model_is_not_read(model_copy: Path, fashion_image: Path):
    set_label_file(model_copy, "/etc/passwd")
    result = infer("--model-dir", str(model_copy), "--image", str(fashion_image))
    assert result.exit_code == 0, result.output
    assert "root:x:0" not in result.output and "/bin/" not in result.output
    assert "warning:" in result.output and "is not a file inside" in result.output


def test_a_missing_label_file_is_a_warning(model_copy: Path, fashion_image: Path):
    set_label_file(model_copy, "nowhere.txt")
    result = infer("--model-dir", str(model_copy), "--image", str(fashion_image))
    assert result.exit_code == 0, result.output
    assert "nowhere.txt" in result.output and "showing no labels" in result.output


def test_markup_in_labels_is_printed_verbatim(model_copy: Path, fashion_image: Path):
    labels = model_copy / "label_list.txt"
    labels.write_text("".join(f"{i} {HOSTILE}\n" for i in range(10)))
    result = runner.invoke(
        app, ["infer", "--model-dir", str(model_copy), "--image", str(fashion_image)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "[link=http://evil]boot[/link]" in result.output and "❌" not in result.output


@pytest.mark.parametrize(("content", "pattern"), [(b"1e26 cat\n", "line 1: expected"), (b"0 \xff\xfe\n", "not UTF-8")])
def test_a_bad_label_file_is_one_line_without_its_content(model_copy: Path, fashion_image: Path, content, pattern):
    (model_copy / "label_list.txt").write_bytes(content)
    result = infer("--model-dir", str(model_copy), "--image", str(fashion_image))
    assert_one_line_error(result, 2, pattern)
    assert "1e26" not in result.output


@pytest.mark.parametrize("size", ["30000", "1e9", "[32, 100000]"])
def test_a_huge_resize_size_is_refused_at_load_time(model_copy: Path, fashion_image: Path, size: str):
    yaml_path = model_copy / "inference_cls.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("size: 32", f"size: {size}"))
    assert_one_line_error(infer("--model-dir", str(model_copy), "--image", str(fashion_image)), 2, "size")


def test_a_truncated_jpeg_is_classified_with_a_warning(demo_model_dir: Path, photo: Path, tmp_path: Path):
    import subprocess
    import sys

    data = photo.read_bytes()
    assert data[:2] == b"\xff\xd8"
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "whole.jpg").write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    outputs = {}
    for name in ("cut.jpg", "whole.jpg"):  # a subprocess: pytest's own warning capture would hide the line
        command = [sys.executable, "-m", "paddlecls_q", "infer", "--model-dir", str(demo_model_dir)]
        run = subprocess.run([*command, "--image", str(tmp_path / name)], capture_output=True, text=True, env=env)
        assert run.returncode == 0, run.stderr
        outputs[name] = run.stderr
    assert (
        outputs["cut.jpg"].strip()
        == f"warning: {tmp_path / 'cut.jpg'}: truncated JPEG (no end marker); the missing part decodes as grey"
    )
    assert "warning" not in outputs["whole.jpg"]
