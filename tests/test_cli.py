"""What every command shares: --version, an example in --help, tables that fit 80 columns, config defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from paddlecls_q import __version__
from paddlecls_q.cli import app
from paddlecls_q.cli.app import console
from paddlecls_q.fashion_mnist import DEFAULT_ROOT

runner = CliRunner()
COMMANDS = [["bench"], ["demo"], ["download"], ["eval"], ["infer"], ["models"], ["quantize"], ["data", "fashion-mnist"]]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"paddlecls-q {__version__}"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_help_shows_an_example(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert f"Example: paddlecls-q {' '.join(command)}" in result.output


@pytest.mark.parametrize("command", [*COMMANDS, ["serve"]], ids=" ".join)
def test_every_default_written_in_a_help_text_is_shown(command: list[str]) -> None:
    # rich reads an unescaped "[default: ...]" as markup and drops it: each must reach the screen.
    import typer.main

    click_command = typer.main.get_command(app)
    for name in command:
        click_command = click_command.commands[name]  # type: ignore[attr-defined]
    written = [re.search(r"default: ([^\]]+)\]", getattr(p, "help", None) or "") for p in click_command.params]
    output = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "400"}).output
    for match in filter(None, written):
        assert f"[default: {match.group(1)}]" in output, match.group(0)


def test_completion_is_offered() -> None:
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_models_fit_80_columns_and_json_keeps_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 80)  # restored afterwards (setting .width would stick)
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("hidden at 80 columns: tarballs") for line in lines)
    assert any(line.startswith("│ ResNet50_vd ") for line in lines)  # names are never folded
    everything = json.loads(runner.invoke(app, ["models", "--json"]).output)
    resnet = next(model for model in everything["models"] if model["name"] == "ResNet50_vd")
    assert resnet["fp32"]["url"].endswith(".tgz") and resnet["reference"][0]["end_to_end_ms"]


def test_models_at_160_columns_hide_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 160)  # restored afterwards (setting .width would stick)
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and "hidden at" not in result.output and "e2e FP32" in result.output


@pytest.mark.skipif(not (DEFAULT_ROOT / "train-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST not installed")
def test_calibration_images_unset_means_every_image(tmp_path: Path, demo_model_dir: Path) -> None:
    from paddlecls_q.config import load_quantize_config
    from paddlecls_q.datasets import write_fashion_mnist
    from paddlecls_q.quantize import plan_quantization

    data = write_fashion_mnist(tmp_path / "fashion", "train", limit=40).folder
    config = {
        "Global": {
            "model_dir": str(demo_model_dir),
            "ptq_image_path": str(data / "images" / "train"),
            "output_dir": str(tmp_path / "int8"),
        },
        "PTQ": {"calibration_method": "avg"},
    }
    path = tmp_path / "ptq.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    loaded = load_quantize_config(path)
    assert loaded.PTQ.calibration_images is None
    plan = plan_quantization(loaded)
    assert len(plan.images) == 40 and not plan.warnings
