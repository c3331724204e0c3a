"""Is `eval` as fast as the engine? Engine-only images/s on pre-made tensors vs the full eval, in one run.

    python scripts/eval_throughput.py                        # bundled demo model, Fashion-MNIST test set
    python scripts/eval_throughput.py --backend openvino --batch-size 1
    python scripts/eval_throughput.py --model-dir DIR --data val_list.txt --limit 500
    python scripts/eval_throughput.py --compare INT8_DIR     # FP32 + INT8 in one decoding pass (eval --compare)

Both measurements use the same loaded engine and the same batch size, alternated run by run (engine
then eval, eval then engine, ...). Two ratios (eval / engine; the target is at least 0.9): best eval
run over best engine run, and the median over the pairs of each eval run over its paired engine
run. This VM's speed drifts by 10-30 % from one second to the next (Paddle Inference alone: 0.53 to
1.0 s for the same 10,000 images, one run after another), so one pair proves little; the median of
pairs is the steadier number.

Wall-clock ratios only mean something on an otherwise idle machine, so the script also reports CPU
time per image of the engine and of decoding + preprocessing (one worker's share), and from them the
ratio an idle machine would give: with the workers on their own cores, eval runs at the slower of the two.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paddlecls_q import registry
from paddlecls_q.config import RuntimeOptions
from paddlecls_q.datasets import Dataset, load_dataset, write_fashion_mnist
from paddlecls_q.decoding import BatchLoader
from paddlecls_q.evaluate import default_workers, engine_batch_size, evaluate_classifiers
from paddlecls_q.infer import Classifier
from paddlecls_q.preprocess import read_image

PREMADE_TENSOR_BYTES = 1 << 30  # engine-only loop cycles over at most this much pre-made input


def premade_batches(classifier: Classifier, items: list, batch: int) -> list[np.ndarray]:
    """Preprocessed batches of the first images (as many as fit in PREMADE_TENSOR_BYTES)."""
    batches, current = [], []
    for image, _ in items:
        current.append(classifier.preprocess(read_image(image)))
        if len(current) == batch:
            batches.append(np.stack(current))
            current = []
            if sum(b.nbytes for b in batches) >= PREMADE_TENSOR_BYTES:
                break
    if current:
        current.extend(current[-1:] * (batch - len(current)))
        batches.append(np.stack(current))
    return batches


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def engine_images_per_s(
    classifiers: list[Classifier], batches: list[np.ndarray], images: int, batch: int
) -> tuple[float, float]:
    """The engine(s) alone, as many batches as eval runs (cycling over the pre-made ones): images/s, CPU µs/image.

    With two models (--compare) each batch goes through both engines, as in eval's shared pass.
    """
    runtimes = [classifier.runtime for classifier in classifiers]
    calls = -(-images // batch)
    began, cpu = time.perf_counter(), process_cpu_s()
    for call in range(calls):
        for runtime in runtimes:
            runtime.infer(batches[call % len(batches)]).argmax(axis=1)
    return images / (time.perf_counter() - began), (process_cpu_s() - cpu) / images * 1e6


def decode_cpu_us(classifier: Classifier, dataset: Dataset, batch: int, count: int = 2000) -> float:
    """CPU µs per image of what a decode worker runs (eval's batch loader, batch arrays recycled) on one thread."""
    load = BatchLoader(classifier.preprocess, dataset.items, batch, strict=True)
    count = min(count, len(dataset))
    spare: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()
    began = time.thread_time()
    for first in range(0, count, batch):
        for loaded in load(first, batch, spare):
            if loaded.tensor is not None and load.output_shape:
                spare.put(loaded.tensor)
    return (time.thread_time() - began) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=registry.DEMO_MODEL_DIR)
    parser.add_argument("--compare", type=Path, help="a second model (INT8) evaluated in the same decoding pass")
    parser.add_argument("--data", type=Path, help="val list or class-folder tree [default: Fashion-MNIST test]")
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        data = args.data
        if data is None:
            data = write_fashion_mnist(Path(scratch) / "fashion", "test", args.limit).folder
        dataset = load_dataset(data, args.limit)
        options = RuntimeOptions(backend=args.backend, threads=args.threads)
        classifier = Classifier(args.model_dir, options)
        classifiers = [classifier] + ([Classifier(args.compare, options)] if args.compare else [])
        batch = engine_batch_size(classifier.runtime.input_shape, args.batch_size, args.backend)
        workers = args.workers or default_workers(args.threads)
        batches = premade_batches(classifier, dataset.items, batch)
        for each in classifiers:
            each.runtime.infer(batches[0])  # warm-up
        engine_runs, eval_runs, engine_cpu, top1 = [], [], [], None
        for repeat in range(args.repeats):
            # Engine first, then eval first, and so on: a machine slowing down (or speeding up) over a
            # pair favours neither side.
            for side in ("engine", "eval") if repeat % 2 == 0 else ("eval", "engine"):
                if side == "engine":
                    speed, cpu_us = engine_images_per_s(classifiers, batches, len(dataset), batch)
                    engine_runs.append(speed)
                    engine_cpu.append(cpu_us)
                else:
                    result = evaluate_classifiers(classifiers, dataset, batch, strict=True, workers=workers)[0]
                    eval_runs.append(result.images_per_s)
                    top1 = result.top1
        decode_us = min(decode_cpu_us(classifier, dataset, batch) for _ in range(args.repeats))
    engine_us = min(engine_cpu)
    # On an otherwise idle machine with the workers on their own cores, eval runs at the slower of the two.
    idle_estimate = min(1.0, workers * engine_us / decode_us) if args.threads + workers <= os.cpu_count() else None
    report = {
        "model_dir": str(args.model_dir),
        "compare": str(args.compare) if args.compare else None,
        "engine": classifier.runtime.engine_info(),
        "images": len(dataset),
        "batch_size": batch,
        "threads": args.threads,
        "decode_workers": workers,
        "engine_images_per_s": max(engine_runs),
        "eval_images_per_s": max(eval_runs),
        "ratio": max(eval_runs) / max(engine_runs),
        "median_paired_ratio": statistics.median(e / a for a, e in zip(engine_runs, eval_runs)),
        "engine_runs": engine_runs,
        "eval_runs": eval_runs,
        "top1": top1,
        "engine_cpu_us_per_image": engine_us,
        "decode_cpu_us_per_image": decode_us,
        "idle_machine_ratio_estimate": idle_estimate,
        "load_average_1min": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print(
        f"{Path(args.model_dir).name} on {report['engine'].get('engine', args.backend)}, {len(dataset)} images, "
        f"batch {batch}, {args.threads} engine thread(s), {workers} decode worker(s)"
    )
    print(f"  engine only (pre-made tensors): {report['engine_images_per_s']:10,.0f} images/s")
    print(f"  full eval (decode+preprocess):  {report['eval_images_per_s']:10,.0f} images/s  (top-1 {top1:.2f} %)")
    print(
        f"  ratio eval / engine: best runs {report['ratio']:.3f}, median of {args.repeats} pairs "
        f"{report['median_paired_ratio']:.3f}   (1-min load average {report['load_average_1min']:.1f})"
    )
    print(f"  CPU per image: engine {engine_us:.1f} µs, decode + preprocess {decode_us:.1f} µs", end="")
    print(f"; idle-machine ratio estimate {idle_estimate:.2f}" if idle_estimate is not None else "")


if __name__ == "__main__":
    main()
