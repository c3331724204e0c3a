"""The main job on the bundled model, offline: Fashion-MNIST data → PTQ → latency and top-1 per engine.

Every step is an existing library call (`write_fashion_mnist`, `quantize`, `run_benchmark`); this module only
chains them and reuses what an earlier run left when it is still valid.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from paddlecls_q import bench, registry
from paddlecls_q.config import QuantizeConfig, RuntimeOptions, load_quantize_config
from paddlecls_q.datasets import VAL_LIST
from paddlecls_q.errors import InputError

REPO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo_ptq.yaml"
DEMO_IMAGE = registry.DEMO_IMAGE
TEST_IMAGES = 10_000
ENGINES = ("paddle", "ort", "openvino")
# Say(kind, text): kind is "step" (what runs now), "reuse" (what an earlier run left) or "warning".
Say = Callable[[str, str], None]


@dataclass
class DemoResult:
    """What the demo measured: the bench result (latency, and top-1 from quantize's check) and where files went."""

    bench: bench.BenchResult
    data_dir: Path
    int8_dir: Path
    prediction: Any = None  # infer.Prediction of DEMO_IMAGE by the INT8 model on OpenVINO
    reused: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per engine: mean runtime / end-to-end ms FP32 and INT8, max speedup, FP32 / INT8 top-1."""
        rows = []
        for backend in self.bench.backends:
            row: dict[str, Any] = {"engine": backend}
            for mode in ("fp32", "int8"):
                cell = self.bench.cell(backend, mode)
                runtime = cell.runtime_ms if cell is not None and cell.ran else None
                end_to_end = cell.end_to_end_ms if cell is not None and cell.ran else None
                row[f"{mode}_runtime_ms"] = runtime.mean if runtime is not None else None
                row[f"{mode}_end_to_end_ms"] = end_to_end.mean if end_to_end is not None else None
                row[f"{mode}_top1"] = self.bench.top1(backend, mode)
                if cell is not None and not cell.ran:
                    row[f"{mode}_reason"] = cell.reason
            figures = self.bench.summary()["speedup_per_backend"][backend]
            row["max_speedup_runtime"] = figures["runtime"]["mean"]["speedup"] if figures["runtime"] else None
            row["max_speedup_end_to_end"] = figures["end_to_end"]["mean"]["speedup"] if figures["end_to_end"] else None
            rows.append(row)
        return rows


def _data_is_valid(folder: Path, config: QuantizeConfig) -> bool:
    """The folder holds what `data fashion-mnist --split both` writes: 10,000 test lines and training images."""
    val_list = folder / VAL_LIST
    calibration = config.Global.ptq_image_path
    try:
        lines = val_list.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return (
        len(lines) == TEST_IMAGES
        and (folder / lines[-1].split()[0]).is_file()
        and calibration is not None
        and calibration.is_dir()
        and any(calibration.iterdir())
    )


def _int8_is_valid(folder: Path, config: QuantizeConfig) -> bool:
    """An earlier demo's output: a quantized model whose report checked top-1 on the 10,000 test images."""
    report = bench.read_quantize_report(folder)
    accuracy = report.get("accuracy") or {}
    engines = {row.get("engine") for row in accuracy.get("engines") or []}
    return (
        report.get("method") == "ptq"
        and accuracy.get("images") == TEST_IMAGES
        and set(ENGINES) <= engines
        and report.get("config") == config.model_dump(mode="json")
        and all((folder / f"inference.{name}").is_file() for name in ("pdmodel", "pdiparams"))
    )


def run_demo(
    config_file: Path = REPO_CONFIG,
    *,
    force: bool = False,
    iters: int = 300,
    warmup: int = 30,
    progress: bool = False,
    say: Say | None = None,
) -> DemoResult:
    """Write Fashion-MNIST, quantize the demo model with PTQ (top-1 checked per engine), then time every engine.

    An existing data or output folder is reused when it holds what this demo would write; anything else in the
    way is an InputError unless `force` (then it is replaced).
    """
    from paddlecls_q.datasets import write_fashion_mnist
    from paddlecls_q.infer import Classifier
    from paddlecls_q.quantize import quantize

    tell = say or (lambda kind, text: None)
    config = load_quantize_config(config_file)
    eval_list = config.accuracy.eval_list
    output = config.Global.output_dir
    if eval_list is None or eval_list.name != VAL_LIST or output is None:
        raise InputError(f"{config_file}: the demo needs accuracy.eval_list (a {VAL_LIST}) and Global.output_dir")
    data_dir = eval_list.parent
    reused: list[str] = []
    seconds: dict[str, float] = {}

    mark = time.perf_counter()
    if data_dir.exists() and not force and _data_is_valid(data_dir, config):
        reused.append(str(data_dir))
        tell("reuse", f"data: {data_dir} (written earlier)")
    else:
        if data_dir.exists() and not force:
            raise InputError(f"{data_dir}: exists but is not the demo's Fashion-MNIST folder; pass --force to replace it")
        tell("step", f"writing Fashion-MNIST (60,000 train + 10,000 test PNGs) to {data_dir}")
        write_fashion_mnist(data_dir, "both", force=force)
    seconds["data"] = time.perf_counter() - mark

    mark = time.perf_counter()
    if output.exists() and not force and _int8_is_valid(output, config):
        reused.append(str(output))
        tell("reuse", f"INT8 model: {output} (quantized earlier with this config)")
    else:
        if output.exists() and not force:
            raise InputError(f"{output}: exists but is not this config's PTQ output; pass --force to replace it")
        tell("step", f"quantizing {config.Global.model_dir.name} (PTQ), then top-1 on {TEST_IMAGES:,} images per engine")
        quantize(config, "ptq", force=force, progress=progress, on_message=tell)
    seconds["quantize"] = time.perf_counter() - mark

    mark = time.perf_counter()
    tell("step", f"timing FP32 and INT8 on {', '.join(ENGINES)} (1 thread, {iters} iterations each)")
    settings = bench.make_settings(
        backends=",".join(ENGINES), threads=1, iters=iters, warmup=warmup, modes="fp32,int8", image=DEMO_IMAGE
    )
    models = bench.resolve_models(config.Global.model_dir, output, None)
    result = bench.run_benchmark(models, settings)
    seconds["bench"] = time.perf_counter() - mark
    classifier = Classifier(output, RuntimeOptions(backend="openvino", threads=1))
    (prediction,) = classifier.classify([DEMO_IMAGE], 1)
    return DemoResult(
        bench=result, data_dir=data_dir, int8_dir=output, prediction=prediction, reused=reused, seconds=seconds
    )
