"""`serve` on Ray Serve: one deployment per model, each replica one engine with dynamic batching.

Routes: `POST /predict` (raw image bytes, `?topk=K`) and the Open Inference Protocol v2 (`/v2/health/*`,
`/v2/models/{name}`, `/v2/models/{name}/infer`). Every replica loads the engine once; batcher.Batcher gathers
up to `max_batch_size` /predict bodies, decodes and preprocesses them and calls the engine, all in one worker
thread (so that requests keep arriving meanwhile; a lone fast request inline), waiting at most `batch_wait_ms` and
only for requests already inside the replica: a lone request is never delayed.

The deployment's `__call__` routes the requests itself (ROUTES): FastAPI's middleware, router and dependency
resolution cost ~0.15 ms of CPU per request, an eighth of what a direct-ingress replica spends (docs/serve.md).
"""

import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paddlecls_q.config import RuntimeOptions
from paddlecls_q.errors import BackendUnavailableError
from paddlecls_q.serve.batcher import Batcher

PREDICT_CONTENT_TYPES = ("image/", "application/octet-stream")
BATCH_SIZE_HEADER = "x-batch-size"  # engine batch that answered: lets the load generator count batch sizes
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000, 5000]
BATCH_BOUNDARIES = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
# (HTTP method, path pattern) -> the deployment's handler; a path's `name` is the model name of the v2 API.
ROUTES = [
    ("POST", re.compile(r"/predict"), "predict"),
    ("GET", re.compile(r"/v2"), "server_metadata"),
    ("GET", re.compile(r"/v2/health/live"), "live"),
    ("GET", re.compile(r"/v2/health/ready"), "ready"),
    ("GET", re.compile(r"/v2/models/(?P<name>[^/]+)"), "metadata"),
    ("GET", re.compile(r"/v2/models/(?P<name>[^/]+)/ready"), "model_ready"),
    ("POST", re.compile(r"/v2/models/(?P<name>[^/]+)/infer"), "infer"),
]


@dataclass(frozen=True)
class ServeSettings:
    """What one `serve` deployment needs: the model, its engine options and the batching knobs."""

    model_dir: Path
    name: str
    options: RuntimeOptions
    replicas: int = 1
    max_batch_size: int = 8
    batch_wait_ms: float = 2.0
    max_request_mb: float = 20.0
    label_file: Path | None = None
    direct_ingress: bool = False


def require_ray() -> Any:
    """The `ray` module, or a one-line error naming the extra to install."""
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(
            "this needs Ray (Serve and Data), which is not installed: pip install 'paddlecls-q[serve]'"
        ) from None
    return ray


