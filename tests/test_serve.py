"""`paddlecls-q serve` end to end: a real local Ray started by the command, requests over 127.0.0.1, then SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from paddlecls_q.serve.loadtest import descendants

pytest.importorskip("ray", reason="the [serve] extra (ray) is not installed")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow

NAME = "demo"
STARTUP_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One `serve` process (local Ray, batching on) for the whole module; the last test stops it."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    command = [sys.executable, "-m", "paddlecls_q", "serve", "--model", "demo", "--name", NAME, "--port", str(port)]
    command += ["--max-batch-size", "4", "--batch-wait-ms", "5", "--max-request-mb", "0.25"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline and process.poll() is None:
        if "Ctrl-C to stop" in log.read_text(errors="replace"):
            break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"serve did not start: {log.read_text(errors='replace')[-2000:]}")
    yield {"url": url, "process": process, "log": log, "replica_ports": _replica_ports(log)}
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def _replica_ports(log: Path) -> list[int]:
    """The replica ports `serve` printed (direct ingress), [] when it printed none."""
    found = re.search(r"replicas directly on ports? ([\d, ]+) —", log.read_text(errors="replace"))
    return [int(port) for port in found.group(1).split(", ")] if found else []


def _infer_json(image: Path, topk: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "paddlecls_q", "infer", "--model", "demo", "--image", str(image), "--json", "--topk", str(topk)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)["predictions"][0]


def test_predict_equals_infer_json(server, fashion_image: Path, photo: Path) -> None:
    for image in (fashion_image, photo):
        expected = _infer_json(image, 3)
        response = httpx.post(f"{server['url']}/predict?topk=3", content=image.read_bytes(), headers={"Content-Type": "image/png"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer == {key: expected[key] for key in ("class_ids", "scores", "labels")}
        assert int(response.headers["x-batch-size"]) >= 1


def test_v2_with_tritonclient(server, fashion_image: Path) -> None:
    http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
    from paddlecls_q.infer import Classifier
    from paddlecls_q.config import RuntimeOptions
    from paddlecls_q import registry

    client = http.InferenceServerClient(url=server["url"].removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    metadata = client.get_model_metadata(NAME)
    assert metadata["parameters"]["precision"] == "fp32"
    assert [entry["name"] for entry in metadata["inputs"]] == ["image", "input"]

    encoded = np.array([fashion_image.read_bytes()] * 2, dtype=np.object_)
    image_input = http.InferInput("image", [2], "BYTES")
    image_input.set_data_from_numpy(encoded, binary_data=True)
    by_image = client.infer(NAME, [image_input]).as_numpy("probabilities")

    local = Classifier(registry.DEMO_MODEL_DIR, RuntimeOptions(backend="ort"))
    from paddlecls_q.preprocess import read_image

    tensor = local.preprocess.batch([read_image(fashion_image)])
    expected = local.predict([read_image(fashion_image)])
    tensor_input = http.InferInput("input", list(tensor.shape), "FP32")
    tensor_input.set_data_from_numpy(tensor, binary_data=False)
    result = client.infer(NAME, [tensor_input])
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_image, np.repeat(expected, 2, axis=0), rtol=1e-5, atol=1e-6)
    assert int(result.as_numpy("class_ids")[0, 0]) == int(expected[0].argmax())

    wrong = http.InferInput("input", [1, 3, 16, 16], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(Exception, match="shape must be"):
        client.infer(NAME, [wrong])


BAD_REQUESTS = [
    ("predict", b"this is not an image", 415, "not an image"),
    ("predict", b"", 400, "empty"),
    ("predict", "truncated", 400, "truncated"),
    ("predict", b"\xff" * 300_000, 413, "limit"),
    ("infer", {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}]}, 400, "shape"),
    ("infer", {"inputs": [{"name": "input", "datatype": "INT8", "shape": [1, 3, 32, 32], "data": [0] * 3072}]}, 400, "FP32"),
    ("infer", {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["bm90IGFuIGltYWdl"]}]}, 415, "not an image"),
    ("unknown", {"inputs": []}, 404, "unknown model"),
]


@pytest.mark.parametrize(("route", "body", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_one_line_4xx_and_server_keeps_serving(server, fashion_image: Path, route, body, status, message) -> None:
    url = server["url"]
    if body == "truncated":
        body = fashion_image.read_bytes()[:-40]
    if route == "predict":
        response = httpx.post(f"{url}/predict", content=body, headers={"Content-Type": "image/png"})
    else:
        name = NAME if route == "infer" else "no_such_model"
        response = httpx.post(f"{url}/v2/models/{name}/infer", content=json.dumps(body))
    assert response.status_code == status, response.text
    assert "\n" not in response.text and message in response.json()["error"]
    assert httpx.post(f"{url}/predict", content=fashion_image.read_bytes()).status_code == 200


def test_a_bad_image_among_concurrent_requests_fails_alone(server, fashion_image: Path) -> None:
    """Requests batched together are decoded in the batch's worker: a body that does not decode gets its 415, the rest 200."""
    import asyncio

    url = f"{server['url']}/predict"
    good = fashion_image.read_bytes()
    expected = httpx.post(url, content=good).json()
    bodies = [b"this is not an image" if i % 4 == 1 else good for i in range(16)]

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(url, content=body) for body in bodies))

    responses = asyncio.run(send_all())
    for body, response in zip(bodies, responses):
        if body == good:
            assert response.status_code == 200 and response.json() == expected, response.text
        else:
            assert response.status_code == 415 and "not an image" in response.json()["error"], response.text


