"""`list_images`, the one image-finding rule (paddlecls_q/quantize/images.py), and the Paddle version check."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from paddlecls_q.errors import InputError
from paddlecls_q.quantize import CHECKED_VERSIONS, list_images
from paddlecls_q.quantize.paddle_patches import version_mismatches


def make_tree(root: Path) -> None:
    (root / "b" / "deeper").mkdir(parents=True)
    for name in ("a.png", "b/c.JPG", "b/deeper/d.jpeg", ".hidden.png", "notes.txt"):
        (root / name).write_bytes(b"x")


def test_a_folder_gives_its_images_recursively_sorted_hidden_skipped(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert list_images(tmp_path) == [tmp_path / "a.png", tmp_path / "b" / "c.JPG", tmp_path / "b" / "deeper" / "d.jpeg"]


def test_a_single_file_only_where_the_command_takes_one(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(b"x")
    assert list_images(image, allow_file=True) == [image]
    with pytest.raises(InputError, match="not a folder"):
        list_images(image)


@pytest.mark.parametrize(
    ("setup", "allow_file", "expect"),
    [
        ("missing", False, "image folder not found"),
        ("missing", True, "image path not found"),
        ("empty", False, "image folder is empty"),
        ("texts", True, r"holds no images \(1 other files: notes.txt\)"),
    ],
)
def test_what_is_wrong_is_named(tmp_path: Path, setup: str, allow_file: bool, expect: str) -> None:
    folder = tmp_path / setup
    if setup != "missing":
        folder.mkdir()
    if setup == "texts":
        (folder / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match=expect):
        list_images(folder, allow_file=allow_file)


def test_version_check_names_each_package_that_differs() -> None:
    installed = {name: metadata.version(name) for name in CHECKED_VERSIONS}
    lines = version_mismatches()
    differing = [name for name, version in installed.items() if version != CHECKED_VERSIONS[name]]
    assert len(lines) == len(differing)
    for name, line in zip(differing, lines):
        assert line.startswith(f"{name} {installed[name]} is installed") and "paddle_patches.py" in line


def test_a_paddle_upgrade_is_named_with_the_file_to_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    from paddlecls_q.quantize import paddle_patches

    monkeypatch.setitem(paddle_patches.CHECKED_VERSIONS, "paddlepaddle", "0.0.1")
    (line,) = [line for line in version_mismatches() if line.startswith("paddlepaddle")]
    assert f"paddlepaddle {metadata.version('paddlepaddle')} is installed" in line and "checked against 0.0.1" in line
