"""`infer --ray` / `eval --ray` on a real local Ray: the same numbers as the in-process path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("ray", reason="the [serve] extra (ray) is not installed")

from paddlecls_q.cli import app  # noqa: E402
from paddlecls_q.datasets import write_fashion_mnist  # noqa: E402
from paddlecls_q.fashion_mnist import DEFAULT_ROOT  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not Path(DEFAULT_ROOT).is_dir():
        pytest.skip(f"dataset-fashion-mnist is not installed ({DEFAULT_ROOT})")
    folder = tmp_path_factory.mktemp("fashion") / "fashion"
    write_fashion_mnist(folder, limit=300)
    return folder


def test_eval_ray_equals_eval(fashion: Path) -> None:
    runner = CliRunner()
    arguments = ["eval", "--model", "demo", "--data", str(fashion), "--json"]
    local = runner.invoke(app, arguments)
    on_ray = runner.invoke(app, [*arguments, "--ray", "--replicas", "2"])
    assert local.exit_code == 0 and on_ray.exit_code == 0, on_ray.output
    expected, got = json.loads(local.stdout)["model"], json.loads(on_ray.stdout[on_ray.stdout.index("{"):])["model"]
    for key in ("top1", "top5", "count", "correct_top1", "correct_topk", "topk"):
        assert got[key] == expected[key], key
    assert got["engine"]["ray_replicas"] == 2
    # images/s counts the actors' working window; the whole pipeline (actor start, engine loads) is longer
    assert 0 < got["seconds"] <= got["engine"]["ray_pipeline_s"]


def test_infer_ray_jsonl_and_parquet_equal_infer(fashion: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    runner = CliRunner()
    images = sorted((fashion / "images").rglob("*.png"))[:12]
    folder = tmp_path / "few"
    folder.mkdir()
    for image in images:
        (folder / image.name).write_bytes(image.read_bytes())
    local = runner.invoke(app, ["infer", "--model", "demo", "--image", str(folder), "--json"])
    expected = json.loads(local.stdout)["predictions"]
    jsonl = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["infer", "--model", "demo", "--image", str(folder / "*.png"), "--ray", "--output", str(jsonl)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    for want, got in zip(expected, rows):
        assert Path(got["image"]).name == Path(want["image"]).name
        assert got["class_ids"] == want["class_ids"] and got["labels"] == want["labels"]
        assert got["scores"] == pytest.approx(want["scores"], rel=1e-6)
    assert len(rows) == len(expected)
    again = runner.invoke(app, ["infer", "--model", "demo", "--image", str(folder), "--ray", "--output", str(jsonl)])
    assert again.exit_code == 2 and "--force" in again.output
    parquet = tmp_path / "out.parquet"
    result = runner.invoke(app, ["infer", "--model", "demo", "--image", str(folder), "--ray", "--output", str(parquet), "--replicas", "2"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(parquet).to_pylist()
    assert [row["class_ids"] for row in table] == [row["class_ids"] for row in expected]
