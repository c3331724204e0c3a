"""Labelled data sets: val lists, class-folder trees, and Fashion-MNIST written by `data fashion-mnist`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from paddlecls_q import fashion_mnist
from paddlecls_q.cli import app
from paddlecls_q.datasets import load_dataset, write_fashion_mnist
from paddlecls_q.errors import ConfigError, InputError

runner = CliRunner()


@pytest.fixture(scope="session")
def fashion_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 200 real Fashion-MNIST test images, written by the CLI."""
    out = tmp_path_factory.mktemp("data") / "fashion"
    result = runner.invoke(app, ["data", "fashion-mnist", "--out", str(out), "--limit", "200", "--json"])
    assert result.exit_code == 0, result.output
    return out


def make_tree(source: Path, target: Path, per_class: int | None = None) -> Path:
    """A class-folder tree (`c0`..`c9`, so sorted names = Fashion-MNIST ids) from a val list's images."""
    for line in (source / "val_list.txt").read_text().splitlines():
        relative, label = line.split()
        folder = target / f"c{label}"
        folder.mkdir(parents=True, exist_ok=True)
        if per_class is None or len(list(folder.iterdir())) < per_class:
            shutil.copy(source / relative, folder / Path(relative).name)
    return target


def write_list(folder: Path, text: str | bytes, name: str = "val_list.txt") -> Path:
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# ---- data fashion-mnist --------------------------------------------------------------------------


