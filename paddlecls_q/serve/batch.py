"""Offline batch inference on Ray Data: `infer --ray` and `eval --ray`.

The image paths become a Ray dataset; `map_batches` runs an actor pool of `replicas` engine replicas, each
loading the model once and decoding, preprocessing and classifying its batches (read_image + the model's
Preprocessor + the engine, the same functions as the in-process path, so the numbers are the same).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.datasets import Dataset
from paddlecls_q.errors import ConfigError, InputError
from paddlecls_q.evaluate import EvalResult
from paddlecls_q.serve.app import LOCAL_RAY_SYSTEM_CONFIG, ray_address, require_ray, worker_env

CALLS_PER_REPLICA = 4  # enough calls per actor to balance the pool, few enough to keep scheduling cheap
MAX_ROWS_PER_CALL = 4096


class _Replica:
    """One engine replica of the actor pool: paths in, top-k classes (or the read error) out."""

    def __init__(
        self, model_dir: str, options: RuntimeOptions, topk: int | None, label_file: str | None, engine_batch: int
    ) -> None:
        import cv2

        from paddlecls_q.evaluate import engine_batch_size
        from paddlecls_q.infer import Classifier

        cv2.setNumThreads(1)  # the replica's CPUs (num_cpus = --threads) belong to its engine; decode is one thread
        self.classifier = Classifier(Path(model_dir), options, Path(label_file) if label_file else None)
        self.topk = topk or self.classifier.config.topk
        self.engine_batch = engine_batch_size(self.classifier.runtime.input_shape, engine_batch, options.backend)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from paddlecls_q.errors import PaddleClsQError
        from paddlecls_q.preprocess import read_image

        began = time.time()
        images, rows, errors = [], [], [""] * len(batch["path"])
        for row, path in enumerate(batch["path"]):
            try:
                images.append(read_image(str(path)))
                rows.append(row)
            except PaddleClsQError as error:
                errors[row] = str(error)
        k = self.topk
        class_ids = np.full((len(errors), k), -1, np.int64)
        scores = np.zeros((len(errors), k), np.float32)
        if images:
            probabilities = np.concatenate([
                self.classifier.predict(images[start : start + self.engine_batch])
                for start in range(0, len(images), self.engine_batch)
            ])
            k = min(k, probabilities.shape[1])
            top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
            class_ids[rows, :k] = top
            scores[rows, :k] = np.take_along_axis(probabilities, top, axis=1)
        names = self.classifier.labels_for(probabilities.shape[1]) if images else {}
        labels = [json.dumps([names.get(int(i), "") for i in ids if i >= 0]) for ids in class_ids]
        engine = json.dumps(self.classifier.runtime.engine_info(), default=str)
        return {
            "index": batch["index"],
            "class_ids": class_ids,
            "scores": scores,
            "labels": np.array(labels, dtype=object),
            "error": np.array(errors, dtype=object),
            "engine": np.array([engine] + [""] * (len(errors) - 1), dtype=object),
            # Wall-clock span of this batch's work, on the first row: the pipeline's working window.
            "span": np.array([(began, time.time())] + [(0.0, 0.0)] * (len(errors) - 1), dtype=np.float64),
        }


def _run(
    paths: list[str], model_dir: Path, options: RuntimeOptions, topk: int | None, replicas: int, batch_size: int,
    address: str | None, label_file: Path | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """Rows (index order) of every path, the engine info and the working window's seconds.

    The working window runs from the first batch's start to the last batch's end in the actors, as `eval`
    times its loop after the engine is loaded; the engine info also gives the whole pipeline's seconds
    (actor start-up and engine loads included) and the batches per actor call.
    """
    ray = require_ray()
    if replicas < 1 or batch_size < 1:
        raise ConfigError(f"--replicas and --batch-size must be at least 1, got {replicas} and {batch_size}")
    target = ray_address(address)
    init: dict[str, Any] = {"include_dashboard": False, "runtime_env": {"env_vars": worker_env()}}
    if target == "local":
        init["num_cpus"] = max(os.cpu_count() or 1, replicas * options.threads)
        init["_system_config"] = LOCAL_RAY_SYSTEM_CONFIG
    ray.init(address=target, logging_level="warning", log_to_driver=False, **init)
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        began = time.perf_counter()
        # Few, large calls per actor (each split into engine batches of `batch_size` inside): every Ray Data
        # task costs milliseconds of scheduling, which small batches of a fast model pay many times over.
        rows_per_call = max(batch_size, min(MAX_ROWS_PER_CALL, -(-len(paths) // (replicas * CALLS_PER_REPLICA))))
        dataset = ray.data.from_items(
            [{"index": i, "path": p} for i, p in enumerate(paths)], override_num_blocks=-(-len(paths) // rows_per_call)
        )
        predicted = dataset.map_batches(
            _Replica,
            fn_constructor_kwargs={
                "model_dir": str(model_dir.resolve()), "options": options, "topk": topk,
                "label_file": str(label_file) if label_file else None, "engine_batch": batch_size,
            },
            batch_size=rows_per_call,
            batch_format="numpy",
            concurrency=replicas,
            num_cpus=options.threads,
        )
        rows = sorted(predicted.take_all(), key=lambda row: int(row["index"]))
        pipeline_seconds = time.perf_counter() - began
    finally:
        ray.shutdown()
    engine: dict[str, Any] = next((json.loads(row["engine"]) for row in rows if row["engine"]), {})
    spans = np.array([row["span"] for row in rows if row["span"][1] > 0])
    seconds = float(spans[:, 1].max() - spans[:, 0].min()) if len(spans) else pipeline_seconds
    info = {"ray_replicas": replicas, "batch_size": batch_size, "ray_rows_per_call": rows_per_call,
            "ray_pipeline_s": round(pipeline_seconds, 3)}
    return rows, {**engine, **info}, seconds


def infer_on_ray(
    paths: list[Path], model_dir: Path, options: RuntimeOptions, topk: int | None, replicas: int, output: Path,
    batch_size: int = 32, address: str | None = None, label_file: Path | None = None, force: bool = False,
) -> int:
    """Classify `paths` on Ray Data and write one prediction per image (`infer --json`'s fields) as JSONL or Parquet.

    Returns the number of images that could not be read (their rows carry the error).
    """
    if output.suffix not in (".jsonl", ".parquet"):
        raise ConfigError(f"--output {output}: name a .jsonl or .parquet file")
    if output.exists() and not force:
        raise InputError(f"{output}: exists; pass --force to overwrite it")
    rows, _, _ = _run([str(p) for p in paths], model_dir, options, topk, replicas, batch_size, address, label_file)
    records, failed = [], 0
    for path, row in zip(paths, rows):
        ids = [int(i) for i in row["class_ids"] if i >= 0]
        failed += bool(row["error"])
        records.append({
            "image": str(path), "class_ids": ids, "scores": [float(s) for s in row["scores"][: len(ids)]],
            "labels": json.loads(row["labels"]), "error": row["error"] or None,
        })
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".jsonl":
        output.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), output)
    return failed


def evaluate_on_ray(
    model_dir: Path, dataset: Dataset, options: RuntimeOptions, batch_size: int, topk: int, strict: bool,
    replicas: int, address: str | None = None,
) -> EvalResult:
    """`eval`'s EvalResult computed on Ray Data: same predictions, top-1 and top-k counts as `evaluate_models`."""
    if len(dataset) == 0:
        raise InputError(f"{dataset.source}: empty data set")
    paths = [str(path) for path, _ in dataset.items]
    rows, engine, seconds = _run(paths, model_dir, options, topk, replicas, batch_size, address)
    labels = np.array([label for _, label in dataset.items], dtype=np.int64)
    predictions = np.array([int(row["class_ids"][0]) for row in rows], dtype=np.int64)
    unreadable = [str(row["error"]) for row in rows if row["error"]]
    if unreadable and strict:
        raise InputError(unreadable[0])
    readable = predictions >= 0
    count = int(readable.sum())
    if count == 0:
        raise InputError(f"{dataset.source}: none of its {len(dataset)} images could be read")
    k = max(1, sum(1 for i in rows[int(np.argmax(readable))]["class_ids"] if i >= 0))
    in_topk = np.array([label in row["class_ids"][:k] for row, label in zip(rows, labels)])
    correct_top1 = int((predictions[readable] == labels[readable]).sum())
    correct_topk = int(in_topk[readable].sum())
    return EvalResult(
        model_dir=str(model_dir),
        top1=100.0 * correct_top1 / count,
        top5=100.0 * correct_topk / count,
        count=count,
        unreadable=unreadable,
        predictions=[int(p) for p in predictions],
        images_per_s=count / seconds if seconds > 0 else 0.0,
        engine={**engine, "decode_in": "ray actors"},
        topk=k,
        correct_top1=correct_top1,
        correct_topk=correct_topk,
        seconds=seconds,
    )


def image_paths(source: Path) -> list[Path]:
    """`infer --ray`'s images: a folder, one image, a glob (`data/*.png`) or a list file (one path per line)."""
    from paddlecls_q.preprocess.image_io import IMAGE_SUFFIXES, list_images

    text = str(source)
    if any(char in text for char in "*?["):
        import glob

        found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not found:
            raise InputError(f"{source}: the glob matches no files")
        return found
    if source.is_file() and source.suffix.lower() not in IMAGE_SUFFIXES:
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [Path(line) if Path(line).is_absolute() else source.parent / line for line in lines]
    return list_images(source, allow_file=True)
