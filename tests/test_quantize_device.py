"""Where PTQ/QAT run: the place decision for every (device, paddle build, GPU count), and the real
CPU build of paddle here refusing a GPU with one line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from paddlecls_q.cli import app
from paddlecls_q.errors import ConfigError
from paddlecls_q.quantize.paddle_patches import check_quantize_device, quantize_device, static_mode


@pytest.mark.parametrize(
    ("device", "expected"),
    [("cpu", ("cpu", 0)), ("gpu", ("gpu", 0)), ("GPU:1", ("gpu", 1)), ("'gpu:0'", ("gpu", 0))],
)
def test_a_cuda_build_with_two_gpus_gives_the_asked_place(device: str, expected: tuple[str, int]) -> None:
    assert quantize_device(device, compiled_with_cuda=True, gpu_count=2) == expected


def test_a_gpu_index_past_the_machine_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"device 'gpu:2': paddle sees 2 GPU\(s\)"):
        quantize_device("gpu:2", compiled_with_cuda=True, gpu_count=2)
    with pytest.raises(ConfigError, match=r"paddle sees 0 GPU"):
        quantize_device("gpu", compiled_with_cuda=True, gpu_count=0)


def test_the_cpu_build_refuses_a_gpu_and_names_the_package() -> None:
    with pytest.raises(ConfigError, match="CPU build.*paddlepaddle-gpu"):
        quantize_device("gpu:0", compiled_with_cuda=False, gpu_count=0)
    assert quantize_device("cpu", compiled_with_cuda=False, gpu_count=0) == ("cpu", 0)


def test_an_unknown_device_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        quantize_device("tpu", compiled_with_cuda=True, gpu_count=1)


def test_the_installed_paddle_decides() -> None:
    import paddle

    assert check_quantize_device("cpu") == ("cpu", 0)
    if paddle.is_compiled_with_cuda():
        pytest.skip("paddle here is a CUDA build; the CPU-build refusal can't be shown")
    with pytest.raises(ConfigError, match="CPU build"):
        check_quantize_device("gpu")


def test_static_mode_restores_the_device_and_the_gpu_selection() -> None:
    import paddle

    before = paddle.get_device()
    selected = os.environ.get("FLAGS_selected_gpus")
    with static_mode(onednn=True, device="cpu") as executor:
        assert paddle.get_device() == "cpu"
        assert isinstance(executor.place, paddle.CPUPlace) or "cpu" in str(executor.place).lower()
    assert paddle.get_device() == before
    assert os.environ.get("FLAGS_selected_gpus") == selected
    assert paddle.in_dynamic_mode()


def test_quantize_with_a_gpu_on_the_cpu_build_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import paddle

    if paddle.is_compiled_with_cuda():
        pytest.skip("paddle here is a CUDA build")
    config = tmp_path / "q.yaml"
    config.write_text("Global:\n  model_dir: nowhere\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["quantize", "--config", str(config), "--device", "gpu:1"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "device 'gpu:1'" in lines[0] and "Traceback" not in result.output
