"""The machine and software a result was measured on: package versions, CPU model and flags, load."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The ISA extensions that decide which INT8 / FP16 kernels an engine can pick.
CPU_FLAGS = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
PACKAGES = (
    "paddlecls-q",
    "paddlepaddle",
    "paddlepaddle-gpu",
    "paddleslim",
    "paddle2onnx",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "tensorrt",
    "numpy",
    "opencv-python",
    "opencv-python-headless",
)


def package_versions(names: Iterable[str] = PACKAGES, missing: str | None = None) -> dict[str, str]:
    """Installed versions of `names`; a package that is not installed is left out, or given `missing`."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if missing is not None:
                versions[name] = missing
    return versions


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, rounded (None where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """The CPU model name and its ISA flags, from /proc/cpuinfo (no flags elsewhere)."""
    path = Path(cpuinfo)
    if not path.is_file():
        return platform.processor() or platform.machine(), set()
    model, flags = "", set[str]()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model or platform.processor(), flags


def vnni_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """This CPU's int8 dot-product extensions. Without one (AVX2 only) u8 x s8 kernels sum pairs of
    products in int16 (VPMADDUBSW), which saturates with full-range int8 weights."""
    return sorted(cpu_info(cpuinfo)[1] & VNNI_FLAGS)


def describe_environment(threads: int, load_average_before: list[float] | None = None) -> dict[str, Any]:
    """The machine record: CPU model and ISA flags, CPUs, threads, load, Python, platform, package versions."""
    model, flags = cpu_info()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu_model": model,
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "threads": threads,
        "opencv_threads": threads,
        "load_average_before": load_average_before,
        "load_average_after": load_average(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
    }
