"""The interface every engine backend implements: what infer, evaluate, bench and serving call."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.model_files import ModelFiles


@dataclass(frozen=True)
class ReportedThreads:
    """The CPU thread count the engine reports back after loading (None: a GPU engine), and where it was read."""

    threads: int | None
    source: str
    precision: str = ""  # the float precision the engine runs non-quantized layers in, when it says


@dataclass(frozen=True)
class BareCall:
    """The engine's own API bound to one batch: no paddlecls-q code between the caller and the engine."""

    call: Callable[[], Any] | None
    description: str


class Runtime(ABC):
    """A loaded model on one engine: feed an NCHW float32 batch, get the class scores back.

    Use it as a context manager (or call `close()`) to free the engine and its buffers.
    """

    backend: str = ""

    def __init__(self, files: ModelFiles, options: RuntimeOptions) -> None:
        self.files = files
        self.options = options

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """NCHW input shape; -1 where the model leaves a dimension free."""

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch and return the first output as a (N, classes) array."""

    def reported_threads(self, batch: np.ndarray) -> ReportedThreads:
        """What the engine, once loaded for `batch`'s shape, says it really uses."""
        return ReportedThreads(None, "GPU engine: a CPU thread count does not apply")

    def bare_call(self, batch: np.ndarray) -> BareCall:
        """A zero-overhead callable running `batch` through the engine's own API (bench's "bare" column)."""
        return BareCall(None, "no lower-level loop for this engine")

    def engine_info(self) -> dict[str, Any]:
        """Engine name, version and the settings that shape its speed, for reports."""
        return {"backend": self.backend, "threads": self.options.threads, "quantized": self.files.is_quantized}

    def close(self) -> None:  # noqa: B027 - engines with nothing to free keep the default
        """Free the engine and everything it holds (sessions, device memory, streams); idempotent."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
