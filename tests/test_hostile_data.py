"""Hostile use of `data fashion-mnist`: no-replace checked at publish time, SIGTERM cleans up, empty --out refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from paddlecls_q import fashion_mnist
from paddlecls_q.cli import app
from paddlecls_q.datasets import write_fashion_mnist
from paddlecls_q.errors import InputError

try:
    fashion_mnist.load_split("test")
except Exception as error:  # noqa: BLE001 - any reason the data is missing skips these tests
    pytest.skip(f"Fashion-MNIST not installed: {error}", allow_module_level=True)


def test_a_folder_that_appears_during_the_run_is_not_replaced(tmp_path: Path):
    out = tmp_path / "fashion"

    def someone_else_creates_it(_: int) -> None:
        if not out.exists():
            out.mkdir()
            (out / "theirs.txt").write_text("keep")

    with pytest.raises(InputError, match="appeared while the data was written; not replacing it without --force"):
        write_fashion_mnist(out, limit=600, on_progress=someone_else_creates_it)
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["fashion"]  # no staging left


@pytest.mark.parametrize("out", ["", "  "])
def test_empty_out_is_refused_in_one_line(out: str):
    result = CliRunner().invoke(app, ["data", "fashion-mnist", "--out", out, "--limit", "3"])
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --out: an empty path is not allowed (got {out!r})"


def test_sigterm_leaves_no_partial_folder_and_one_line(tmp_path: Path):
    out = tmp_path / "fashion"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "paddlecls_q", "data", "fashion-mnist", "--out", str(out), "--split", "train"]
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(1200):  # until PNGs are being written into the staging folder
            if any(p.name.startswith(".fashion.partial-") and any(p.rglob("*.png")) for p in tmp_path.iterdir()):
                break
            time.sleep(0.05)
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 143
    assert stderr.strip() == "terminated"
    assert list(tmp_path.iterdir()) == []


def test_an_output_under_proc_is_one_line():
    result = CliRunner().invoke(app, ["data", "fashion-mnist", "--out", "/proc/paddlecls-q-data", "--limit", "3"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("error: /proc/") and len(result.output.strip().splitlines()) == 1
    assert not Path("/proc/paddlecls-q-data").exists()
