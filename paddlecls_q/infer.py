"""Classify images with a PaddleClas inference model on the engine the user picked."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paddlecls_q import registry
from paddlecls_q.config import InferenceClsConfig, RuntimeOptions, shorten
from paddlecls_q.errors import ConfigError, InputError
from paddlecls_q.fsutil import MAX_CONFIG_BYTES, read_bounded
from paddlecls_q.model_files import ModelFiles, find_model_files, load_inference_config
from paddlecls_q.postprocess import to_probabilities, top_k
from paddlecls_q.preprocess import build_preprocessor, read_image
from paddlecls_q.runtime import Runtime, create_runtime

@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image."""

    image: str
    class_ids: list[int]
    scores: list[float]
    labels: list[str]


def resolve_model_dir(model_dir: Path | None, model: str | None, quantized: bool = False) -> Path:
    """The model folder from `--model-dir`, or from `--model NAME` via the registry cache."""
    if model_dir is not None and model is None:
        return model_dir
    if model is None or model_dir is not None:
        raise ConfigError("give exactly one of --model-dir DIR or --model NAME")
    folder = registry.model_dir(model, quantized)
    if not folder.is_dir():
        flag = " --quantized" if quantized else ""
        raise ConfigError(f"model {model!r} is not downloaded yet ({folder}); run `paddlecls-q download {model}{flag}`")
    return folder


def read_label_file(path: Path) -> dict[int, str]:
    """PaddleClas label list: `<class id> <name>` per line."""
    labels: dict[int, str] = {}
    try:
        text = read_bounded(path, MAX_CONFIG_BYTES, "label file").decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: label file is not UTF-8 text") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        class_id, _, name = line.strip().partition(" ")
        if not (class_id.isascii() and class_id.isdigit() and len(class_id) <= 9):
            # The line itself is not echoed: the file may be anything the yaml pointed at.
            raise ConfigError(f"{path}: line {number}: expected '<class id> <name>' with a class id below 10^9")
        labels[int(class_id)] = name.strip()
    return labels


def find_label_file(
    config: InferenceClsConfig, folder: Path, label_file: Path | None, num_classes: int, warn: list[str] | None = None
) -> Path | None:
    """`--label-file`, else the yaml's class_id_map_file (inside the model folder), else ImageNet's for 1000 classes.

    A class_id_map_file that is missing or points outside the model folder adds a line to `warn`.
    """
    if label_file is not None:
        if not label_file.is_file():
            raise InputError(f"{label_file}: label file not found")
        return label_file
    if config.class_id_map_file:
        named = Path(config.class_id_map_file)
        inside = folder.resolve()
        for candidate in (folder / named, folder / named.name):
            resolved = candidate.resolve()
            if resolved.is_relative_to(inside) and resolved.is_file():
                return resolved
        if warn is not None:
            warn.append(
                f"{config.source}: PostProcess.Topk.class_id_map_file {shorten(config.class_id_map_file)} is not a "
                f"file inside {folder}; showing no labels (give --label-file)"
            )
    if num_classes == 1000:
        return registry.IMAGENET_LABEL_FILE
    return None


class Classifier:
    """A model folder loaded with its preprocessing, engine and labels."""

    def __init__(self, model_dir: Path, options: RuntimeOptions, label_file: Path | None = None) -> None:
        self.files: ModelFiles = find_model_files(model_dir)
        self.config = load_inference_config(self.files)
        self.preprocess = build_preprocessor(self.config)
        self.runtime: Runtime = create_runtime(self.files, options)
        self._label_file_option = label_file
        self._labels: dict[int, str] | None = None
        self.warnings: list[str] = []

    def labels_for(self, num_classes: int) -> dict[int, str]:
        if self._labels is None:
            path = find_label_file(self.config, self.files.folder, self._label_file_option, num_classes, self.warnings)
            self._labels = read_label_file(path) if path else {}
        return self._labels

    def predict(self, images: list[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, classes) for decoded RGB images."""
        return to_probabilities(self.runtime.infer(self.preprocess.batch(images)))

    def classify(self, paths: list[Path], topk: int, batch_size: int = 1) -> list[Prediction]:
        """Top-k of each image, `batch_size` images per engine call (FastDeploy's batch_predict)."""
        predictions = []
        self.engine_seconds = 0.0
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            images = [read_image(path) for path in chunk]
            began = time.perf_counter()
            batch_probabilities = self.predict(images)
            self.engine_seconds += time.perf_counter() - began
            for path, probabilities in zip(chunk, batch_probabilities):
                labels = self.labels_for(probabilities.shape[0])
                top = top_k(probabilities, topk)
                predictions.append(
                    Prediction(
                        image=str(path),
                        class_ids=top,
                        scores=[float(probabilities[i]) for i in top],
                        labels=[labels.get(int(i), "") for i in top],
                    )
                )
        return predictions
