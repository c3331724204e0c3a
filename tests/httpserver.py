"""A local stand-in for the model host: tiny real models packed like the published tarballs, and an
HTTP server on 127.0.0.1 that serves a folder with Range support and injectable faults.

Reusable by any test: `make_release(folder)` then `with serve_directory(folder) as server:` and pass
`mirror=server.url` (or set $PADDLECLS_Q_MIRROR) so the registry's URLs point at it.
"""

from __future__ import annotations

import collections
import io
import re
import shutil
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paddlecls_q  # noqa: F401  (before paddle: selects the legacy .pdmodel format)

INFERENCE_CLS_YAML_TEXT = """\
PreProcess:
  transform_ops:
    - ResizeImage:
        resize_short: 36
    - CropImage:
        size: 32
    - NormalizeImage:
        scale: 0.00392157
        mean: [0.485, 0.456, 0.406]
        std: [0.229, 0.224, 0.225]
        order: ''
    - ToCHWImage:
PostProcess:
  Topk:
    topk: 5
    class_id_map_file: labels.txt
"""
LABELS_TEXT = "".join(f"{i} class_{i}\n" for i in range(10))


def build_tiny_model(folder: Path) -> Path:
    """A real Paddle inference model (Conv2D+BN+pool+Linear, input x: [N,3,32,32]) saved as `inference.*`."""
    import paddle

    class TinyNet(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 4, 3)
            self.bn = paddle.nn.BatchNorm2D(4)
            self.pool = paddle.nn.AdaptiveAvgPool2D(1)
            self.fc = paddle.nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(paddle.flatten(self.pool(self.bn(self.conv(x))), 1))

    paddle.seed(0)
    net = TinyNet()
    net.eval()
    spec = [paddle.static.InputSpec([None, 3, 32, 32], "float32", name="x")]
    paddle.jit.save(net, str(folder / "inference"), input_spec=spec)
    return folder


def pack(archive: Path, folder: Path, arcname: str) -> Path:
    """Pack `folder` as `arcname/` into a .tar, .tgz/.tar.gz or .zip chosen by `archive`'s suffix."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "w") as bundle:
            for path in sorted(folder.rglob("*")):
                bundle.write(path, f"{arcname}/{path.relative_to(folder)}")
        return archive
    mode = "w:gz" if archive.name.endswith((".tgz", ".tar.gz")) else "w"
    with tarfile.open(archive, mode) as bundle:
        bundle.add(folder, arcname)
    return archive


def make_release(out: Path, model_dir: Path, padding_bytes: int = 0) -> Path:
    """Tarballs under the registry's file names, laid out like the published ones.

    FP32 folders hold the model, inference_cls.yaml and labels.txt; the ResNet50_vd quantized
    tarball lacks inference_cls.yaml (as the real PTQ tarballs do), the MobileNetV1_ssld one has it.
    `padding_bytes` adds an incompressible file to each, to make archives bigger than a small disk.
    """
    from paddlecls_q.registry import MODELS

    out.mkdir(parents=True, exist_ok=True)
    for entry in MODELS.values():
        for artifact, with_yaml in ((entry.fp32, True), (entry.quantized, entry.name != "ResNet50_vd")):
            if artifact is None:
                continue
            staging = out / f".staging-{artifact.folder}"
            shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns("*.info"))
            if with_yaml:
                (staging / "inference_cls.yaml").write_text(INFERENCE_CLS_YAML_TEXT)
                (staging / "labels.txt").write_text(LABELS_TEXT)
            if padding_bytes:
                (staging / "padding.bin").write_bytes(random_bytes(padding_bytes))
            pack(out / artifact.url.rsplit("/", 1)[-1], staging, artifact.folder)
            shutil.rmtree(staging)
    return out


def random_bytes(size: int) -> bytes:
    import random

    return random.Random(size).randbytes(size)


def tar_with(archive: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    """A tar holding exactly the given members (for hand-made malicious archives)."""
    with tarfile.open(archive, "w") as bundle:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            bundle.addfile(info, io.BytesIO(data) if data is not None else None)
    return archive


# ---- the server ----------------------------------------------------------------------------------


@dataclass
class Server:
    """A running server: `url`, the `requests` it saw (path, lower-cased headers) and per-file `faults`.

    faults[file name] is a list consumed one per request: "drop" (half the body, then close),
    "truncate" (all but the last 1000 bytes, then close), "empty" (headers only, then close),
    "stall" (a few bytes, then hang), "slow" (the body in small, delayed pieces),
    "ignore_range" (answer 200 with the whole file), or an HTTP status such as 404 or 500.
    """

    root: Path
    url: str = ""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    faults: dict[str, collections.deque] = field(default_factory=lambda: collections.defaultdict(collections.deque))
    stop: threading.Event = field(default_factory=threading.Event)

    def fail(self, filename: str, *faults: str | int) -> None:
        self.faults[filename].extend(faults)

    def requests_for(self, filename: str) -> list[dict[str, str]]:
        return [headers for path, headers in self.requests if path.rsplit("/", 1)[-1] == filename]


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            filename = self.path.split("?")[0].rsplit("/", 1)[-1]
            server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            queue = server.faults.get(filename)
            fault = queue.popleft() if queue else None
            path = server.root / filename
            if isinstance(fault, int) or not path.is_file():
                self.send_error(fault if isinstance(fault, int) else 404)
                return
            data = path.read_bytes()
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
            start = int(match.group(1)) if match and fault != "ignore_range" else 0
            if start >= len(data) > 0:
                self.send_error(416)
                return
            self.send_response(206 if match and fault != "ignore_range" else 200)
            if match and fault != "ignore_range":
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if fault == "drop":
                body = body[: len(body) // 2]
            elif fault == "truncate":
                body = body[: max(len(body) - 1000, 0)]
            elif fault == "empty":
                body = b""
            elif fault == "stall":
                self.wfile.write(body[:10])
                self.wfile.flush()
                server.stop.wait(30)
                return
            if fault == "slow":
                for offset in range(0, len(body), 256):
                    self.wfile.write(body[offset : offset + 256])
                    self.wfile.flush()
                    time.sleep(0.01)
            else:
                self.wfile.write(body)
            if fault in ("drop", "truncate", "empty"):
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

    return Handler


@contextmanager
def serve_directory(path: Path) -> Iterator[Server]:
    """Serve the files of `path` on http://127.0.0.1:<free port> in a background thread."""
    state = Server(root=Path(path))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.stop.set()
        httpd.shutdown()
        httpd.server_close()
