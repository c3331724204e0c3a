"""`bench --batch-sizes`: images/s per engine × precision × threads × batch size and peak RSS, on the demo model
and its real PaddleSlim INT8 version, each engine in its own child process. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_bench import invoke, model_pair  # noqa: F401 - model_pair is the shared session fixture

from helpers import assert_one_line_error
from paddlecls_q import bench, report
from paddlecls_q.bench.throughput import peak_rss_kib, run_throughput
from paddlecls_q.cli.app import JSON_SCHEMA_VERSION, console


@pytest.fixture(scope="module")
def throughput(model_pair: tuple[Path, Path]) -> list[dict]:  # noqa: F811
    models = bench.resolve_models(model_pair[0], model_pair[1], None)
    settings = bench.make_settings(batch_sizes="1,4", threads_list="1,2", throughput_images=4)
    return run_throughput(models, settings)


def test_every_engine_and_precision_runs_every_batch_size_and_thread_count(throughput: list[dict]) -> None:
    assert [(record["backend"], record["mode"]) for record in throughput] == [
        (backend, mode) for backend in ("paddle", "ort", "openvino") for mode in ("fp32", "int8")
    ]  # the GPU modes are not available on the CPU, so they have no row
    for record in throughput:
        assert record["status"] == "ok", record["reason"]
        assert [(rate["threads"], rate["batch"]) for rate in record["rates"]] == [(1, 1), (1, 4), (2, 1), (2, 4)]
        for rate in record["rates"]:
            assert rate["images_per_second"] > 0 and rate["reason"] == ""
            assert rate["images_per_second"] == pytest.approx(rate["batch"] * 1000 / rate["ms_per_batch"])
            assert rate["calls"] == (4 if rate["batch"] == 1 else 3)  # 4 images, at least 3 calls
        assert 20 < record["peak_rss_mib"] < 8192


def test_peak_rss_is_at_least_what_this_process_holds_now() -> None:
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, every page touched
    status = Path("/proc/self/status").read_text(encoding="ascii")
    resident = int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])
    assert peak_rss_kib() >= resident >= block.nbytes // 1024


def test_tables_and_json_carry_the_throughput(
    model_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    fp32, int8 = model_pair
    output = tmp_path / "bench.json"
    result = invoke(
        "--model-dir", str(fp32), "--int8-dir", str(int8), "--backends", "ort", "--iters", "2", "--warmup", "0",
        "--batch-sizes", "1,2", "--throughput-images", "2", "--format", "json", "--output", str(output),
    )
    assert result.exit_code == 0, result.output
    (loaded,) = report.load_json(output, JSON_SCHEMA_VERSION)
    assert [(record["backend"], record["mode"]) for record in loaded.throughput] == [("ort", "fp32"), ("ort", "int8")]
    markdown = report.render_markdown([loaded])
    assert "### Throughput and memory" in markdown
    headers, rows = report.throughput_table([loaded])
    assert headers[3:] == ["threads", "batch 1 (img/s)", "batch 2 (img/s)", "peak RSS (MiB)"]
    assert [row[1:4] for row in rows] == [["ONNX Runtime", "FP32", "1"], ["ONNX Runtime", "INT8", "1"]]
    document = json.loads(output.read_text())
    assert document["results"][0]["settings"]["batch_sizes"] == [1, 2]
    monkeypatch.setattr(console, "_width", 80)  # restored afterwards (setting .width would stick)
    plain = invoke("--from-json", str(output))
    assert plain.exit_code == 0 and "Throughput: images/s at batch 1, 2; peak RSS" in plain.output
    lines = plain.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("┃ engine ") and "┃ RSS MiB ┃" in line for line in lines)  # one header line


def test_without_batch_sizes_no_throughput_is_measured(model_pair: tuple[Path, Path]) -> None:  # noqa: F811
    models = bench.resolve_models(model_pair[0], None, None)
    result = bench.run_benchmark(models, bench.make_settings(backends="ort", modes="fp32", iters=2, warmup=0))
    assert result.throughput == [] and "Throughput" not in report.render_markdown([result])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-sizes", "1,x"], "batch size 'x' is not a whole number"),
        (["--batch-sizes", ","], "no batch size given"),
        (["--batch-sizes", "0"], "batch_sizes"),
        (["--batch-sizes", "1", "--threads-list", "0"], "threads_list"),
        (["--threads-list", "2"], "give --batch-sizes too"),
        (["--batch-sizes", "1", "--throughput-images", "0"], "throughput_images"),
    ],
)
def test_bad_throughput_options_are_one_line_errors(
    model_pair: tuple[Path, Path], args: list[str], message: str  # noqa: F811
) -> None:
    assert_one_line_error(invoke("--model-dir", str(model_pair[0]), *args), 2, message)
