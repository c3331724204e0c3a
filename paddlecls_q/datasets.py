"""Labelled image sets for `eval`: a PaddleClas/ImageNet val list or a folder of class sub-folders.

Also writes Fashion-MNIST (Debian's `dataset-fashion-mnist`) as a PaddleClas image folder, so that
every layout can be exercised on real, offline data.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Literal

from paddlecls_q.errors import ConfigError, InputError
from paddlecls_q.fsutil import AlreadyExistsError, checked_path, publish, remove_stale, staging_name
from paddlecls_q.preprocess.image_io import IMAGE_SUFFIXES

VAL_LIST = "val_list.txt"
TRAIN_LIST = "train_list.txt"
LABEL_LIST = "label_list.txt"
Layout = Literal["list", "tree"]


@dataclass
class Dataset:
    """Images with their integer labels, in evaluation order.

    `line_numbers[i]` is the list line item i came from (empty for folder trees), so that a later
    check (a label the model can't produce) can still name the file and line.
    """

    items: list[tuple[Path, int]]
    root: Path
    num_classes: int | None
    class_names: list[str] | None
    source: Path | None = None  # the list file, or the tree's folder; defaults to root
    layout: Layout = "list"
    line_numbers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.source is None:
            self.source = self.root

    def __len__(self) -> int:
        return len(self.items)

    def origin(self, index: int) -> str:
        """Where item `index` was declared: `list.txt:12` for lists, the image path for trees."""
        if self.line_numbers:
            return f"{self.source}:{self.line_numbers[index]}"
        return str(self.items[index][0])


def load_dataset(path: Path, limit: int | None = None) -> Dataset:
    """A val list file, a folder holding `val_list.txt`, or a folder of class sub-folders.

    Args:
        limit: evaluate only the first N images of a list; for a folder tree, N images taken
            round-robin over the classes so that every class is represented.
    """
    path = Path(path)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    if not path.exists():
        raise InputError(f"{path}: data set not found (give a val list file or a folder of class sub-folders)")
    if path.is_file():
        return _load_list(path, limit)
    if (path / VAL_LIST).is_file():
        return _load_list(path / VAL_LIST, limit)
    return _load_tree(path, limit)


def _relative_image_path(text: str, list_file: Path, number: int) -> PurePosixPath:
    """The list's path field, refused when it could reach outside the list's folder."""
    windows = PureWindowsPath(text)
    if text.startswith(("/", "\\")) or windows.drive or windows.is_absolute():
        raise InputError(
            f"{list_file}:{number}: absolute image path {text!r}; paths must be relative to the list's folder"
        )
    relative = PurePosixPath(text.replace("\\", "/"))
    if ".." in relative.parts:
        raise InputError(f"{list_file}:{number}: image path {text!r} escapes the list's folder")
    return relative


def _read_lines(list_file: Path) -> list[str]:
    try:
        text = list_file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = list_file.read_bytes()[: error.start].count(b"\n") + 1
        raise InputError(f"{list_file}:{line}: not UTF-8 text") from None
    except OSError as error:
        raise InputError(f"{list_file}: can't read the list ({error.strerror})") from None
    return text.splitlines()  # also splits CRLF and lone CR


def _load_list(list_file: Path, limit: int | None) -> Dataset:
    root = list_file.parent
    items: list[tuple[Path, int]] = []
    line_numbers: list[int] = []
    for number, line in enumerate(_read_lines(list_file), 1):
        if not line.strip():
            continue
        fields = line.strip().rsplit(None, 1)
        if len(fields) != 2:
            raise InputError(f"{list_file}:{number}: expected '<relative/image/path> <label>', got {line.strip()!r}")
        path_text, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            raise InputError(f"{list_file}:{number}: label {label_text!r} is not an integer") from None
        if label < 0:
            raise InputError(f"{list_file}:{number}: label {label} is negative")
        image = root / _relative_image_path(path_text, list_file, number)
        if not image.is_file():
            raise InputError(f"{list_file}:{number}: image {path_text!r} not found ({image})")
        items.append((image, label))
        line_numbers.append(number)
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise InputError(f"{list_file}: empty data set (no '<path> <label>' lines)")
    num_classes = max(label for _, label in items) + 1
    return Dataset(
        items=items,
        root=root,
        num_classes=num_classes,
        class_names=_class_names_beside(list_file, num_classes),
        source=list_file,
        layout="list",
        line_numbers=line_numbers,
    )


def _class_names_beside(list_file: Path, num_classes: int) -> list[str] | None:
    """Names from a PaddleClas `label_list.txt` (`<id> <name>`) next to the list, when it covers every label."""
    label_file = list_file.parent / LABEL_LIST
    if label_file == list_file or not label_file.is_file():
        return None
    names: dict[int, str] = {}
    for line in _read_lines(label_file):
        class_id, _, name = line.strip().partition(" ")
        if class_id.isdigit():
            names[int(class_id)] = name.strip()
    count = max(names, default=-1) + 1
    if count < num_classes or any(i not in names for i in range(count)):
        return None
    return [names[i] for i in range(count)]


def _load_tree(folder: Path, limit: int | None) -> Dataset:
    class_folders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_folders:
        raise InputError(
            f"{folder}: no class sub-folders and no {VAL_LIST}; "
            "give a val list or a folder with one sub-folder per class"
        )
    per_class = [
        sorted(
            p
            for p in class_folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        for class_folder in class_folders
    ]
    if limit is not None:
        per_class = _round_robin(per_class, limit)
    items = [(image, label) for label, images in enumerate(per_class) for image in images]
    if not items:
        raise InputError(f"{folder}: empty data set (no images in its {len(class_folders)} class sub-folders)")
    return Dataset(
        items=items,
        root=folder,
        num_classes=len(class_folders),
        class_names=[p.name for p in class_folders],
        source=folder,
        layout="tree",
    )


def _round_robin(per_class: list[list[Path]], limit: int) -> list[list[Path]]:
    """The first images of each class, one class at a time, until `limit` images are picked."""
    taken = [0] * len(per_class)
    remaining = limit
    while remaining > 0:
        progressed = False
        for label, images in enumerate(per_class):
            if remaining > 0 and taken[label] < len(images):
                taken[label] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            break
    return [images[:count] for images, count in zip(per_class, taken)]


# ---- Fashion-MNIST as a PaddleClas image folder -------------------------------------------------

FashionSplit = Literal["test", "train", "both"]
FASHION_SPLITS: tuple[Literal["train", "test"], ...] = ("train", "test")
_LIST_OF_SPLIT = {"train": TRAIN_LIST, "test": VAL_LIST}


@dataclass(frozen=True)
class WrittenDataset:
    """What `write_fashion_mnist` put where."""

    folder: Path
    images: dict[str, int]
    lists: list[Path]


def write_fashion_mnist(
    out: str | Path,
    split: FashionSplit = "test",
    limit: int | None = None,
    force: bool = False,
    idx_dir: Path | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> WrittenDataset:
    """Write Fashion-MNIST as PNGs under out/images/{train,test}/ with PaddleClas lists and label_list.txt.

    The folder is built beside `out` and renamed into place, so `out` is never left half-written.

    Args:
        idx_dir: where the IDX files are (default: Debian's /usr/share/datasets/fashion-mnist).
        on_progress: called with the number of images written since the last call.
    """
    import cv2

    from paddlecls_q import fashion_mnist

    out = checked_path(out, "--out")
    if split not in ("test", "train", "both"):
        raise ConfigError(f"unknown split {split!r}; choose from test, train, both")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    if out.exists() and not force:
        raise InputError(f"{out}: already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; refusing to replace it")
    splits = [name for name in FASHION_SPLITS if split in (name, "both")]
    loaded = {}
    for name in splits:  # read everything first: a missing package fails before anything is written
        images, labels = fashion_mnist.load_split(name, **({"root": idx_dir} if idx_dir is not None else {}))
        loaded[name] = (images[:limit], labels[:limit]) if limit is not None else (images, labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(out)
    staging = staging_name(out)
    staging.mkdir()
    try:
        counts: dict[str, int] = {}
        lists: list[Path] = []
        for name, (images, labels) in loaded.items():
            image_folder = staging / "images" / name
            image_folder.mkdir(parents=True)
            lines = []
            for index, (image, label) in enumerate(zip(images, labels)):
                relative = f"images/{name}/{index:05d}.png"
                # Uncompressed: a 28×28 PNG fills one 4 KB disk block either way, and decodes 35 % faster.
                if not cv2.imwrite(str(staging / relative), image, [cv2.IMWRITE_PNG_COMPRESSION, 0]):
                    raise InputError(f"{out.parent}: could not write {relative} (disk full or read-only?)")
                lines.append(f"{relative} {int(label)}\n")
                if on_progress is not None and index % 500 == 499:
                    on_progress(500)
            if on_progress is not None and len(lines) % 500:
                on_progress(len(lines) % 500)
            (staging / _LIST_OF_SPLIT[name]).write_text("".join(lines), encoding="utf-8")
            counts[name] = len(lines)
            lists.append(out / _LIST_OF_SPLIT[name])
        label_lines = "".join(f"{i} {name}\n" for i, name in enumerate(fashion_mnist.CLASS_NAMES))
        (staging / LABEL_LIST).write_text(label_lines, encoding="utf-8")
        publish(staging, out, force=force)  # checked again here: a folder that appeared meanwhile is kept
    except AlreadyExistsError:
        shutil.rmtree(staging, ignore_errors=True)
        raise InputError(f"{out}: appeared while the data was written; not replacing it without --force") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return WrittenDataset(folder=out, images=counts, lists=lists)