def test_data_command_writes_a_paddleclas_folder_of_the_real_images(fashion_folder):
    images, labels = fashion_mnist.load_split("test")
    lines = (fashion_folder / "val_list.txt").read_text().splitlines()
    assert len(lines) == 200
    assert lines[0] == f"images/test/00000.png {labels[0]}"
    for index in (0, 57, 199):
        relative, label = lines[index].split()
        written = cv2.imread(str(fashion_folder / relative), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(written, images[index])  # PNG is lossless
        assert int(label) == labels[index]
    label_list = (fashion_folder / "label_list.txt").read_text().splitlines()
    assert label_list[0] == "0 T-shirt/top" and label_list[9] == "9 Ankle boot"
    assert not (fashion_folder / "train_list.txt").exists()
    assert not [p for p in fashion_folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_data_command_refuses_an_existing_folder_without_force(tmp_path):
    out = tmp_path / "fm"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["data", "fashion-mnist", "--out", str(out), "--limit", "3"])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert (out / "keep.txt").read_text() == "mine"
    result = runner.invoke(app, ["data", "fashion-mnist", "--out", str(out), "--limit", "3", "--force", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == {"test": 3}
    assert not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fm"]


def test_data_command_writes_both_splits(tmp_path):
    written = write_fashion_mnist(tmp_path / "fm", "both", limit=5)
    assert written.images == {"train": 5, "test": 5}
    assert (tmp_path / "fm" / "train_list.txt").read_text().splitlines()[4].startswith("images/train/00004.png ")
    assert len(load_dataset(tmp_path / "fm" / "train_list.txt")) == 5


def test_data_command_says_which_apt_package_is_missing(tmp_path):
    result = runner.invoke(app, ["data", "fashion-mnist", "--out", str(tmp_path / "fm"), "--idx-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "apt-get install dataset-fashion-mnist" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "fm").exists()


def test_data_command_rejects_an_unknown_split(tmp_path):
    result = runner.invoke(app, ["data", "fashion-mnist", "--out", str(tmp_path / "fm"), "--split", "val"])
    assert result.exit_code == 2
    assert "unknown split 'val'" in result.output


# ---- the two layouts -----------------------------------------------------------------------------


def test_val_list_layout(fashion_folder):
    dataset = load_dataset(fashion_folder / "val_list.txt")
    assert dataset.layout == "list" and len(dataset) == 200
    assert dataset.items[0] == (fashion_folder / "images/test/00000.png", 9)
    assert dataset.num_classes == 10
    assert dataset.class_names[0] == "T-shirt/top"
    assert dataset.origin(3) == f"{fashion_folder / 'val_list.txt'}:4"
    # A folder holding val_list.txt is read through its list.
    assert load_dataset(fashion_folder).items == dataset.items
    assert [item for item in load_dataset(fashion_folder, limit=7).items] == dataset.items[:7]


def test_class_folder_layout(fashion_folder, tmp_path):
    tree = make_tree(fashion_folder, tmp_path / "tree")
    dataset = load_dataset(tree)
    listed = load_dataset(fashion_folder)
    assert dataset.layout == "tree" and len(dataset) == 200
    assert dataset.num_classes == 10 and dataset.class_names == [f"c{i}" for i in range(10)]
    assert sorted((p.name, label) for p, label in dataset.items) == sorted((p.name, label) for p, label in listed.items)
    limited = load_dataset(tree, limit=25)  # round-robin: every class is represented
    assert len(limited) == 25
    assert {label for _, label in limited.items} == set(range(10))


def test_class_folder_ids_follow_sorted_folder_names(tmp_path, fashion_folder):
    image = fashion_folder / "images/test/00000.png"
    for name in ("zebra", "apple", "Mango"):
        (tmp_path / name).mkdir()
        shutil.copy(image, tmp_path / name / "a.png")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "notes.txt").write_text("not an image")
    dataset = load_dataset(tmp_path)
    assert dataset.class_names == ["Mango", "apple", "zebra"]
    assert [(p.parent.name, label) for p, label in dataset.items] == [("Mango", 0), ("apple", 1), ("zebra", 2)]


# ---- bad lists -----------------------------------------------------------------------------------


def test_blank_lines_are_skipped_and_crlf_is_accepted(fashion_folder):
    text = "\r\nimages/test/00000.png 9\r\n   \r\n\r\nimages/test/00001.png 2\r\n"
    dataset = load_dataset(write_list(fashion_folder, text, "crlf_list.txt"))
    assert [label for _, label in dataset.items] == [9, 2]
    assert dataset.line_numbers == [2, 5]
    bom = load_dataset(write_list(fashion_folder, b"\xef\xbb\xbfimages/test/00000.png 9\n", "bom_list.txt"))
    assert len(bom) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("images/test/00000.png 9\nimages/test/missing.png 1\n", ":2: image 'images/test/missing.png' not found"),
        ("images/test/00000.png nine\n", ":1: label 'nine' is not an integer"),
        ("images/test/00000.png 1.5\n", ":1: label '1.5' is not an integer"),
        ("\nimages/test/00000.png -1\n", ":2: label -1 is negative"),
        ("images/test/00000.png\n", ":1: expected '<relative/image/path> <label>'"),
        ("../fashion/images/test/00000.png 9\n", ":1: image path '../fashion/images/test/00000.png' escapes"),
        ("images/../../x.png 9\n", ":1: image path 'images/../../x.png' escapes"),
        ("/etc/passwd 1\n", ":1: absolute image path '/etc/passwd'"),
        ("C:\\data\\x.png 1\n", ":1: absolute image path"),
        ("\n  \n\r\n", ": empty data set"),
        ("", ": empty data set"),
        (b"images/test/00000.png 9\n\xff\xfe 1\n", ":2: not UTF-8 text"),
    ],
)
def test_bad_list_lines_name_file_line_and_value(fashion_folder, text, message):
    path = write_list(fashion_folder, text, "bad_list.txt")
    with pytest.raises(InputError) as error:
        load_dataset(path)
    assert str(error.value).startswith(str(path))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_folders(tmp_path):
    with pytest.raises(InputError, match="data set not found"):
        load_dataset(tmp_path / "nothing")
    with pytest.raises(InputError, match="no class sub-folders"):
        load_dataset(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="empty data set"):
        load_dataset(tmp_path)
    with pytest.raises(ConfigError, match="--limit"):
        load_dataset(tmp_path, limit=0)
