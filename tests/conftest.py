"""Shared fixtures: a private cache, the bundled demo model, and full-size reference models made on demand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import paddlecls_q  # noqa: F401  (sets FLAGS_enable_pir_api before any test imports paddle)
from paddlecls_q import registry


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep ONNX conversions and downloads of the test run out of the user's cache."""
    home = tmp_path_factory.mktemp("paddlecls_q_home")
    os.environ["PADDLECLS_Q_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def demo_model_dir() -> Path:
    return registry.DEMO_MODEL_DIR


@pytest.fixture(scope="session")
def photo() -> Path:
    """A real ImageNet validation photo (500x375 JPEG)."""
    return registry.DEFAULT_PHOTO


@pytest.fixture(scope="session")
def fashion_image() -> Path:
    return registry.DEMO_IMAGE


@pytest.fixture(scope="session")
def mobilenet_v1_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full-size PaddleClas MobileNetV1 (1000 classes, seeded weights) with an ImageNet inference_cls.yaml."""
    from paddlecls_q.models.export import make_reference_model

    return make_reference_model("MobileNetV1", tmp_path_factory.mktemp("models") / "MobileNetV1")
