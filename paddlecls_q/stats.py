"""Summary statistics of latency samples: what the bench tables report for each engine and precision."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Above this coefficient of variation a measurement is flagged: the machine was busy or the engine unstable.
NOISY_CV = 0.10


@dataclass(frozen=True)
class LatencyStats:
    """Latency of `count` timed calls, in milliseconds.

    Percentiles interpolate linearly between samples (numpy's default); `stdev` is the sample
    standard deviation (n - 1) and `cv` = stdev / mean, the coefficient of variation.
    """

    count: int
    mean: float
    median: float
    p90: float
    p99: float
    min: float
    max: float
    stdev: float
    cv: float

    @property
    def noisy(self) -> bool:
        return self.cv > NOISY_CV

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def summarize(samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
    """Statistics of latency samples in milliseconds; ValueError on an empty or non-finite sample."""
    samples = np.asarray(samples_ms, dtype=np.float64).ravel()
    if samples.size == 0:
        raise ValueError("no latency samples to summarize")
    if not np.all(np.isfinite(samples)) or samples.min() < 0:
        raise ValueError("latency samples must be finite and non-negative")
    mean = float(samples.mean())
    stdev = float(samples.std(ddof=1)) if samples.size > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(samples, [50, 90, 99]))
    return LatencyStats(
        count=int(samples.size),
        mean=mean,
        median=p50,
        p90=p90,
        p99=p99,
        min=float(samples.min()),
        max=float(samples.max()),
        stdev=stdev,
        cv=stdev / mean if mean > 0 else 0.0,
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator
