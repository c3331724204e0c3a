"""The PaddleClas architectures, their export to inference-model folders, the Fashion-MNIST reader, the demo model."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import paddle  # conftest imported paddlecls_q first, which turns the PIR API off
import pytest
import yaml

from paddlecls_q.config import load_inference_cls_yaml
from paddlecls_q.errors import InputError
from paddlecls_q.fashion_mnist import read_idx
from paddlecls_q.models.export import export_inference_model, make_inference_cls_yaml, settle_batch_norm
from paddlecls_q.models.mobilenet_v1 import MobileNetV1
from paddlecls_q.models.resnet_vd import ResNet50_vd

SMALL_OPS = [
    {"ResizeImage": {"size": 64}},
    {"NormalizeImage": {"scale": 0.00392157, "mean": [0.5] * 3, "std": [0.5] * 3, "order": ""}},
    {"ToCHWImage": None},
]


def trainable_params(layer: paddle.nn.Layer) -> int:
    return sum(int(np.prod(p.shape)) for p in layer.parameters() if p.trainable)


@pytest.mark.parametrize(("build", "expected"), [(ResNet50_vd, 25.6e6), (MobileNetV1, 4.2e6)])
def test_param_counts_match_paddleclas(build, expected: float) -> None:
    assert abs(trainable_params(build()) - expected) <= 0.1e6


def test_exported_model_matches_dygraph(tmp_path: Path) -> None:
    paddle.seed(1)
    model = MobileNetV1(scale=0.25, class_num=7)
    settle_batch_norm(model, paddle.randn([8, 3, 64, 64]))
    labels = [f"{i} class {i}" for i in range(7)]
    folder = export_inference_model(
        model, tmp_path / "m", (1, 3, 64, 64), make_inference_cls_yaml(SMALL_OPS, 3), labels
    )

    assert {p.name for p in folder.iterdir()} == {
        "inference.pdmodel",
        "inference.pdiparams",
        "inference_cls.yaml",
        "label_list.txt",
    }
    config = load_inference_cls_yaml(folder / "inference_cls.yaml")
    assert config.topk == 3 and config.class_id_map_file == "label_list.txt"
    assert (folder / "label_list.txt").read_text().splitlines() == labels

    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with paddle.no_grad():
        expected = model(paddle.to_tensor(x)).numpy()
    predictor_config = paddle.inference.Config(str(folder / "inference.pdmodel"), str(folder / "inference.pdiparams"))
    predictor_config.enable_mkldnn()
    predictor_config.disable_glog_info()
    predictor = paddle.inference.create_predictor(predictor_config)
    assert predictor.get_input_names() == ["x"]
    predictor.get_input_handle("x").copy_from_cpu(x)
    predictor.run()
    actual = predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()
    assert actual.shape == (2, 7)
    assert expected.std() > 1e-3  # settled BN: logits vary, the comparison means something
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_export_without_labels_leaves_no_label_file(tmp_path: Path) -> None:
    model = MobileNetV1(scale=0.25, class_num=3)
    folder = export_inference_model(model, tmp_path, (1, 3, 32, 32), make_inference_cls_yaml(SMALL_OPS, 1))
    assert not (folder / "label_list.txt").exists()
    assert "class_id_map_file" not in yaml.safe_load((folder / "inference_cls.yaml").read_text())["PostProcess"]["Topk"]


def write_idx(path: Path, data: np.ndarray, compress: bool = True) -> Path:
    raw = struct.pack(">BBBB", 0, 0, 0x08, data.ndim) + struct.pack(f">{data.ndim}I", *data.shape) + data.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_read_idx_round_trips(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "x-idx3-ubyte.gz", data)), data)
    np.testing.assert_array_equal(
        read_idx(write_idx(tmp_path / "y-idx1-ubyte", data[0, 0], compress=False)), data[0, 0]
    )


def test_read_idx_rejects_truncated_and_corrupt_files(tmp_path: Path) -> None:
    good = write_idx(tmp_path / "good.gz", np.zeros((4, 28, 28), np.uint8))
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(gzip.compress(gzip.decompress(good.read_bytes())[:-10]))
    bad_magic = tmp_path / "bad_magic"
    bad_magic.write_bytes(b"\x12\x34\x08\x01\x00\x00\x00\x01\x00")
    not_gzip = tmp_path / "not_gzip.gz"
    not_gzip.write_bytes(b"this is not gzip")
    for path in (truncated, bad_magic, not_gzip, tmp_path / "missing.gz"):
        with pytest.raises(InputError, match=path.name):
            read_idx(path)


def test_bundled_demo_model_is_complete(demo_model_dir: Path) -> None:
    for name in ("inference.pdmodel", "inference.pdiparams", "inference_cls.yaml", "label_list.txt"):
        assert (demo_model_dir / name).is_file(), name
    config = load_inference_cls_yaml(demo_model_dir / "inference_cls.yaml")
    assert config.class_id_map_file == "label_list.txt"
    assert len((demo_model_dir / "label_list.txt").read_text().splitlines()) == 10