def build_application(settings: ServeSettings) -> Any:
    """The Ray Serve application (a bound deployment) serving `settings.model_dir` under `settings.name`."""
    require_ray()
    from ray import serve
    from ray.serve.metrics import Counter, Histogram
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from paddlecls_q.serve import protocol

    @serve.deployment(
        name=settings.name,
        num_replicas=settings.replicas,
        ray_actor_options={"num_cpus": settings.options.threads},
        max_ongoing_requests=max(64, 4 * settings.max_batch_size),
        health_check_period_s=2,
        logging_config={"enable_access_log": False},  # one log line per request: ~5 % of the replica's CPU
    )
    class ClassifierDeployment:
        def __init__(self, settings: ServeSettings) -> None:
            from paddlecls_q.infer import Classifier

            self.settings = settings
            self.max_bytes = int(settings.max_request_mb * (1 << 20))
            self.classifier = Classifier(settings.model_dir, settings.options, settings.label_file)
            declared = self.classifier.runtime.input_shape
            self.fixed_batch = int(declared[0]) if declared and declared[0] and declared[0] > 0 else 0
            probe = self.classifier.preprocess(np.zeros((256, 256, 3), np.uint8))
            self.tensor_chw = tuple(int(d) for d in probe.shape)
            self.tensor_dtype = probe.dtype
            self.num_classes = int(self._infer(probe[None]).shape[1])  # warm-up, and the class count
            self.labels = self.classifier.labels_for(self.num_classes)
            self.engine = self.classifier.runtime.engine_info()
            self.requests = Counter(
                "paddlecls_q_requests", description="Requests by route and HTTP status.", tag_keys=("route", "status"),  # type: ignore[arg-type]
            )
            self.latency = Histogram(
                "paddlecls_q_request_latency_ms",
                description="Time in the replica per request.",
                boundaries=LATENCY_BOUNDARIES_MS,
                tag_keys=("route",),
            )
            self.batch_sizes = Histogram(
                "paddlecls_q_batch_size", description="Images per engine call.", boundaries=BATCH_BOUNDARIES
            )
            self.batcher = Batcher(self._infer, settings.max_batch_size, settings.batch_wait_ms / 1000, self.batch_sizes.observe)

        def _infer(self, batch: np.ndarray) -> np.ndarray:
            """Class probabilities of a preprocessed batch (split and padded for a model with a fixed batch)."""
            from paddlecls_q.postprocess import to_probabilities

            runtime = self.classifier.runtime
            if not self.fixed_batch or len(batch) == self.fixed_batch:
                return to_probabilities(runtime.infer(batch))
            rows = []
            for start in range(0, len(batch), self.fixed_batch):
                part = batch[start : start + self.fixed_batch]
                padded = np.concatenate([part, np.repeat(part[-1:], self.fixed_batch - len(part), axis=0)])
                rows.append(to_probabilities(runtime.infer(padded))[: len(part)])
            return np.concatenate(rows)

        def _prepare(self, body: bytes) -> np.ndarray:
            """A /predict body's tensor: decoded and preprocessed in the batch's worker (a bad image: its own 4xx)."""
            return self.classifier.preprocess(protocol.decode_image(body))

        async def _read_body(self, request: Request) -> bytes:
            declared = request.headers.get("content-length", "")
            if declared.isdigit():
                protocol.check_size(int(declared), self.max_bytes)
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_bytes:
                    protocol.check_size(size, self.max_bytes)
                chunks.append(chunk)
            body = b"".join(chunks)
            protocol.check_size(len(body), self.max_bytes)
            return body

        def _answer(self, route: str, began: float, payload: dict[str, Any], status: int = 200, batch: int = 0) -> JSONResponse:
            self.requests.inc(tags={"route": route, "status": str(status)})
            self.latency.observe((time.perf_counter() - began) * 1000, tags={"route": route})
            headers = {BATCH_SIZE_HEADER: str(batch)} if batch else None
            return JSONResponse(payload, status_code=status, headers=headers)

        def _check_model(self, name: str) -> None:
            if name != self.settings.name:
                raise protocol.RequestError(404, f"unknown model {name!r}: this server serves {self.settings.name!r}")

        async def __call__(self, request: Request) -> JSONResponse:
            """Route a request to its handler; an unknown path is a 404 and a known one with another method a 405."""
            path, allowed = request.url.path.rstrip("/") or "/", []
            for method, pattern, handler in ROUTES:
                found = pattern.fullmatch(path)
                if found and method == request.method:
                    return await getattr(self, handler)(request, **found.groupdict())
                if found:
                    allowed.append(method)
            status, message = (405, f"{request.method} {path}: use {' or '.join(allowed)}") if allowed else (404, f"no route {path}")
            return JSONResponse(protocol.error_body(message), status_code=status)

        async def predict(self, request: Request) -> JSONResponse:
            began = time.perf_counter()
            try:
                content_type = request.headers.get("content-type", "application/octet-stream")
                if not content_type.startswith(PREDICT_CONTENT_TYPES):
                    raise protocol.RequestError(415, f"Content-Type {content_type!r}: send the image bytes as image/* or application/octet-stream")
                topk = protocol.parse_topk(request.query_params.get("topk"), self.classifier.config.topk)
                with self.batcher.arriving_request():
                    body = await self._read_body(request)
                probabilities, batch = await self.batcher.classify([body], self._prepare)
            except protocol.RequestError as error:
                return self._answer("predict", began, protocol.error_body(str(error)), error.status)
            return self._answer("predict", began, protocol.top_classes(probabilities[0], topk, self.labels), batch=batch)

        async def server_metadata(self, _request: Request) -> JSONResponse:
            from paddlecls_q import __version__

            return JSONResponse({"name": "paddlecls-q", "version": __version__, "extensions": ["binary_tensor_data"]})

        async def live(self, _request: Request) -> JSONResponse:
            return JSONResponse({"live": True})

        async def ready(self, _request: Request) -> JSONResponse:
            return JSONResponse({"ready": True})

        async def metadata(self, _request: Request, name: str) -> JSONResponse:
            began = time.perf_counter()
            try:
                self._check_model(name)
            except protocol.RequestError as error:
                return self._answer("metadata", began, protocol.error_body(str(error)), error.status)
            document = protocol.model_metadata(name, self.tensor_chw, self.num_classes, self.engine)
            return self._answer("metadata", began, document)

        async def model_ready(self, _request: Request, name: str) -> JSONResponse:
            began = time.perf_counter()
            try:
                self._check_model(name)
            except protocol.RequestError as error:
                return self._answer("ready", began, protocol.error_body(str(error)), error.status)
            return self._answer("ready", began, {"name": name, "ready": True})

        async def infer(self, request: Request, name: str) -> JSONResponse:
            began = time.perf_counter()
            try:
                self._check_model(name)
                with self.batcher.arriving_request():
                    body = await self._read_body(request)
                    document, tail = protocol.split_binary_body(body, request.headers.get("inference-header-content-length"))
                    parsed = protocol.parse_infer_request(
                        document, tail, self.tensor_chw, self.classifier.config.topk, self.settings.max_batch_size * 16
                    )
                    if parsed.images is not None:
                        tensors = [self.classifier.preprocess(image) for image in parsed.images]
                        if any(t.shape != tensors[0].shape for t in tensors):
                            raise protocol.RequestError(400, "images preprocess to different shapes; this model's yaml has no fixed crop")
                    else:
                        assert parsed.tensor is not None  # parse_infer_request gives images or a tensor
                        tensors = list(parsed.tensor.astype(self.tensor_dtype, copy=False))
                probabilities, batch = await self.batcher.classify(tensors)
            except protocol.RequestError as error:
                return self._answer("infer", began, protocol.error_body(str(error)), error.status)
            document = protocol.infer_response(name, parsed.id, probabilities, parsed.topk)
            return self._answer("infer", began, document, batch=batch)

    return ClassifierDeployment.bind(settings)  # type: ignore[attr-defined]


