"""Fixtures and helpers shared by the tests of paddlecls_q.quantize (tests/test_quantize*.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from paddlecls_q import registry
from paddlecls_q.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the bundled Fashion-MNIST model (tests must never write next to the asset)."""
    target = tmp_path_factory.mktemp("model") / "demo_fashion_mnist"
    shutil.copytree(registry.DEMO_MODEL_DIR, target)
    return target


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 Fashion-MNIST train PNGs (used unlabeled) and 400 labeled test PNGs with val_list.txt."""
    from paddlecls_q.datasets import write_fashion_mnist

    return write_fashion_mnist(tmp_path_factory.mktemp("data") / "fashion_mnist", "both", limit=400).folder


def write_config(folder: Path, data: dict[str, Any], name: str = "quantize.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def ptq_config(model: Path, images: Path, output: Path, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "Global": {"model_dir": str(model), "ptq_image_path": str(images), "output_dir": str(output)},
        "PTQ": {"calibration_method": "hist", "hist_percent": 0.9999, "calibration_images": 64, "batch_size": 32},
    }
    for section, values in extra.items():
        config.setdefault(section, {}).update(values)
    return config


def partials(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f".{output.name}.partial-*"))


@pytest.fixture()
def bad_input(demo_model: Path, fashion: Path, tmp_path: Path) -> Any:
    """Run the CLI on a PTQ config changed by `edit`; check exit 2, one error line, nothing written."""

    def run(edit: Any = None, *extra: str, expect: str, data: dict[str, Any] | None = None) -> str:
        output = tmp_path / "out" / "int8"
        config = data or ptq_config(demo_model, fashion / "images" / "train", output)
        if edit is not None:
            edit(config)
        target = Path(config["Global"].get("output_dir", output))
        before = sorted(target.rglob("*")) if target.exists() else None
        result = runner.invoke(app, ["quantize", "--config", str(write_config(tmp_path, config)), *extra])
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expect in errors[0], result.output
        assert (sorted(target.rglob("*")) if target.exists() else None) == before
        assert partials(target) == []
        return errors[0]

    return run