def test_unknown_path_is_404_and_wrong_method_405_one_line_json(server) -> None:
    url = server["url"]
    for method, path, status, message in (("GET", "/predict", 405, "use POST"), ("GET", "/no/such/path", 404, "no route"),
                                          ("POST", "/v2/health/live", 405, "use GET")):
        response = httpx.request(method, f"{url}{path}")
        assert response.status_code == status, response.text
        assert "\n" not in response.text and message in response.json()["error"]
    assert httpx.get(f"{url}/v2/").json()["name"] == "paddlecls-q"  # a trailing slash is the same route


def test_bench_serve_reports_every_concurrency(server, fashion_image: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from paddlecls_q.cli import app

    arguments = ["bench", "--serve", server["url"], "--image", str(fashion_image), "--concurrency", "1,6", "--seconds", "1.5"]
    result = CliRunner().invoke(app, [*arguments, "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["schema"] == "paddlecls-q/bench-serve"
    runs = document["runs"]
    assert [run["concurrency"] for run in runs] == [1, 6]
    for run in runs:
        assert run["ok"] > 0 and run["requests"] == run["ok"] and run["errors"] == {}
        assert 0 < run["p50_ms"] <= run["p90_ms"] <= run["p99_ms"]
        assert run["client_cpu_ms"] > 0  # the load generator's own CPU per answered request
        sizes = {int(size) for size in run["batch_sizes"]}
        assert sizes and sizes <= {1, 2, 3, 4}  # the fixture's --max-batch-size 4
        assert sum(run["batch_sizes"].values()) == run["ok"]
    assert set(runs[0]["batch_sizes"]) == {"1"}  # one client: every engine call held its request alone
    markdown = tmp_path / "serve.md"
    result = CliRunner().invoke(app, [*arguments[:-4], "--concurrency", "2", "--requests", "5", "--format", "markdown", "--output", str(markdown)])
    assert result.exit_code == 0, result.output
    lines = markdown.read_text().splitlines()
    assert lines[0].startswith("| C | requests |") and lines[2].startswith("| 2 | 5 |")


def test_bench_serve_without_a_server_is_one_line(fashion_image: Path) -> None:
    from typer.testing import CliRunner

    from paddlecls_q.cli import app

    for url, message in ((f"http://127.0.0.1:{_free_port()}", "no server answers"), ("ftp://x", "root URL")):
        result = CliRunner().invoke(app, ["bench", "--serve", url, "--image", str(fashion_image), "--seconds", "1"])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_direct_ingress_is_the_default_and_the_replica_port_answers_as_the_proxy(server, fashion_image: Path) -> None:
    """With the local Ray, the replica answers on its own port (no proxy hop) exactly as through the proxy."""
    ports = server["replica_ports"]
    assert len(ports) == 1 and ports[0] > int(server["url"].rsplit(":", 1)[1]), server["log"].read_text(errors="replace")[-2000:]
    body = fashion_image.read_bytes()
    through_proxy = httpx.post(f"{server['url']}/predict?topk=3", content=body)
    direct = httpx.post(f"http://127.0.0.1:{ports[0]}/predict?topk=3", content=body)
    assert through_proxy.status_code == direct.status_code == 200, direct.text
    assert direct.json() == through_proxy.json() == {key: _infer_json(fashion_image, 3)[key] for key in ("class_ids", "scores", "labels")}
    bad = httpx.post(f"http://127.0.0.1:{ports[0]}/predict", content=b"not an image")
    assert bad.status_code == 415 and "not an image" in bad.json()["error"]


def test_replicas_run_at_the_commands_priority(server) -> None:
    """Ray nices its workers to 15 unless told otherwise; serve's replicas keep the command's niceness."""
    process = server["process"]
    replicas = [pid for pid in descendants(process.pid) if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ServeReplica")]
    assert replicas
    assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in replicas} == {os.getpriority(os.PRIO_PROCESS, process.pid)}


def test_sigterm_stops_serve_and_its_ray(server) -> None:
    """Last in the module: SIGTERM to the command alone; every process it started must be gone."""
    process = server["process"]
    below = descendants(process.pid)
    assert below, "ray's processes should run below the serve command"
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 0, server["log"].read_text(errors="replace")[-2000:]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(pid) for pid in below):
        time.sleep(0.5)
    assert not [pid for pid in below if _alive(pid)]


def test_no_direct_ingress_serves_through_the_proxy_only_and_stops_clean(fashion_image: Path, tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "paddlecls_q", "serve", "--model", "demo", "--port", str(port), "--no-direct-ingress"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline and process.poll() is None and "Ctrl-C to stop" not in log.read_text(errors="replace"):
            time.sleep(0.5)
        assert "Ctrl-C to stop" in log.read_text(errors="replace"), log.read_text(errors="replace")[-2000:]
        assert _replica_ports(log) == []
        body = fashion_image.read_bytes()
        answer = httpx.post(f"http://127.0.0.1:{port}/predict?topk=3", content=body)
        assert answer.status_code == 200 and answer.json()["class_ids"] == _infer_json(fashion_image, 3)["class_ids"]
        with pytest.raises(httpx.ConnectError):
            httpx.post(f"http://127.0.0.1:{port + 1}/predict", content=body)
        below = descendants(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0, log.read_text(errors="replace")[-2000:]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in below):
            time.sleep(0.5)
        assert not [pid for pid in below if _alive(pid)]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def test_direct_ingress_refuses_a_cluster_address() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "paddlecls_q", "serve", "--model", "demo", "--direct-ingress", "--address", "10.0.0.1:6379"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "--direct-ingress needs the local Ray" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
