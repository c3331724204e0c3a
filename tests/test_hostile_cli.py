"""Hostile CLI input: user text printed verbatim (no markup, no emoji), filesystem errors as one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_one_line_error
from typer.testing import CliRunner

from paddlecls_q.cli import app
from paddlecls_q.registry import DEMO_MODEL_DIR
from paddlecls_q.cli.app import command, err_console, os_error_text

HOSTILE = "[link=http://evil]boot[/link]:x:"


def test_a_hostile_file_name_is_printed_verbatim(tmp_path: Path):
    path = tmp_path / f"{HOSTILE}.yaml"
    result = CliRunner().invoke(app, ["quantize", "--config", str(path)])
    assert result.exit_code == 2
    assert str(path) in result.output and "❌" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_hostile_yaml_value_is_printed_verbatim(tmp_path: Path):
    path = tmp_path / "q.yaml"
    path.write_text(f"Global:\n  model_dir: m\n  seed: '{HOSTILE}'\n")
    result = CliRunner().invoke(app, ["quantize", "--config", str(path)])
    assert result.exit_code == 2
    assert HOSTILE in result.output and "Traceback" not in result.output


def test_the_console_never_parses_markup_or_emoji():
    with err_console.capture() as captured:
        err_console.print("pip install 'paddlecls-q[gpu]' :x: [bold]b[/]")
    assert captured.get().strip() == "pip install 'paddlecls-q[gpu]' :x: [bold]b[/]"


def test_filesystem_errors_become_one_line_exit_2(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")

    @command("hostile-mkdir", hidden=True)
    def make_folder() -> None:
        (blocker / "sub").mkdir()

    result = CliRunner().invoke(app, ["hostile-mkdir"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {blocker / 'sub'}: Not a directory"


def test_os_error_text_names_both_paths():
    assert os_error_text(OSError(28, "No space left on device", "/a", None, "/b")) == "/a: /b: No space left on device"


def _entry_point(*args: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "paddlecls_q", *args], capture_output=True, text=True, env=env)


def test_usage_errors_are_one_line_exit_2_at_the_entry_point():
    for args, pattern in (
        (["infer", "--topk", "0", "--image", "x", "--model-dir", "y"], "--topk"),
        (["frob"], "No such command 'frob'"),
        (["eval", "--data", "x", "--model-dir", "y", "--batch-size", "0"], "--batch-size"),
        (["download", "ResNet50_vd", "--bogus"], "No such option"),
    ):
        result = _entry_point(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and pattern in lines[0], result.stderr


def test_eval_batch_size_and_workers_are_bounded(tmp_path: Path):
    runner = CliRunner()
    base = ["eval", "--data", str(tmp_path), "--model-dir", str(tmp_path)]
    result = runner.invoke(app, [*base, "--batch-size", "100000000"])
    assert result.exit_code == 2 and "--batch-size must be at most 4096" in result.output
    result = runner.invoke(app, [*base, "--workers", "100000"])
    assert result.exit_code == 2 and "--workers must be at most" in result.output


def test_download_timeout_must_be_finite():
    result = CliRunner().invoke(app, ["download", "ResNet50_vd", "--timeout", "1e308"])
    assert result.exit_code == 2 and "must be a finite number of seconds" in result.output


def test_compare_of_models_with_different_class_counts_is_an_error():
    from paddlecls_q.errors import ConfigError
    from paddlecls_q.evaluate import EvalResult, compare

    def result(folder: str, classes: int) -> EvalResult:
        return EvalResult(folder, 90.0, 99.0, 1, [], [3], 1.0, {}, model_classes=classes)

    with pytest.raises(ConfigError, match="has 10 classes but b has 1000"):
        compare(result("a", 10), result("b", 1000), dataset=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("serve", "--batch-wait-ms", "nan"),
        ("serve", "--batch-wait-ms", "inf"),
        ("serve", "--max-request-mb", "inf"),
        ("serve", "--max-request-mb", "0"),
        ("serve", "--replicas", "100000"),
        ("serve", "--max-batch-size", "100000000"),
        ("serve", "--port", "0"),
        ("download", "--max-ratio", "inf"),
        ("download", "--max-ratio", "nan"),
    ],
)
def test_numeric_flags_are_finite_and_bounded(command: str, flag: str, value: str):
    target = ["--model-dir", str(DEMO_MODEL_DIR)] if command == "serve" else ["ResNet50_vd"]
    result = CliRunner().invoke(app, [command, *target, flag, value])
    assert_one_line_error(result, 2, f"Invalid value for '{flag}'")


def test_quantize_output_empty_with_force_keeps_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "mine.txt").write_text("keep")
    (tmp_path / "images").mkdir()
    config = tmp_path / "q.yaml"
    config.write_text(f"Global:\n  model_dir: {DEMO_MODEL_DIR}\n  image_path: images\n")
    monkeypatch.chdir(tmp_path)
    for output in ("", "  "):
        result = CliRunner().invoke(app, ["quantize", "--config", str(config), "--output", output, "--force"])
        assert result.exit_code == 2, result.output
        assert f"error: --output: an empty path is not allowed (got {output!r})" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "mine.txt", "q.yaml"]


def test_eval_data_that_is_a_device_or_a_fifo_is_refused_at_once(tmp_path: Path):
    import os

    fifo = tmp_path / "list.txt"
    os.mkfifo(fifo)
    for data in ("/dev/zero", str(fifo)):
        result = CliRunner().invoke(app, ["eval", "--model-dir", str(DEMO_MODEL_DIR), "--data", data])
        assert_one_line_error(result, 2, f"{data}: ")

