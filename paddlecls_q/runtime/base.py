"""The small interface every engine backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.model_files import ModelFiles


class Runtime(ABC):
    """A loaded model on one engine: feed an NCHW float32 batch, get the class scores back."""

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

    def engine_info(self) -> dict[str, Any]:
        """Engine name, version and the settings that shape its speed, for reports."""
        return {"backend": self.backend, "threads": self.options.threads, "quantized": self.files.is_quantized}
