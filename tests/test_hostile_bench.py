"""Hostile `bench` use: iteration counts bounded by the config table, an --output that is a folder, SIGTERM while
timing (a real child process: exit 143 with one line, no Paddle C++ FatalError, nothing at --output)."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_one_line_error
from typer.testing import CliRunner

from paddlecls_q.cli import app
from paddlecls_q.config import MAX_ITERATIONS

runner = CliRunner()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--iters", str(MAX_ITERATIONS + 1), f"key 'iters': Input should be less than or equal to {MAX_ITERATIONS}"),
        ("--iters", "1e23", "Invalid value for '--iters'"),
        ("--iters", "0", "key 'iters': Input should be greater than or equal to 1"),
        ("--warmup", str(MAX_ITERATIONS + 1), f"key 'warmup': Input should be less than or equal to {MAX_ITERATIONS}"),
        ("--warmup", "-1", "key 'warmup': Input should be greater than or equal to 0"),
        ("--block", "0", "key 'block': Input should be greater than or equal to 1"),
        ("--throughput-images", str(MAX_ITERATIONS + 1), "key 'throughput_images': Input should be less than or equal to"),
        ("--threads", "100000", "key 'threads': Input should be less than or equal to 256"),
    ],
)
def test_iteration_counts_are_bounded(demo_model_dir: Path, flag: str, value: str, message: str):
    # --modes int8 without --int8-dir: were a value let through, nothing could run (no hour-long run on a regression)
    result = runner.invoke(app, ["bench", "--model-dir", str(demo_model_dir), "--modes", "int8", flag, value])
    assert_one_line_error(result, 2, message)


def test_an_output_that_is_a_folder_is_one_line(demo_model_dir: Path, tmp_path: Path):
    (tmp_path / "out.md").mkdir()
    command = ["bench", "--model-dir", str(demo_model_dir), "--backends", "ort", "--modes", "fp32", "--iters", "2"]
    result = runner.invoke(app, [*command, "--warmup", "0", "--format", "markdown", "--output", str(tmp_path / "out.md")])
    assert_one_line_error(result, 2, f"{tmp_path / 'out.md'}: exists and is not a regular file")
    assert list((tmp_path / "out.md").iterdir()) == []


def _read_until(fd: int, pattern: re.Pattern[str], seconds: float) -> str:
    """What the child wrote to the terminal `fd` until `pattern` appears (or `seconds` pass)."""
    text, deadline = "", time.monotonic() + seconds
    while time.monotonic() < deadline and not pattern.search(text):
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                text += os.read(fd, 1 << 16).decode("utf-8", "replace")
            except OSError:  # the child closed its terminal
                break
    return text


@pytest.mark.parametrize("backends", ["ort", "paddle,ort"])
def test_sigterm_while_timing_exits_143_with_one_line(demo_model_dir: Path, tmp_path: Path, backends: str):
    output = tmp_path / "out" / "bench.md"
    command = [sys.executable, "-m", "paddlecls_q", "bench", "--model-dir", str(demo_model_dir), "--backends", backends]
    command += ["--modes", "fp32", "--iters", str(MAX_ITERATIONS), "--warmup", "1", "--format", "markdown"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "COLUMNS": "120"}
    terminal, child_end = pty.openpty()  # stderr a terminal: the progress bar shows when timing has begun
    child = subprocess.Popen(
        [*command, "--output", str(output)], env=env, stdout=subprocess.PIPE, stderr=child_end, text=True
    )
    os.close(child_end)
    try:
        seen = _read_until(terminal, re.compile(r"\b[1-9]\d*/\d+"), 240)  # "timing ━━━ 20/2000000"
        assert re.search(r"\b[1-9]\d*/\d+", seen), f"timing never started: {seen[-500:]!r}"
        child.send_signal(signal.SIGTERM)
        stdout, _ = child.communicate(timeout=120)
        rest = _read_until(terminal, re.compile(r"terminated"), 5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        os.close(terminal)
    assert child.returncode == 143, (stdout, rest)
    assert "FatalError" not in stdout + rest and "Traceback" not in stdout + rest
    assert [line.strip() for line in re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", rest).splitlines() if "terminated" in line] == [
        "terminated"
    ]
    assert not output.parent.exists() or list(output.parent.iterdir()) == []
