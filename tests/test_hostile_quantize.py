"""Hostile `quantize` use: an over-budget run never replaces an existing `<output>.rejected/` without --force."""

from __future__ import annotations

from pathlib import Path

import pytest
from quantize_support import partials, ptq_config, write_config
from typer.testing import CliRunner

from paddlecls_q.cli.app import app

pytest_plugins = ["quantize_support"]  # demo_model, fashion


@pytest.mark.slow
def test_an_over_budget_run_keeps_an_existing_rejected_folder(
    demo_model: Path, fashion: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_quantize import _fake_accuracy

    from paddlecls_q.quantize import pipeline

    monkeypatch.setattr(pipeline, "measure_accuracy", _fake_accuracy([1.5]))  # over budget without a long evaluation
    output, rejected = tmp_path / "int8", tmp_path / "int8.rejected"
    rejected.mkdir()
    (rejected / "mine.txt").write_text("keep")
    data = ptq_config(
        demo_model,
        fashion / "images" / "train",
        output,
        accuracy={"eval_list": str(fashion / "val_list.txt"), "max_drop": 0.3},
    )
    result = CliRunner().invoke(app, ["quantize", "--config", str(write_config(tmp_path, data))])
    assert result.exit_code == 2, result.output
    assert f"{rejected}: already exists" in result.output and "--force" in result.output
    assert [p.name for p in rejected.iterdir()] == ["mine.txt"] and (rejected / "mine.txt").read_text() == "keep"
    assert not output.exists() and partials(output) == [] and partials(rejected) == []
