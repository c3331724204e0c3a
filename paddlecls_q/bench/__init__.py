"""Measure what INT8 bought: runtime and end-to-end latency of a model and its INT8 version on each engine.

settings.py says what to measure (and which cells can run here), measure.py times the cells,
results.py holds what was found. See measure.py's docstring for the schedule.
"""

from paddlecls_q.bench.measure import opencv_threads, run_benchmark
from paddlecls_q.bench.results import (
    BenchResult,
    CellResult,
    ThreadCheck,
    compare_to_fp32,
    measured_accuracy,
    run_warnings,
)
from paddlecls_q.bench.settings import (
    BACKEND_NAMES,
    CPU_BACKENDS,
    GPU_MODE_SUPPORT,
    BenchModels,
    BenchSettings,
    Mode,
    make_settings,
    match_registry_model,
    not_available_reason,
    parse_choices,
    resolve_models,
)
from paddlecls_q.environment import describe_environment
from paddlecls_q.model_files import read_quantize_report
from paddlecls_q.postprocess import top_k, top_k_probabilities

__all__ = [
    "BACKEND_NAMES",
    "CPU_BACKENDS",
    "GPU_MODE_SUPPORT",
    "BenchModels",
    "BenchResult",
    "BenchSettings",
    "CellResult",
    "Mode",
    "ThreadCheck",
    "compare_to_fp32",
    "describe_environment",
    "make_settings",
    "match_registry_model",
    "measured_accuracy",
    "not_available_reason",
    "opencv_threads",
    "parse_choices",
    "read_quantize_report",
    "resolve_models",
    "run_benchmark",
    "run_warnings",
    "top_k",
    "top_k_probabilities",
]
