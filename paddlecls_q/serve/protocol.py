"""Request parsing and validation for `serve`: raw-image /predict and the Open Inference Protocol v2 (KServe / Triton).

Pure functions over bytes, dicts and numpy arrays, so that every rule is unit-tested without a server.
Request data is only ever JSON-parsed or image-decoded: no pickle, no eval.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from paddlecls_q.preprocess import MAX_IMAGE_PIXELS

IMAGE_INPUT = "image"  # BYTES: encoded image files (PNG, JPEG, ...)
TENSOR_INPUT = "input"  # FP32: preprocessed NCHW batch
OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_CLASS_IDS = "class_ids"
MAX_TOPK = 1000


class RequestError(Exception):
    """A bad request: `status` is the HTTP code, the message is the one-line JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_body(message: str) -> dict[str, str]:
    """The one-line JSON error of every 4xx/5xx answer (Triton's and KServe's shape: {"error": ...})."""
    return {"error": " ".join(str(message).split())}


def check_size(length: int, max_bytes: int) -> None:
    """Refuse an empty body (400) or one over the limit (413)."""
    if length == 0:
        raise RequestError(400, "empty request body: send the encoded image bytes")
    if length > max_bytes:
        raise RequestError(413, f"request body is {length:,} bytes, the limit is {max_bytes:,} (--max-request-mb)")


def parse_topk(value: str | None, default: int) -> int:
    """`?topk=K`: a whole number from 1 to MAX_TOPK."""
    if value is None or value == "":
        return default
    if not value.isdigit() or not 1 <= int(value) <= MAX_TOPK:
        raise RequestError(400, f"topk must be a whole number from 1 to {MAX_TOPK}, got {value!r}")
    return int(value)


def _truncated(data: bytes) -> bool:
    """A JPEG without its end marker or a PNG without its IEND chunk (OpenCV decodes both, grey at the bottom)."""
    if data[:3] == b"\xff\xd8\xff":
        return b"\xff\xd9" not in data[-64:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-16:]
    return False


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes → RGB uint8 HWC, as `preprocess.read_image` decodes a file (cv2 IMREAD_COLOR, BGR→RGB)."""
    if not data:
        raise RequestError(400, "empty image")
    if _truncated(data):
        raise RequestError(400, f"truncated image ({len(data):,} bytes): the file ends before its end marker")
    try:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        raise RequestError(413, f"image too large: the limit is {MAX_IMAGE_PIXELS:,} pixels") from None
    if bgr is None:
        raise RequestError(415, f"not an image OpenCV can decode ({len(data):,} bytes; corrupt or unsupported format)")
    if bgr.shape[0] * bgr.shape[1] > MAX_IMAGE_PIXELS:
        raise RequestError(413, f"image too large: {bgr.shape[1]}x{bgr.shape[0]}, the limit is {MAX_IMAGE_PIXELS:,} pixels")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def top_classes(probabilities: np.ndarray, topk: int, labels: dict[int, str]) -> dict[str, list[Any]]:
    """/predict's answer for one image: the same ranking (stable argsort) as `infer --json`."""
    top = np.argsort(-probabilities, kind="stable")[:topk]
    return {
        "class_ids": [int(i) for i in top],
        "scores": [float(probabilities[i]) for i in top],
        "labels": [labels.get(int(i), "") for i in top],
    }


@dataclass
class InferRequest:
    """A parsed v2 infer request: either decoded images or a ready NCHW float32 tensor."""

    id: str | None
    images: list[np.ndarray] | None
    tensor: np.ndarray | None
    topk: int
    binary_output: bool = False


def split_binary_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON header and the binary tail of a v2 request (`Inference-Header-Content-Length`, Triton's extension)."""
    if header_length is None:
        json_part, tail = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise RequestError(400, f"Inference-Header-Content-Length {header_length!r} does not fit the {len(body)}-byte body")
        json_part, tail = body[: int(header_length)], body[int(header_length) :]
    try:
        document = json.loads(json_part)
    except (UnicodeDecodeError, ValueError) as error:
        raise RequestError(400, f"request is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise RequestError(400, "request JSON must be an object with an 'inputs' list")
    return document, tail


def _bytes_elements(raw: bytes) -> list[bytes]:
    """Triton's binary BYTES tensor: each element is a 4-byte little-endian length, then its bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RequestError(400, "BYTES tensor data is cut short (a length prefix is incomplete)")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise RequestError(400, f"BYTES tensor element of {size} bytes runs past the data")
        elements.append(raw[offset : offset + size])
        offset += size
    return elements


def _shape(entry: dict[str, Any], name: str) -> list[int]:
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestError(400, f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return shape


def parse_infer_request(
    document: dict[str, Any], tail: bytes, tensor_chw: tuple[int, ...], default_topk: int, max_batch: int
) -> InferRequest:
    """Validate a v2 infer request against the model: one input, `image` (BYTES) or `input` (FP32 N×C×H×W)."""
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(400, f"'inputs' must hold exactly one input: {IMAGE_INPUT!r} (BYTES) or {TENSOR_INPUT!r} (FP32)")
    entry = inputs[0]
    name, datatype = entry.get("name"), entry.get("datatype")
    shape = _shape(entry, str(name))
    parameters = entry.get("parameters") or {}
    binary_size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if binary_size is not None:
        if not isinstance(binary_size, int) or binary_size != len(tail):
            raise RequestError(400, f"input {name!r}: binary_data_size {binary_size!r} but {len(tail)} bytes follow the JSON")
    elif "data" not in entry:
        raise RequestError(400, f"input {name!r} has neither 'data' nor binary data")
    topk = _requested_topk(document, default_topk)
    binary_output = bool((document.get("parameters") or {}).get("binary_data_output", False))
    request_id = document.get("id") if isinstance(document.get("id"), str) else None
    count = int(np.prod(shape)) if shape else 0
    if name == IMAGE_INPUT:
        if datatype != "BYTES":
            raise RequestError(400, f"input {IMAGE_INPUT!r} must be BYTES (encoded images), got datatype {datatype!r}")
        if len(shape) != 1 or not 1 <= shape[0] <= max_batch:
            raise RequestError(400, f"input {IMAGE_INPUT!r}: shape must be [N] with 1 <= N <= {max_batch}, got {shape}")
        encoded = _bytes_elements(tail) if binary_size is not None else _json_bytes(entry["data"])
        if len(encoded) != count:
            raise RequestError(400, f"input {IMAGE_INPUT!r}: shape {shape} but {len(encoded)} elements")
        return InferRequest(request_id, [decode_image(item) for item in encoded], None, topk, binary_output)
    if name == TENSOR_INPUT:
        if datatype != "FP32":
            raise RequestError(400, f"input {TENSOR_INPUT!r} must be FP32, got datatype {datatype!r}")
        expected = [shape[0] if shape else 0, *tensor_chw]
        if len(shape) != 4 or shape[1:] != list(tensor_chw) or not 1 <= shape[0] <= max_batch:
            raise RequestError(400, f"input {TENSOR_INPUT!r}: shape must be [N, {', '.join(map(str, tensor_chw))}] with 1 <= N <= {max_batch}, got {shape}")
        if binary_size is not None:
            if len(tail) != 4 * count:
                raise RequestError(400, f"input {TENSOR_INPUT!r}: shape {shape} needs {4 * count} bytes of FP32, got {len(tail)}")
            tensor = np.frombuffer(tail, dtype="<f4").astype(np.float32)
        else:
            tensor = _json_floats(entry["data"], count)
        return InferRequest(request_id, None, tensor.reshape(expected), topk, binary_output)
    raise RequestError(400, f"unknown input {name!r}: this model takes {IMAGE_INPUT!r} (BYTES) or {TENSOR_INPUT!r} (FP32 NCHW)")


def _requested_topk(document: dict[str, Any], default: int) -> int:
    parameters = document.get("parameters") or {}
    value = parameters.get("topk", default) if isinstance(parameters, dict) else default
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TOPK:
        raise RequestError(400, f"parameter topk must be a whole number from 1 to {MAX_TOPK}, got {value!r}")
    return value


def _json_bytes(data: Any) -> list[bytes]:
    """BYTES elements in JSON: base64 strings (JSON has no raw bytes)."""
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise RequestError(400, f"input {IMAGE_INPUT!r}: JSON 'data' must be a list of base64 strings")
    try:
        return [base64.b64decode(item, validate=True) for item in data]
    except (binascii.Error, ValueError):
        raise RequestError(400, f"input {IMAGE_INPUT!r}: 'data' holds a string that is not base64") from None


def _json_floats(data: Any, count: int) -> np.ndarray:
    if not isinstance(data, list):
        raise RequestError(400, f"input {TENSOR_INPUT!r}: 'data' must be a list of numbers")
    try:
        tensor = np.asarray(data, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise RequestError(400, f"input {TENSOR_INPUT!r}: 'data' must hold numbers only") from None
    if tensor.size != count:
        raise RequestError(400, f"input {TENSOR_INPUT!r}: shape needs {count} values, got {tensor.size}")
    if not np.isfinite(tensor).all():
        raise RequestError(400, f"input {TENSOR_INPUT!r}: 'data' holds NaN or infinity")
    return tensor


def infer_response(
    model_name: str, request_id: str | None, probabilities: np.ndarray, topk: int
) -> dict[str, Any]:
    """v2 response: FP32 `probabilities` [N, classes] and INT64 `class_ids` [N, k] (top-k, best first), as JSON data."""
    k = min(topk, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": "1",
        "outputs": [
            {
                "name": OUTPUT_PROBABILITIES,
                "datatype": "FP32",
                "shape": list(probabilities.shape),
                "data": probabilities.reshape(-1).tolist(),
            },
            {"name": OUTPUT_CLASS_IDS, "datatype": "INT64", "shape": list(top.shape), "data": top.reshape(-1).tolist()},
        ],
    }
    if request_id is not None:
        response["id"] = request_id
    return response


def model_metadata(
    name: str, tensor_chw: tuple[int, ...], num_classes: int, engine: dict[str, Any]
) -> dict[str, Any]:
    """v2 model metadata: both accepted inputs (send one), the outputs, and the engine, backend and precision."""
    return {
        "name": name,
        "versions": ["1"],
        "platform": f"paddlecls-q_{engine.get('backend', '')}",
        "inputs": [
            {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
            {"name": TENSOR_INPUT, "datatype": "FP32", "shape": [-1, *tensor_chw]},
        ],
        "outputs": [
            {"name": OUTPUT_PROBABILITIES, "datatype": "FP32", "shape": [-1, num_classes]},
            {"name": OUTPUT_CLASS_IDS, "datatype": "INT64", "shape": [-1, -1]},
        ],
        "parameters": {
            "backend": engine.get("backend", ""),
            "engine": str(engine.get("engine", "")),
            "precision": "int8" if engine.get("quantized") else "fp32",
        },
    }
