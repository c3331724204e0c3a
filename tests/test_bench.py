"""`bench`: statistics on known samples, the fast preprocessing plan against PaddleClas, real engine runs on a
small model and its INT8 version, every output format, n/a reasons and every bad input. No timing is asserted."""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import paddleclas_reference as reference  # tests/, on sys.path under pytest's default import mode
import pytest
from typer.testing import CliRunner

from helpers import assert_one_line_error, build
from paddlecls_q import bench, chart, registry, report
from paddlecls_q.bench.peak import LITTLE_GAIN
from paddlecls_q.cli import app
from paddlecls_q.cli.app import JSON_SCHEMA_VERSION, console
from paddlecls_q.config import load_inference_cls_yaml
from paddlecls_q.errors import ConfigError, InputError, ModelFormatError
from paddlecls_q.preprocess import FastPreprocessor, compile_plan
from paddlecls_q.preprocess import build_preprocessor, read_image
from paddlecls_q.stats import LatencyStats, ratio, summarize

runner = CliRunner()
ENTRY_POINT = str(Path(sys.executable).parent / "paddlecls-q")
IMAGES = sorted((Path(__file__).parent / "data" / "images").glob("*.jpeg"))
IMAGENET_CHAIN = [
    {"ResizeImage": {"resize_short": 256}},
    {"CropImage": {"size": 224}},
    {"NormalizeImage": {"scale": 0.00392157, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "order": ""}},
    {"ToCHWImage": None},
]

# A small classifier (32x32, 10 classes) and its PaddleSlim INT8 version, made in a child process because
# PaddleSlim needs paddle's static mode, which would leak into other tests.
MAKE_MODELS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import paddlecls_q
    import numpy as np
    import paddle
    from paddlecls_q.models.export import export_inference_model, make_inference_cls_yaml

    root, source = Path(sys.argv[1]), sys.argv[2]
    fp32 = root / "fp32"
    if source:
        fp32 = Path(source)
    else:
        paddle.seed(0)
        layer = paddle.nn.Sequential(
            paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.BatchNorm2D(8), paddle.nn.ReLU(),
            paddle.nn.Conv2D(8, 16, 3, stride=2, padding=1), paddle.nn.BatchNorm2D(16), paddle.nn.ReLU(),
            paddle.nn.AdaptiveAvgPool2D(1), paddle.nn.Flatten(), paddle.nn.Linear(16, 10), paddle.nn.Softmax(),
        )
        ops = [
            {"ResizeImage": {"resize_short": 36}},
            {"CropImage": {"size": 32}},
            {"NormalizeImage": {"scale": 0.00392157, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                "order": ""}},
            {"ToCHWImage": None},
        ]
        export_inference_model(layer, fp32, (1, 3, 32, 32), make_inference_cls_yaml(ops, 3))
    from paddlecls_q.config import load_inference_cls_yaml
    from paddlecls_q.preprocess import build_preprocessor, read_image
    preprocess = build_preprocessor(load_inference_cls_yaml(fp32 / "inference_cls.yaml"))
    images = [read_image(p) for p in sorted(Path(sys.argv[3]).glob("*.jpeg"))]
    batches = [preprocess.batch([image, np.ascontiguousarray(image[:, ::-1])]) for image in images]
    paddle.enable_static()
    from paddleslim.quant import quant_post_static
    quant_post_static(
        executor=paddle.static.Executor(paddle.CPUPlace()), model_dir=str(fp32), quantize_model_path=str(root / "int8"),
        model_filename="inference.pdmodel", params_filename="inference.pdiparams",
        save_model_filename="inference.pdmodel", save_params_filename="inference.pdiparams",
        data_loader=lambda: iter({"x": batch} for batch in batches), batch_nums=len(batches), algo="avg",
        onnx_format=True,
    )
    print(fp32)
    """
)


@pytest.fixture(scope="session")
def model_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(FP32 folder, INT8 folder): the bundled demo model if present, else a small stand-in, and its PTQ version."""
    root = tmp_path_factory.mktemp("bench_models")
    source = str(registry.DEMO_MODEL_DIR) if (registry.DEMO_MODEL_DIR / "inference_cls.yaml").is_file() else ""
    result = subprocess.run(
        [sys.executable, "-c", MAKE_MODELS, str(root), source, str(IMAGES[0].parent)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fp32 = Path(result.stdout.strip().splitlines()[-1])
    int8 = root / "int8"
    shutil.copy(fp32 / "inference_cls.yaml", int8 / "inference_cls.yaml")
    return fp32, int8


@pytest.fixture(scope="session")
def three_engine_result(model_pair: tuple[Path, Path]) -> bench.BenchResult:
    """One real run: FP32 and INT8 on Paddle Inference, ONNX Runtime and OpenVINO, a few iterations."""
    models = bench.resolve_models(model_pair[0], model_pair[1], None)
    settings = bench.make_settings(iters=4, warmup=1, block=2)
    return bench.run_benchmark(models, settings)


def invoke(*args: str):
    return runner.invoke(app, ["bench", *args])


# ---- statistics -----------------------------------------------------------------------------------


def test_statistics_of_known_samples() -> None:
    stats = summarize(np.arange(1, 101))
    assert stats.count == 100
    assert stats.mean == pytest.approx(50.5)
    assert stats.median == pytest.approx(50.5)
    assert stats.p90 == pytest.approx(90.1)  # linear interpolation between the 90th and 91st samples
    assert stats.p99 == pytest.approx(99.01)
    assert (stats.min, stats.max) == (1, 100)
    assert stats.stdev == pytest.approx(29.011491975882016)  # sample standard deviation (n - 1)
    assert stats.cv == pytest.approx(29.011491975882016 / 50.5)
    assert stats.noisy


def test_statistics_of_steady_and_single_samples() -> None:
    steady = summarize([10.0, 10.0, 10.5, 9.5])
    assert steady.median == 10.0 and steady.cv == pytest.approx(np.std([10, 10, 10.5, 9.5], ddof=1) / 10)
    assert not steady.noisy
    single = summarize([3.0])
    assert (single.mean, single.median, single.p99, single.stdev, single.cv) == (3.0, 3.0, 3.0, 0.0, 0.0)
    assert LatencyStats.from_dict(single.to_dict()) == single


@pytest.mark.parametrize("samples", [[], [1.0, float("nan")], [1.0, float("inf")], [-1.0, 2.0]])
def test_statistics_refuse_empty_or_invalid_samples(samples: list[float]) -> None:
    with pytest.raises(ValueError):
        summarize(samples)


def test_ratio_is_none_when_a_side_is_missing() -> None:
    assert ratio(10.0, 4.0) == 2.5
    assert ratio(None, 4.0) is None and ratio(10.0, None) is None and ratio(10.0, 0.0) is None


# ---- postprocessing -------------------------------------------------------------------------------


# ---- the fast preprocessing plan ------------------------------------------------------------------




def with_normalize(**params: object) -> list[dict]:
    chain = copy.deepcopy(IMAGENET_CHAIN)
    chain[2]["NormalizeImage"].update(params)
    return chain


PLAN_VARIANTS = {
    "imagenet": IMAGENET_CHAIN,
    "resize_short 225, crop [w, h]": [
        {"ResizeImage": {"resize_short": 225}},
        {"CropImage": {"size": [200, 180]}},
        *IMAGENET_CHAIN[2:],
    ],
    "size [w, h]": [{"ResizeImage": {"size": [300, 240]}}, {"CropImage": {"size": 224}}, *IMAGENET_CHAIN[2:]],
    "ToCHW then normalize chw": [*IMAGENET_CHAIN[:2], {"ToCHWImage": None}, with_normalize(order="chw")[2]],
    "channel_num 4": with_normalize(channel_num=4),
    "output_fp16": with_normalize(output_fp16=True),
    "no crop, size 32 (the demo model's chain)": [{"ResizeImage": {"size": 32}}, *IMAGENET_CHAIN[2:]],
    "no crop, resize_short": [{"ResizeImage": {"resize_short": 200}}, *IMAGENET_CHAIN[2:]],
    "cv2 bicubic (not trimmed)": [
        {"ResizeImage": {"resize_short": 256, "interpolation": "bicubic"}},
        *IMAGENET_CHAIN[1:],
    ],
}


@pytest.mark.parametrize("variant", PLAN_VARIANTS)
@pytest.mark.parametrize("image_path", IMAGES, ids=[p.stem for p in IMAGES])
def test_fast_plan_is_bit_identical_to_preprocess_and_matches_paddleclas(variant: str, image_path: Path) -> None:
    preprocessor = build(PLAN_VARIANTS[variant])
    plan = compile_plan(preprocessor)
    assert isinstance(plan, FastPreprocessor)
    image = read_image(image_path)
    ours = plan(image)
    np.testing.assert_array_equal(ours, preprocessor(image))
    assert ours.dtype == preprocessor.output_dtype
    theirs = reference.run_operators(reference.create_operators(copy.deepcopy(PLAN_VARIANTS[variant])), image)
    assert np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max() <= 1e-5


def test_fast_plan_is_bit_identical_on_hundreds_of_image_sizes() -> None:
    """Trimming the resize to the band the crop reads must never change a pixel, whatever the size or aspect."""
    preprocessor = build(IMAGENET_CHAIN)
    plan = compile_plan(preprocessor)
    rng = np.random.default_rng(0)
    trimmed = 0
    for index in range(300):
        low, high = (60, 400) if index % 4 == 0 else (224, 1400)
        height, width = (int(v) for v in rng.integers(low, high, 2))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        try:
            expected = preprocessor(image)
        except InputError:
            with pytest.raises(InputError):
                plan(image)
            continue
        np.testing.assert_array_equal(plan(image), expected, err_msg=f"{height}x{width}")
        trimmed += plan._plans[(height, width)].trimmed
    assert trimmed > 200  # the trimmed path is the one exercised


def test_fast_plan_writes_into_a_buffer_and_batches(photo: Path) -> None:
    preprocessor = build(IMAGENET_CHAIN)
    plan = compile_plan(preprocessor)
    image = read_image(photo)
    buffer = np.full((3, 224, 224), -1.0, np.float32)
    assert plan(image, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, preprocessor(image))
    images = [image, read_image(IMAGES[1])]
    np.testing.assert_array_equal(plan.batch(images), preprocessor.batch(images))
    # The repeated-size fast path checks `out` as strictly as the first call does.
    for wrong in (np.empty((3, 224, 224), np.float64), np.empty((3, 224, 448), np.float32)[:, :, ::2], buffer[:2]):
        with pytest.raises(ValueError, match="out must be"):
            plan(image, out=wrong)


def test_fast_plan_keeps_the_reference_errors_and_refuses_other_chains() -> None:
    plan = compile_plan(build(IMAGENET_CHAIN))
    with pytest.raises(InputError, match="empty image"):
        plan(np.zeros((0, 10, 3), np.uint8))
    small = build([{"ResizeImage": {"size": [100, 100]}}, *IMAGENET_CHAIN[1:]])
    with pytest.raises(InputError, match="larger than"):
        compile_plan(small)(np.zeros((50, 60, 3), np.uint8))
    with pytest.raises(InputError, match="RGB image"):
        plan(np.zeros((250, 260, 4), np.uint8))
    with pytest.raises(InputError, match="RGB image"):
        plan(np.zeros((250, 260), np.float32))
    pil = build([{"ResizeImage": {"resize_short": 256, "backend": "pil"}}, *IMAGENET_CHAIN[1:]])
    assert compile_plan(pil) is None
    crop_only = build([{"CropImage": {"size": 224}}, *IMAGENET_CHAIN[2:]])
    assert compile_plan(crop_only) is None


def test_fast_plan_compiles_the_shipped_paddleclas_config() -> None:
    config = load_inference_cls_yaml(Path(__file__).parent / "data" / "configs" / "inference_cls.yaml")
    preprocessor = build_preprocessor(config)
    plan = compile_plan(preprocessor)
    assert plan is not None
    for path in IMAGES:
        image = read_image(path)
        np.testing.assert_array_equal(plan(image), preprocessor(image))


# ---- settings, models and n/a reasons -------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"backends": "ort,onnxruntim"}, "unknown backend 'onnxruntim'"),
        ({"backends": ","}, "no backend given"),
        ({"modes": "fp32,int4"}, "unknown mode 'int4'"),
        ({"iters": 0}, "key 'iters'"),
        ({"iters": -5}, "key 'iters'"),
        ({"warmup": -1}, "key 'warmup'"),
        ({"threads": 0}, "key 'threads'"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_settings_are_config_errors(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        bench.make_settings(**values)


def test_settings_defaults_follow_the_device() -> None:
    assert bench.make_settings().backends == ("paddle", "ort", "openvino")
    assert bench.make_settings(device="gpu").backends == ("trt", "paddle-trt")
    assert bench.make_settings(backends="ORT, ort,openvino", modes="int8,fp32").backends == ("ort", "openvino")


def test_not_available_reasons(model_pair: tuple[Path, Path]) -> None:
    models = bench.resolve_models(model_pair[0], model_pair[1], None)
    fp32_only = bench.resolve_models(model_pair[0], None, None)
    cpu, gpu = bench.make_settings(), bench.make_settings(device="gpu", backends="trt,paddle-trt,ort,openvino,paddle")
    reason = bench.not_available_reason
    assert reason("ort", "fp32", cpu, models) == "" and reason("ort", "int8", cpu, models) == ""
    assert "FP16 kernels need --device gpu" in reason("ort", "int8+fp16", cpu, models)
    assert "pinned memory need --device gpu" in reason("paddle", "int8+fp16+pm", cpu, models)
    assert "GPU only" in reason("trt", "fp32", cpu, models)
    assert "CPU only" in reason("openvino", "fp32", gpu, models)
    assert "no FP16 switch" in reason("ort", "int8+fp16", gpu, models)
    assert reason("trt", "int8+fp16+pm", gpu, models) == ""
    assert "--int8-dir" in reason("ort", "int8", cpu, fp32_only)


def test_models_are_checked_before_any_engine_loads(model_pair: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, int8 = model_pair
    with pytest.raises(ModelFormatError, match="not a quantized model"):
        bench.resolve_models(fp32, fp32, None)
    with pytest.raises(ModelFormatError, match="holds a quantized model"):
        bench.resolve_models(int8, None, None)
    with pytest.raises(ConfigError, match="exactly one"):
        bench.resolve_models(fp32, None, "ResNet50_vd")
    with pytest.raises(ConfigError, match="exactly one"):
        bench.resolve_models(None, None, None)
    with pytest.raises(ModelFormatError, match="not found"):
        bench.resolve_models(tmp_path / "missing", None, None)


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        ("ResNet50_vd", "ResNet50_vd"),
        ("ResNet50_vd_infer", "ResNet50_vd"),
        ("resnet50_vd_ptq", "ResNet50_vd"),
        ("MobileNetV1", "MobileNetV1_ssld"),
        ("mobilenetv1_ssld_ptq", "MobileNetV1_ssld"),
        ("MobileNetV1_ssld_infer", "MobileNetV1_ssld"),
        ("my_model", None),
    ],
)
def test_folder_names_find_registry_models(folder: str, expected: str | None) -> None:
    entry = bench.match_registry_model(folder)
    assert (entry.name if entry else None) == expected


def test_quantize_report_supplies_method_and_accuracy(tmp_path: Path) -> None:
    (tmp_path / "quantize_report.json").write_text(
        json.dumps(
            {
                "schema": "paddlecls-q/quantize-report",
                "method": "qat",
                "accuracy": {
                    "images": 500,
                    "eval_list": "val.txt",
                    "engines": [{"engine": "ort", "fp32_top1": 79.1, "int8_top1": 78.9}],
                },
            }
        )
    )
    report_data = bench.read_quantize_report(tmp_path)
    assert report_data["method"] == "qat"
    accuracy, source = bench.measured_accuracy(report_data)
    assert accuracy == {"ort": {"fp32_top1": 79.1, "int8_top1": 78.9}} and "500 images" in source
    (tmp_path / "quantize_report.json").write_text("not json")
    assert bench.read_quantize_report(tmp_path) == {}


# ---- real runs ------------------------------------------------------------------------------------


def test_three_engines_measure_fp32_and_int8(three_engine_result: bench.BenchResult) -> None:
    result = three_engine_result
    assert [(c.backend, c.mode) for c in result.cells if c.ran] == [
        (backend, mode) for backend in ("paddle", "ort", "openvino") for mode in ("fp32", "int8")
    ]
    for cell in result.cells:
        if cell.mode in ("int8+fp16", "int8+fp16+pm"):
            assert cell.status == "n/a" and "--device gpu" in cell.reason
            continue
        for kind in ("runtime_ms", "end_to_end_ms", "bare_ms", "runtime_cpu_ms", "end_to_end_cpu_ms"):
            stats = getattr(cell, kind)
            assert stats.count == 4 and stats.min <= stats.median <= stats.p90 <= stats.p99 <= stats.max, kind
        assert cell.threads.requested == 1 and cell.threads.reported == 1 and cell.threads.ok
        assert cell.threads.parallelism == pytest.approx(1.0, abs=0.5)
        assert cell.preprocessor.startswith("fast_preprocess")
        assert 0 <= cell.top1_class < 10
        if cell.mode == "int8":
            assert cell.cosine_to_fp32 is not None and cell.cosine_to_fp32 > 0.5
    assert result.cell("openvino", "fp32").precision == "float32"  # not bf16, even where the CPU has it
    summary = result.summary()
    assert summary["speedup_overall"]["runtime"]["median"]["speedup"] > 0
    assert set(summary["speedup_per_backend"]) == {"paddle", "ort", "openvino"}
    assert summary["cells"]["ort int8"]["end_to_end_over_runtime"] > 0
    assert set(result.preprocessing_ms) == {"plain cv2 + numpy steps", "paddlecls_q.preprocess", "fast_preprocess plan"}
    environment = result.environment
    assert {"avx2", "avx512f", "avx512_vnni"} <= set(environment["cpu_flags"])
    assert environment["threads"] == 1 and "onnxruntime" in environment["packages"]
    peak = environment["conv_peak"]
    assert peak["fp32_gmacs"] > 0 and peak["int8_gmacs"] > 0
    assert peak["int8_over_fp32"] == pytest.approx(peak["int8_gmacs"] / peak["fp32_gmacs"], abs=0.01)
    little = peak["int8_over_fp32"] < LITTLE_GAIN
    assert any("INT8 can buy little or no speed here" in warning for warning in result.warnings) == little


def test_the_peak_convs_compute_the_same_conv() -> None:
    """The INT8 conv that bench times is the FP32 one on the 1/64 grid: ONNX Runtime runs it as QLinearConv."""
    import onnxruntime as ort

    from paddlecls_q.bench.peak import CHANNELS, SIZE, conv_models
    from paddlecls_q.runtime.ort_backend import cpu_session_options

    x = np.random.default_rng(2).integers(0, 3, (1, CHANNELS, SIZE, SIZE)).astype(np.float32) / 64
    fp32, int8 = (
        ort.InferenceSession(model, cpu_session_options(1), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for model in conv_models()
    )
    expected = np.clip(np.round(fp32 * 64), 0, 255) / 64
    assert np.abs(int8 - expected).max() <= 1 / 64 + 1e-6  # a rounding tie at most
    assert (int8 == expected).mean() > 0.999 and 0 < (expected > 0).mean() < 1


def test_results_survive_a_json_round_trip(three_engine_result: bench.BenchResult) -> None:
    document = json.loads(json.dumps(report.json_document([three_engine_result], JSON_SCHEMA_VERSION)))
    assert document["schema"] == "paddlecls-q/bench" and document["version"] == JSON_SCHEMA_VERSION
    (loaded,) = [bench.BenchResult.from_dict(item) for item in document["results"]]
    assert report.render_markdown([loaded]) == report.render_markdown([three_engine_result])
    assert loaded.summary() == three_engine_result.summary()


def test_markdown_has_the_seed_tables(three_engine_result: bench.BenchResult) -> None:
    text = report.render_markdown([three_engine_result], "Benchmarks")
    assert text.startswith("# Benchmarks")
    assert "### Runtime Benchmark" in text and "### End-to-end Benchmark" in text
    header = "| " + " | ".join(report.SEED_COLUMNS)
    assert text.count(header) == 2
    row_start = f"| {three_engine_result.model} | ONNX Runtime | CPU |"
    lines = [line for line in text.splitlines() if line.startswith(row_start)]
    assert len(lines) == 2
    cells = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert cells[2] == "CPU" and cells[5].startswith("n/a [") and cells[6].startswith("n/a [")
    assert float(cells[3].rstrip("*")) > 0 and float(cells[7]) > 0
    assert "FP16 kernels need --device gpu" in text
    assert "### Latency statistics (ms)" in text and "### Engines as they ran" in text
    assert "- INT8 / FP32 compute on this CPU: " in text and "the most INT8 can buy on dense convs" in text


def test_csv_has_one_row_per_cell_and_kind(three_engine_result: bench.BenchResult) -> None:
    rows = list(csv.DictReader(io.StringIO(report.render_csv([three_engine_result]))))
    assert list(rows[0]) == report.CSV_COLUMNS
    measured = [row for row in rows if row["status"] == "ok"]
    assert len(measured) == 6 * 3  # 3 engines x 2 precisions x (runtime, end-to-end, bare)
    assert {row["kind"] for row in measured} == {"runtime", "end_to_end", "bare"}
    assert all(
        float(row["median_ms"]) > 0 and row["threads_reported"] == "1" for row in measured if row["kind"] == "runtime"
    )
    not_available = [row for row in rows if row["status"] == "n/a"]
    assert len(not_available) == 6 and all("--device gpu" in row["reason"] for row in not_available)


def test_plot_writes_a_png(three_engine_result: bench.BenchResult, tmp_path: Path) -> None:
    path = chart.plot([three_engine_result, three_engine_result], tmp_path / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="PNG"):
        chart.plot([three_engine_result], tmp_path / "chart.svg")


def test_a_missing_engine_fails_its_own_rows_only(
    model_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    models = bench.resolve_models(model_pair[0], model_pair[1], None)
    result = bench.run_benchmark(
        models, bench.make_settings(backends="ort,openvino", modes="fp32,int8", iters=2, warmup=0)
    )
    openvino = [cell for cell in result.cells if cell.backend == "openvino"]
    assert all(cell.status == "n/a" and "needs openvino" in cell.reason for cell in openvino)
    assert all(cell.ran for cell in result.cells if cell.backend == "ort")
    assert "| OpenVINO | CPU | n/a [" in report.render_markdown([result])


def test_an_engine_that_cannot_load_the_model_fails_its_own_rows(model_pair: tuple[Path, Path], tmp_path: Path) -> None:
    broken = tmp_path / "int8"
    shutil.copytree(model_pair[1], broken)
    (broken / "inference.openvino.onnx").write_bytes(b"not an onnx model")
    models = bench.resolve_models(model_pair[0], broken, None)
    result = bench.run_benchmark(models, bench.make_settings(backends="openvino", modes="fp32,int8", iters=2, warmup=0))
    assert result.cell("openvino", "fp32").ran
    failed = result.cell("openvino", "int8")
    assert failed.status == "failed" and "OpenVINO could not read it" in failed.reason
    assert "failed [" in report.render_markdown([result])


def test_reference_figures_appear_when_the_folder_name_is_a_registry_model(
    model_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "ResNet50_vd"
    shutil.copytree(model_pair[0], folder)
    models = bench.resolve_models(folder, None, None)
    assert models.entry.name == "ResNet50_vd" and not models.published_fp32
    result = bench.run_benchmark(models, bench.make_settings(backends="ort", iters=2, warmup=0))
    text = report.render_markdown([result])
    seed_rows = [line for line in text.splitlines() if line.startswith("| ResNet50_vd (seed) | ONNX Runtime")]
    assert len(seed_rows) == 2  # runtime and end-to-end tables
    assert "| 76.14 | 35.43 | None | None | 2.15 | 79.12 | 78.87 |" in seed_rows[0]
    assert "| 77.43 | 41.90 | None | None | 1.85 | 79.12 | 78.87 |" in seed_rows[1]
    measured = next(line for line in text.splitlines() if line.startswith("| ResNet50_vd | ONNX Runtime"))
    assert "| n/a [" in measured and "top-1 not evaluated" in text  # random weights: published top-1 does not apply


# ---- the command line -----------------------------------------------------------------------------


def test_cli_json_and_files(model_pair: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, int8 = model_pair
    common = ["--model-dir", str(fp32), "--int8-dir", str(int8), "--backends", "ort", "--iters", "3", "--warmup", "1"]
    result = invoke(*common, "--format", "json", "--modes", "fp32,int8")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == "paddlecls-q/bench" and document["version"] == JSON_SCHEMA_VERSION
    (measured,) = document["results"]
    assert [cell["status"] for cell in measured["cells"]] == ["ok", "ok"]
    assert measured["cells"][0]["runtime_ms"]["count"] == 3
    assert measured["summary"]["speedup_per_backend"]["ort"]["runtime"]["median"]["speedup"] > 0
    assert measured["environment"]["cpu_flags"]["avx2"] in (True, False)

    saved = tmp_path / "out" / "bench.json"
    chart = tmp_path / "out" / "bench.png"
    result = invoke(*common, "--format", "json", "--output", str(saved), "--plot", str(chart))
    assert result.exit_code == 0, result.output
    assert chart.read_bytes()[:4] == b"\x89PNG"
    markdown = invoke("--from-json", str(saved), "--from-json", str(saved), "--format", "markdown")
    assert markdown.exit_code == 0, markdown.output
    assert markdown.stdout.count("### Runtime Benchmark") == 1
    assert markdown.stdout.count(f"| {fp32.name} | ONNX Runtime | CPU |") == 4  # two results x two tables
    table = invoke("--from-json", str(saved))
    assert table.exit_code == 0 and "Runtime Benchmark" in table.stdout
    csv_text = invoke("--from-json", str(saved), "--format", "csv")
    assert csv_text.stdout.startswith(",".join(report.CSV_COLUMNS))
    before = saved.read_bytes()
    clobber = invoke("--from-json", str(saved), "--format", "markdown", "--output", str(saved))  # its own input
    assert clobber.exit_code == 2 and "already exists; pass --force" in clobber.output
    assert saved.read_bytes() == before
    forced = invoke("--from-json", str(saved), "--format", "json", "--output", str(saved), "--force")
    assert forced.exit_code == 0, forced.output


def test_console_tables_fit_80_columns_without_folded_rows(
    three_engine_result: bench.BenchResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(report.json_document([three_engine_result], JSON_SCHEMA_VERSION), default=str))
    monkeypatch.setattr(console, "_width", 80)  # restored afterwards (setting .width would stick)
    result = invoke("--from-json", str(saved))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) >= 6 * 3  # the statistics table: runtime, end-to-end, bare loop per cell
    assert not [line for line in rows if line.startswith("│ ") and line[2:].split("│")[0].strip() == ""]  # folded
    assert any(line.startswith("hidden at 80 columns:") and "CV" in line for line in lines)


def test_cli_entry_point_in_a_subprocess(model_pair: tuple[Path, Path]) -> None:
    result = subprocess.run(
        [
            ENTRY_POINT,
            "bench",
            "--model-dir",
            str(model_pair[0]),
            "--backends",
            "ort",
            "--iters",
            "2",
            "--warmup",
            "0",
            "--modes",
            "fp32",
            "--format",
            "csv",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["kind"] for row in rows] == ["runtime", "end_to_end", "bare"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--backends", "ort,tensorrtt"], 2, "unknown backend 'tensorrtt'"),
        (["--modes", "fp32,fp8"], 2, "unknown mode 'fp8'"),
        (["--iters", "0"], 2, "key 'iters'"),
        (["--iters", "-3"], 2, "key 'iters'"),
        (["--warmup", "-1"], 2, "key 'warmup'"),
        (["--format", "xml"], 2, "unknown format 'xml'"),
        (["--schedule", "random"], 2, "unknown schedule"),
        (["--plot", "chart.svg"], 2, "give a .png file name"),
    ],
)
def test_cli_bad_options_are_one_line_errors(
    model_pair: tuple[Path, Path], args: list[str], code: int, message: str
) -> None:
    assert_one_line_error(invoke("--model-dir", str(model_pair[0]), *args), code, message)


def test_cli_bad_models_and_images_are_one_line_errors(model_pair: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, _ = model_pair
    assert_one_line_error(invoke("--model-dir", str(fp32), "--int8-dir", str(fp32)), 2, "not a quantized model")
    assert_one_line_error(invoke("--model-dir", str(tmp_path / "nope")), 2, "model folder not found")
    assert_one_line_error(invoke("--model", "ResNet50"), 2, "did you mean 'ResNet50_vd'")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a JPEG")
    assert_one_line_error(
        invoke("--model-dir", str(fp32), "--image", str(broken), "--backends", "ort"), 2, "not an image"
    )
    assert_one_line_error(invoke("--from-json", str(broken)), 2, "not a JSON file")


def test_cli_fails_only_when_nothing_could_run(model_pair: tuple[Path, Path]) -> None:
    result = invoke("--model-dir", str(model_pair[0]), "--backends", "trt,paddle-trt", "--iters", "1")
    assert_one_line_error(result, 2, "nothing could run")
    assert "TensorRT runs on the GPU only" in result.output


def test_cli_unknown_engine_rows_do_not_stop_the_others(model_pair: tuple[Path, Path]) -> None:
    result = invoke(
        "--model-dir",
        str(model_pair[0]),
        "--backends",
        "ort,trt",
        "--modes",
        "fp32",
        "--iters",
        "2",
        "--warmup",
        "0",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    cells = json.loads(result.stdout)["results"][0]["cells"]
    assert [(c["backend"], c["status"]) for c in cells] == [("ort", "ok"), ("trt", "n/a")]


def test_image_option_reads_real_photos(model_pair: tuple[Path, Path]) -> None:
    image = cv2.imread(str(IMAGES[2]))
    assert image is not None
    result = invoke(
        "--model-dir",
        str(model_pair[0]),
        "--backends",
        "ort",
        "--modes",
        "fp32",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--image",
        str(IMAGES[2]),
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["results"][0]["settings"]["image"] == str(IMAGES[2])
