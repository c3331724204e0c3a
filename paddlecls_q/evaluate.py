"""Top-1 / top-k accuracy of a model on a labelled data set, on the engine that will serve it.

Decoding and preprocessing run in a small thread pool (cv2 and numpy release the GIL) a few
batches ahead of the engine, so the engine waits for images only where decoding an image costs
more CPU than running it through the model. Paddle Inference keeps the GIL while it runs, so for it
the decoders are forked processes writing into shared memory. Models with the same preprocessing
(FP32 and INT8) share one decoding pass.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.datasets import Dataset
from paddlecls_q.decoding import BatchLoader, ProcessBatches, single_threaded_opencv, thread_batches
from paddlecls_q.errors import ConfigError, InputError
from paddlecls_q.infer import Classifier
from paddlecls_q.postprocess import in_top_k
from paddlecls_q.preprocess import read_image

# paddle-trt's engine is built with max_batch_size=1; trt's optimization profile stops at 32.
MAX_BATCH_OF_BACKEND = {"paddle-trt": 1, "trt": 32}
SCORES_CHUNK_BYTES = 2 << 20
# Decoding holds the GIL for part of each image (every os and cv2 call is a hand-off): more threads rarely help.
MAX_DEFAULT_WORKERS = 4
# Paddle Inference keeps the GIL while its predictor runs, so for it decoding runs in forked processes
# (on data sets big enough to pay for starting them).
GIL_HOLDING_BACKENDS = ("paddle", "paddle-trt")
PROCESS_MIN_IMAGES = 2000


@dataclass
class EvalResult:
    """Accuracy and speed of one model on one data set.

    `top5` is the top-k accuracy for k = `topk` (5 unless asked otherwise); both accuracies are
    percentages of the `count` images that could be read. `predictions[i]` is the top-1 class of
    data-set item i, or -1 where the image could not be read.
    """

    model_dir: str
    top1: float
    top5: float
    count: int
    unreadable: list[str]
    predictions: list[int]
    images_per_s: float
    engine: dict[str, Any]
    topk: int = 5
    correct_top1: int = 0
    correct_topk: int = 0
    seconds: float = 0.0
    model_classes: int = 0

    def to_dict(self, with_predictions: bool = False) -> dict[str, Any]:
        record = asdict(self)
        if not with_predictions:
            record.pop("predictions")
        return record


@dataclass(frozen=True)
class ChangedImage:
    """An image whose top-1 class differs between the two models."""

    image: str
    label: int
    reference: int
    candidate: int


@dataclass
class Comparison:
    """What the candidate (INT8) model lost against the reference (FP32) one, in accuracy points."""

    top1_drop: float
    top5_drop: float
    changed: list[ChangedImage] = field(default_factory=list)
    now_wrong: int = 0
    now_right: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed_count": len(self.changed)}


def default_workers(threads: int, cores: int | None = None) -> int:
    """Decoding threads that fit beside an engine using `threads` cores without oversubscribing them."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if threads >= cores - 1:
        return 1
    return max(1, min(cores - threads, MAX_DEFAULT_WORKERS))


def engine_batch_size(input_shape: tuple[int, ...], requested: int, backend: str) -> int:
    """The requested batch where the model's batch dimension is free (-1), else the model's fixed batch."""
    if requested < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {requested}")
    declared = input_shape[0] if input_shape else -1
    if declared is not None and declared > 0:
        return int(declared)
    return min(requested, MAX_BATCH_OF_BACKEND.get(backend, requested))


def _first_readable_tensor(classifier: Classifier, dataset: Dataset, strict: bool) -> np.ndarray:
    first_error = None
    for image, _ in dataset.items:
        try:
            return classifier.preprocess(read_image(image))
        except InputError as error:
            if strict:
                raise InputError(f"{error} (--strict)") from None
            first_error = first_error or error
    raise InputError(f"{dataset.source}: none of its {len(dataset)} images could be read (first: {first_error})")


def _check_labels(dataset: Dataset, model_classes: int) -> None:
    """Every label must be a class the model can predict."""
    if dataset.layout == "tree" and (dataset.num_classes or 0) > model_classes:
        raise InputError(
            f"{dataset.source}: {dataset.num_classes} class sub-folders but the model has {model_classes} classes"
        )
    for index, (_, label) in enumerate(dataset.items):
        if label >= model_classes:
            raise InputError(
                f"{dataset.origin(index)}: label {label} is out of range: the model has {model_classes} classes "
                f"(0..{model_classes - 1})"
            )


def _progress_bar(total: int, description: str) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Any:
            from rich.text import Text

            return Text(f"{task.speed:,.0f} img/s" if task.speed else "", style="progress.data.speed")

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    return progress, progress.add_task(description, total=total)


class _Tally:
    """One model's engine and running counts during an evaluation pass.

    Scores wait in a chunk of SCORES_CHUNK_BYTES and are counted a chunk at a time: per batch the
    engine's loop does one copy instead of a dozen numpy calls (each a few µs after an engine call).
    """

    def __init__(
        self,
        classifier: Classifier,
        batch: int,
        first_tensor: np.ndarray,
        dataset: Dataset,
        labels: np.ndarray,
        topk: int,
    ) -> None:
        self.classifier, self.runtime, self.batch, self.labels = classifier, classifier.runtime, batch, labels
        outputs = self.runtime.infer(np.repeat(first_tensor[None], batch, axis=0))  # warm-up, and the class count
        self.model_classes = int(outputs.reshape(batch, -1).shape[1])
        _check_labels(dataset, self.model_classes)
        self.k = min(topk, self.model_classes)
        self.predictions = np.full(len(dataset), -1, dtype=np.int64)
        self.in_topk = np.zeros(len(dataset), dtype=bool)
        chunk = max(batch, SCORES_CHUNK_BYTES // (4 * self.model_classes))
        self.scores = np.empty((chunk, self.model_classes), np.float32)
        self.rows = np.empty(chunk, np.int64)
        self.filled = 0

    def add(self, tensor: np.ndarray, indices: list[int]) -> None:
        """Run one batch; `indices` are the data-set items of its first len(indices) rows."""
        count = len(indices)
        if self.filled + count > len(self.scores):
            self.count_chunk()
        end = self.filled + count
        self.scores[self.filled : end] = self.runtime.infer(tensor).reshape(self.batch, -1)[:count]
        self.rows[self.filled : end] = indices
        self.filled = end

    def count_chunk(self) -> None:
        """Top-1 and top-k of the scores waiting in the chunk."""
        scores, rows = self.scores[: self.filled], self.rows[: self.filled]
        self.predictions[rows] = scores.argmax(axis=1)
        self.in_topk[rows] = in_top_k(scores, self.labels[rows], self.k)
        self.filled = 0

    def result(
        self, dataset: Dataset, unreadable: list[str], seconds: float, extra: dict[str, Any]
    ) -> EvalResult:
        labels = self.labels
        readable = self.predictions >= 0
        count = int(readable.sum())
        if count == 0:
            raise InputError(f"{dataset.source}: none of its {len(dataset)} images could be read")
        correct_top1 = int((self.predictions[readable] == labels[readable]).sum())
        correct_topk = int(self.in_topk[readable].sum())
        return EvalResult(
            model_dir=str(self.classifier.files.folder),
            top1=100.0 * correct_top1 / count,
            top5=100.0 * correct_topk / count,
            count=count,
            unreadable=list(unreadable),
            predictions=[int(p) for p in self.predictions],
            images_per_s=count / seconds if seconds > 0 else 0.0,
            engine={**self.runtime.engine_info(), "batch_size": self.batch, **extra},
            topk=self.k,
            correct_top1=correct_top1,
            correct_topk=correct_topk,
            seconds=seconds,
            model_classes=self.model_classes,
        )


def evaluate_classifiers(
    classifiers: list[Classifier],
    dataset: Dataset,
    batch_size: int = 1,
    topk: int = 5,
    strict: bool = False,
    progress: bool = False,
    workers: int | None = None,
) -> list[EvalResult]:
    """Evaluate loaded models on `dataset`; models with the same preprocessing and batch share one decoding pass.

    In a shared pass every image is decoded once and fed to each engine in turn (FP32 vs INT8 costs one
    decode, not two), and each result's images/s is the pass's: images evaluated on all its models per second.
    """
    if len(dataset) == 0:
        raise InputError(f"{dataset.source}: empty data set")
    batches = [engine_batch_size(c.runtime.input_shape, batch_size, c.runtime.options.backend) for c in classifiers]
    first = classifiers[0].preprocess.transform_ops
    if len(set(batches)) == 1 and all(c.preprocess.transform_ops == first for c in classifiers):
        return _evaluate_pass(classifiers, batches[0], dataset, topk, strict, progress, workers)
    return [
        _evaluate_pass([classifier], batch, dataset, topk, strict, progress, workers)[0]
        for classifier, batch in zip(classifiers, batches)
    ]


def _evaluate_pass(
    classifiers: list[Classifier],
    batch: int,
    dataset: Dataset,
    topk: int,
    strict: bool,
    progress: bool,
    workers: int | None,
) -> list[EvalResult]:
    """One decoding pass over `dataset`, each batch run through every model's engine."""
    leader = classifiers[0]
    workers = workers or default_workers(max(c.runtime.options.threads for c in classifiers))
    first_tensor = _first_readable_tensor(leader, dataset, strict)
    labels = np.array([label for _, label in dataset.items], dtype=np.int64)
    unreadable: list[str] = []
    load = BatchLoader(leader.preprocess, dataset.items, batch, strict)
    name = " + ".join(Path(classifier.files.folder).name for classifier in classifiers)
    bar, task = _progress_bar(len(dataset), name) if progress else (None, None)
    in_processes = bool(
        any(c.runtime.options.backend in GIL_HOLDING_BACKENDS for c in classifiers)
        and load.output_shape
        and len(dataset) >= PROCESS_MIN_IMAGES
    )
    # Decoding processes start up while the engines warm up.
    decoders = ProcessBatches(load, len(dataset), workers) if in_processes else None
    batches = decoders.__iter__() if decoders else thread_batches(load, len(dataset), workers)
    with single_threaded_opencv():
        try:
            tallies = [_Tally(classifier, batch, first_tensor, dataset, labels, topk) for classifier in classifiers]
            began = time.perf_counter()
            if bar is not None:
                bar.start()
            for item in batches:
                unreadable.extend(item.failures)
                if item.tensor is not None:
                    for tally in tallies:
                        tally.add(item.tensor, item.indices)
                if bar is not None:
                    bar.advance(task, len(item.indices) + len(item.failures))
            for tally in tallies:
                tally.count_chunk()
            seconds = time.perf_counter() - began
        finally:
            batches.close()
            if decoders is not None:
                decoders.close()
            if bar is not None:
                bar.stop()
    extra = {
        "decode_workers": workers,
        "decode_in": "processes" if in_processes else "threads",
        "models_per_decode": len(classifiers),
    }
    return [tally.result(dataset, unreadable, seconds, extra) for tally in tallies]


def evaluate_classifier(classifier: Classifier, dataset: Dataset, *args: Any, **kwargs: Any) -> EvalResult:
    """`evaluate_classifiers` for one already loaded Classifier (the same further arguments)."""
    return evaluate_classifiers([classifier], dataset, *args, **kwargs)[0]


def evaluate_model(model_dir: Path, dataset: Dataset, options: RuntimeOptions, *args: Any, **kwargs: Any) -> EvalResult:
    """`evaluate_models` for the one model in `model_dir` (the same further arguments)."""
    return evaluate_models([model_dir], dataset, options, *args, **kwargs)[0]


def evaluate_models(
    model_dirs: list[Path],
    dataset: Dataset,
    options: RuntimeOptions,
    batch_size: int = 1,
    topk: int = 5,
    strict: bool = False,
    progress: bool = False,
    workers: int | None = None,
) -> list[EvalResult]:
    """Top-1 and top-k accuracy (percent) and images/s of each model folder on `dataset`.

    Models with the same preprocessing (FP32 and its INT8 version) share one decoding pass.

    Args:
        batch_size: images per engine call where the model's batch dimension is free; a model
            with a fixed batch (e.g. 1) gets its own.
        strict: an unreadable image is an error instead of being counted and skipped.
        progress: show a rich progress bar on stderr.
        workers: decoding threads (default: what fits beside the engine's threads).
    """
    classifiers = [Classifier(Path(model_dir), options) for model_dir in model_dirs]
    return evaluate_classifiers(classifiers, dataset, batch_size, topk, strict, progress, workers)


def compare(reference: EvalResult, candidate: EvalResult, dataset: Dataset) -> Comparison:
    """Accuracy drop (points) from `reference` (FP32) to `candidate` (INT8) and the images whose top-1 changed."""
    if reference.model_classes and candidate.model_classes and reference.model_classes != candidate.model_classes:
        raise ConfigError(
            f"--compare: {reference.model_dir} has {reference.model_classes} classes but {candidate.model_dir} has "
            f"{candidate.model_classes}; an accuracy difference between them means nothing"
        )
    if len(reference.predictions) != len(dataset) or len(candidate.predictions) != len(dataset):
        raise ValueError("both results must come from evaluating the same data set")
    changed: list[ChangedImage] = []
    now_wrong = now_right = 0
    for (image, label), before, after in zip(dataset.items, reference.predictions, candidate.predictions):
        if before < 0 or after < 0 or before == after:
            continue
        changed.append(ChangedImage(image=str(image), label=label, reference=before, candidate=after))
        now_wrong += before == label
        now_right += after == label
    return Comparison(
        top1_drop=reference.top1 - candidate.top1,
        top5_drop=reference.top5 - candidate.top5,
        changed=changed,
        now_wrong=now_wrong,
        now_right=now_right,
    )
