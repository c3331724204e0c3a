"""fsutil: the no-replace publish, the stale-folder rule, the bounded reader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from paddlecls_q import fsutil
from paddlecls_q.errors import InputError


def test_publish_refuses_an_existing_target_and_leaves_both_untouched(tmp_path: Path):
    staging, target = tmp_path / "new", tmp_path / "out"
    staging.mkdir()
    (staging / "a").write_text("new")
    target.mkdir()
    (target / "mine").write_text("mine")
    with pytest.raises(fsutil.AlreadyExistsError):
        fsutil.publish(staging, target)
    assert (target / "mine").read_text() == "mine" and (staging / "a").read_text() == "new"
    fsutil.publish(staging, target, force=True)
    assert [p.name for p in target.iterdir()] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old folder is gone, no staging left


def test_publish_refuses_even_an_empty_folder_or_a_file(tmp_path: Path):
    for existing in ("empty", "file"):
        staging = tmp_path / f"new-{existing}"
        staging.write_text("x")
        target = tmp_path / existing
        target.mkdir() if existing == "empty" else target.write_text("keep")
        with pytest.raises(fsutil.AlreadyExistsError):
            fsutil.publish(staging, target)
    assert (tmp_path / "file").read_text() == "keep"


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_the_fallback_without_renameat2_also_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str):
    monkeypatch.setattr(fsutil, "_renameat2", None)  # a libc without renameat2
    staging, target = tmp_path / "new", tmp_path / "out"
    staging.mkdir() if kind == "folder" else staging.write_text("new")
    target.mkdir()
    (target / "mine").write_text("mine")
    with pytest.raises(fsutil.AlreadyExistsError):
        fsutil.publish(staging, target)
    assert (target / "mine").read_text() == "mine"
    fsutil.publish(staging, tmp_path / "fresh")
    assert (tmp_path / "fresh").exists() and not staging.exists()


def test_remove_stale_keeps_a_live_process_folder(tmp_path: Path):
    target = tmp_path / "out"
    live = fsutil.staging_name(target)  # this process: alive
    live.mkdir()
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f".out.partial-{dead_pid.stdout.strip()}-abcd"
    dead.mkdir()
    fsutil.remove_stale(target)
    assert live.exists() and not dead.exists()


def test_write_new_file_never_overwrites_without_force(tmp_path: Path):
    path = tmp_path / "report.md"
    fsutil.write_new_file(path, b"one")
    with pytest.raises(InputError, match="already exists; pass --force"):
        fsutil.write_new_file(path, b"two")
    assert path.read_bytes() == b"one"
    fsutil.write_new_file(path, b"two", force=True)
    assert path.read_bytes() == b"two" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_read_bounded_refuses_a_folder(tmp_path: Path):
    with pytest.raises(InputError, match="is a folder"):
        fsutil.read_bounded(tmp_path)


def test_sha256_file(tmp_path: Path):
    (tmp_path / "x").write_bytes(b"abc")
    assert fsutil.sha256_file(tmp_path / "x") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
