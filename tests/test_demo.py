"""`paddlecls-q demo` / `make demo`: the main job on the bundled model, from a fresh clone, offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpers import assert_one_line_error
from paddlecls_q.cli import app
from paddlecls_q.demo import REPO_CONFIG
from paddlecls_q.fashion_mnist import DEFAULT_ROOT

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()
needs_fashion_mnist = pytest.mark.skipif(
    not (DEFAULT_ROOT / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not found in {DEFAULT_ROOT} (apt-get install dataset-fashion-mnist)",
)


def _config_in(tmp_path: Path, **global_keys: str) -> Path:
    """The repository's demo config with its data and output folders moved under tmp_path."""
    config = yaml.safe_load(REPO_CONFIG.read_text(encoding="utf-8"))
    config["Global"]["model_dir"] = str(REPO / "paddlecls_q" / "assets" / "demo_fashion_mnist")
    config["Global"]["ptq_image_path"] = str(tmp_path / "data" / "images" / "train")
    config["Global"]["output_dir"] = str(tmp_path / "int8")
    config["accuracy"]["eval_list"] = str(tmp_path / "data" / "val_list.txt")
    config["Global"].update(global_keys)
    path = tmp_path / "demo_ptq.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_demo_keeps_a_folder_it_did_not_write(tmp_path: Path) -> None:
    user_data = tmp_path / "data"
    user_data.mkdir()
    (user_data / "notes.txt").write_text("mine", encoding="utf-8")
    result = runner.invoke(app, ["demo", "--config", str(_config_in(tmp_path))])
    assert_one_line_error(result, 2, "is not the demo's Fashion-MNIST folder; pass --force")
    assert (user_data / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert sorted(p.name for p in user_data.iterdir()) == ["notes.txt"]


def test_demo_help_shows_an_example() -> None:
    result = runner.invoke(app, ["demo", "--help"])
    assert result.exit_code == 0 and "Example: paddlecls-q demo" in result.output


@pytest.mark.slow
@needs_fashion_mnist
def test_make_demo_in_a_fresh_clone(tmp_path: Path) -> None:
    """`git clone` HEAD, then the Makefile's demo recipe there (this venv stands in for the install)."""
    if shutil.which("git") is None or shutil.which("make") is None or not (REPO / ".git").exists():
        pytest.skip("a git checkout, git and make are needed to test the fresh-clone path")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than the clone's pyproject.toml: make skips the pip install, the rest of the recipe runs
    venv = Path(sys.executable).parent.parent
    env = {**os.environ, "PYTHONPATH": str(clone), "COLUMNS": "80"}
    command = ["make", "--no-print-directory", "demo", f"VENV={venv}", f"STAMP={stamp}"]
    run = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert str(clone / "out" / "data" / "fashion_mnist") in run.stderr  # the clone's code and folders were used
    assert "top-1 on the 10,000 test images" in run.stdout
    for engine in ("paddle", "ort", "openvino"):
        row = next(line for line in run.stdout.splitlines() if re.match(rf"│ {engine}\s", line))
        fp32, int8 = map(float, re.findall(r"(\d+\.\d+) / (\d+\.\d+) │$", row)[0])
        assert fp32 > 80 and int8 > 80 and abs(fp32 - int8) < 1, row  # the model classifies, INT8 kept it
    assert "Ankle boot" in run.stdout.splitlines()[-1]  # the infer line: test image 0 is an ankle boot
    assert all(len(line) <= 80 for line in run.stdout.splitlines())

    again = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reusing") == 2 and "quantizing" not in again.stderr