def enable_direct_ingress(port: int, replicas: int) -> None:
    """Ray Serve's (experimental) direct ingress: each replica also serves HTTP itself, from `port + 1` up.

    A request to a replica's own port skips the HTTP proxy and its Ray actor calls (proxy → replica, and the
    replica fetching the body back from the proxy): ~9 ms of the C = 1 latency on 2 shared cores (docs/serve.md).
    Must run before `ray.serve` is imported: Ray reads these once, in every process, from the environment.
    """
    os.environ.update({
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port + 1),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + direct_port_span(replicas)),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    })


def direct_port_span(replicas: int) -> int:
    """How many ports above `--port` the replicas may take: Ray gives a replacement a new one, and skips busy ones."""
    return 4 * replicas + 16


def replica_ports(host: str, port: int, replicas: int, timeout_s: float = 0.2) -> list[int]:
    """The ports above `port` where one of our replicas answers `/v2/health/live` (Ray picks them at start-up)."""
    import http.client
    import json

    probe_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    found = []
    for candidate in range(port + 1, port + direct_port_span(replicas) + 1):
        connection = http.client.HTTPConnection(probe_host, candidate, timeout=timeout_s)
        try:
            connection.request("GET", "/v2/health/live")
            response = connection.getresponse()
            if response.status == 200 and json.loads(response.read()) == {"live": True}:
                found.append(candidate)
        except (OSError, ValueError, http.client.HTTPException):
            continue
        finally:
            connection.close()
    return found


def ray_address(address: str | None) -> str:
    """`--address`, else RAY_ADDRESS, else "local": start a Ray of our own (never join a stray local cluster)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


# Ray Serve settings for the replicas (read once per process at import; a user's own value wins). User code on the
# replica's main event loop instead of a thread of its own: every request then skips two cross-thread hops
# (measured: the direct-ingress replica's CPU per request 1.77 -> 1.25 ms, docs/serve.md).
REPLICA_RAY_SETTINGS = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}


# The local Ray's workers at the driver's priority: Ray nices them to 15 (to favour its own daemons), so on a shared
# machine every other job outranks the replicas (ResNet50_vd INT8, C = 1, back to back: +3.6 -> +1.1 ms, docs/serve.md).
LOCAL_RAY_SYSTEM_CONFIG = {"worker_niceness": 0}


def worker_env() -> dict[str, str]:
    """Environment the replicas need on any node: our cache folder and import path, where set, and our Ray settings."""
    env = {key: os.environ[key] for key in ("PADDLECLS_Q_HOME", "PYTHONPATH") if key in os.environ}
    return {**env, **{key: os.environ.get(key, value) for key, value in REPLICA_RAY_SETTINGS.items()}}


def run_server(
    settings: ServeSettings, host: str, port: int, address: str | None, on_ready: Any = None, stop: threading.Event | None = None
) -> None:
    """Start Ray (or join `address`), deploy, call `on_ready(url)`, then serve until SIGINT/SIGTERM or `stop` is set.

    On the way out the application is deleted; Serve and Ray are shut down when this call started them.
    """
    ray = require_ray()
    from ray import serve

    target = ray_address(address)
    started = target == "local"
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    try:
        init: dict[str, Any] = {"include_dashboard": False, "runtime_env": {"env_vars": worker_env()}}
        if started:
            cpus = os.cpu_count() or 1
            init["num_cpus"] = max(cpus, settings.replicas * settings.options.threads)
            init["_system_config"] = LOCAL_RAY_SYSTEM_CONFIG
        ray.init(address=target, logging_level="warning", log_to_driver=False, **init)
        try:
            serve.start(http_options={"host": host, "port": port})
            try:
                serve.run(build_application(settings), name=settings.name, route_prefix="/", blocking=False)
            except (RuntimeError, ray.exceptions.RayError) as error:
                last = [line for line in str(error).strip().splitlines() if line.strip()][-1:] or [type(error).__name__]
                raise BackendUnavailableError(f"the {settings.name!r} deployment failed to start: {last[0].strip()}") from None
            # After ray.init, which installs a SIGTERM handler of its own for drivers.
            if threading.current_thread() is threading.main_thread():
                for number in (signal.SIGINT, signal.SIGTERM):
                    previous[number] = signal.signal(number, lambda *_: stop.set())
            if on_ready is not None:
                on_ready(f"http://{host}:{port}")
            while not stop.wait(0.5):
                pass
        finally:
            if started and not settings.direct_ingress:  # direct ingress drains for 30 s; ray.shutdown ends it all
                serve.shutdown()
            elif not started:
                serve.delete(settings.name)
            ray.shutdown()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
