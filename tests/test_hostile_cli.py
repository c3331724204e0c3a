"""Hostile CLI input: user text printed verbatim (no markup, no emoji), filesystem errors as one line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from paddlecls_q.cli import app
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
