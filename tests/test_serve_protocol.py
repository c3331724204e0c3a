"""Request parsing and validation of `serve` (protocol.py): pure functions, no server, no Ray."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from paddlecls_q.preprocess import read_image
from paddlecls_q.serve import protocol
from paddlecls_q.serve.protocol import RequestError

CHW = (3, 32, 32)


def _status(call, *args) -> tuple[int, str]:
    with pytest.raises(RequestError) as caught:
        call(*args)
    return caught.value.status, str(caught.value)


def test_decode_image_matches_read_image(fashion_image: Path, photo: Path) -> None:
    for image in (fashion_image, photo):
        np.testing.assert_array_equal(protocol.decode_image(image.read_bytes()), read_image(image))


def test_decode_image_refuses_bad_bytes(fashion_image: Path, photo: Path) -> None:
    assert _status(protocol.decode_image, b"")[0] == 400
    assert _status(protocol.decode_image, b"GIF89a not really")[0] == 415
    for image in (fashion_image, photo):
        status, message = _status(protocol.decode_image, image.read_bytes()[:-100])
        assert status == 400 and "truncated" in message


def test_sizes_and_topk() -> None:
    assert _status(protocol.check_size, 0, 10)[0] == 400
    assert _status(protocol.check_size, 11, 10)[0] == 413
    protocol.check_size(10, 10)
    assert protocol.parse_topk(None, 5) == 5 and protocol.parse_topk("3", 5) == 3
    for bad in ("0", "-1", "x", "1001"):
        assert _status(protocol.parse_topk, bad, 5)[0] == 400


def test_top_classes_ranks_like_infer() -> None:
    answer = protocol.top_classes(np.array([0.1, 0.5, 0.1, 0.3], np.float32), 3, {1: "b"})
    assert answer["class_ids"] == [1, 3, 0] and answer["labels"] == ["b", "", ""]


def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_binary_bytes_input_as_tritonclient_sends_it(fashion_image: Path) -> None:
    data = fashion_image.read_bytes()
    raw = _bytes_tensor([data, data])
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}]}).encode()
    document, tail = protocol.split_binary_body(header + raw, str(len(header)))
    parsed = protocol.parse_infer_request(document, tail, CHW, 5, 64)
    assert len(parsed.images) == 2 and parsed.tensor is None
    np.testing.assert_array_equal(parsed.images[1], read_image(fashion_image))


def test_json_inputs_base64_and_fp32(fashion_image: Path) -> None:
    encoded = base64.b64encode(fashion_image.read_bytes()).decode()
    parsed = protocol.parse_infer_request({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [encoded]}]}, b"", CHW, 5, 64)
    assert len(parsed.images) == 1
    values = np.arange(2 * 3 * 32 * 32, dtype=np.float32)
    document = {"id": "r1", "parameters": {"topk": 2}, "inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 3, 32, 32], "data": values.tolist()}]}
    parsed = protocol.parse_infer_request(document, b"", CHW, 5, 64)
    assert parsed.tensor.shape == (2, 3, 32, 32) and parsed.topk == 2 and parsed.id == "r1"
    np.testing.assert_array_equal(parsed.tensor.reshape(-1), values)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "exactly one input"),
        ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 16, 16], "data": [0.0] * 768}]}, "shape must be"),
        ({"inputs": [{"name": "input", "datatype": "FP16", "shape": [1, 3, 32, 32], "data": [0.0] * 3072}]}, "must be FP32"),
        ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [0.0] * 5}]}, "needs 3072 values"),
        ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": ["a"] * 3072}]}, "numbers only"),
        ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1], "data": ["aa=="]}]}, "must be BYTES"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}, "not base64"),
        ({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0]}]}, "unknown input"),
        ({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32]}]}, "neither 'data'"),
        ({"parameters": {"topk": 0}, "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aa=="]}]}, "topk"),
    ],
)
def test_bad_infer_requests_are_400(document: dict, message: str) -> None:
    status, text = _status(protocol.parse_infer_request, document, b"", CHW, 5, 64)
    assert status == 400 and message in text


def test_bad_bodies() -> None:
    assert "not valid JSON" in _status(protocol.split_binary_body, b"{nope", None)[1]
    assert "does not fit" in _status(protocol.split_binary_body, b"{}", "99")[1]
    assert "cut short" in _status(protocol._bytes_elements, b"\x05\x00")[1]


def test_response_and_metadata_shapes() -> None:
    probabilities = np.array([[0.1, 0.7, 0.2]], np.float32)
    response = protocol.infer_response("m", "r1", probabilities, 2)
    assert response["id"] == "r1" and response["outputs"][1]["data"] == [1, 2]
    metadata = protocol.model_metadata("m", CHW, 3, {"backend": "ort", "quantized": True})
    assert metadata["parameters"]["precision"] == "int8" and metadata["inputs"][1]["shape"] == [-1, 3, 32, 32]
    assert protocol.error_body("two\nlines") == {"error": "two lines"}


def test_serve_without_ray_names_the_extra() -> None:
    import subprocess
    import sys

    code = "import sys; sys.modules['ray'] = None\nfrom paddlecls_q.cli import app\napp(['serve', '--model', 'demo'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: this needs Ray (Serve and Data), which is not installed: pip install 'paddlecls-q[serve]'"]
