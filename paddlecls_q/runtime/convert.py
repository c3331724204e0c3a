"""Paddle → ONNX conversion through paddle2onnx, run in a child process and cached by model hash.

paddle2onnx can abort the whole process on models it dislikes, so it never runs in ours.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from paddlecls_q.errors import ModelFormatError
from paddlecls_q.model_files import ModelFiles
from paddlecls_q.registry import cache_home

OPSET_VERSION = 13
CONVERT_TIMEOUT_S = 900


def onnx_model_for(files: ModelFiles, backend: str, cache_dir: Path | None = None) -> Path:
    """The ONNX file an ONNX-reading engine should load.

    A folder written by `quantize` carries `inference.<backend>.onnx` in that engine's preferred
    Q/DQ encoding; an ONNX model folder is its own ONNX file; otherwise the Paddle model is converted
    once and cached by content hash.
    """
    prepared = files.folder / f"inference.{backend}.onnx"
    if prepared.is_file():
        return prepared
    if files.format == "onnx":
        return files.program
    cache = (cache_dir or cache_home()) / "onnx"
    target = cache / f"{files.content_hash()}.onnx"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    try:
        paddle_to_onnx(files.program, files.params, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return target


def paddle_to_onnx(program: Path, params: Path, target: Path) -> Path:
    """Convert one Paddle model to ONNX at `target` with paddle2onnx in a child process.

    The only place paddle2onnx runs: it can abort the whole process on models it dislikes, so it
    never runs in ours. Raises ModelFormatError with paddle2onnx's last line when it fails, or
    after CONVERT_TIMEOUT_S.
    """
    command = [sys.executable, "-m", "paddlecls_q.runtime.convert", str(program), str(params), str(target)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelFormatError(f"{program}: paddle2onnx did not finish in {CONVERT_TIMEOUT_S} s") from None
    if result.returncode != 0 or not target.is_file():
        lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit code {result.returncode}"
        raise ModelFormatError(f"{program}: paddle2onnx could not convert the model: {reason}")
    return target


def _convert(program: str, params: str, output: str) -> None:
    import paddle2onnx

    paddle2onnx.export(
        program,
        params,
        output,
        opset_version=OPSET_VERSION,
        verbose=False,
        enable_onnx_checker=True,
        deploy_backend="onnxruntime",
    )


if __name__ == "__main__":
    _convert(*sys.argv[1:4])
