"""Load test of `serve` (what `make serve-bench` runs): in-process latency, then C = 1, 8, 32 with batching on and off.

Modes: `on` (batch <= 16 within 2 ms) and `off` through Ray Serve's HTTP proxy, `direct` and `direct-off` the
same sent straight to the replica's own port (`serve --direct-ingress`). For each mode it starts `paddlecls-q serve`, runs `bench --serve`'s load generator
(paddlecls_q/serve/loadtest.py) and stops the server with SIGTERM. `--fault-seconds S` adds the fault test:
2 replicas, 32 clients for S seconds, one replica SIGKILLed a third of the way in.

    python scripts/serve_loadtest.py --seconds 8
    python scripts/serve_loadtest.py --model-dir DIR --backend openvino --image photo.jpeg --seconds 20
    python scripts/serve_loadtest.py --modes on --concurrency 32 --fault-seconds 24

Prints one JSON line per run, then a markdown table and the C = 1 comparison: one client alternating an
in-process call (decode, preprocess, engine, top-k) with a /predict round trip, medians of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paddlecls_q import registry  # noqa: E402
from paddlecls_q.cli.serve import batch_size_summary  # noqa: E402
from paddlecls_q.config import RuntimeOptions  # noqa: E402
from paddlecls_q.infer import Classifier  # noqa: E402
from paddlecls_q.postprocess import to_probabilities  # noqa: E402
from paddlecls_q.serve import protocol  # noqa: E402
from paddlecls_q.serve.loadtest import LoadReport, bench_server, run_load  # noqa: E402

BATCHING_ON = ["--max-batch-size", "16", "--batch-wait-ms", "2"]
BATCHING_OFF = ["--max-batch-size", "1", "--batch-wait-ms", "0"]
# Batching on / off through Ray Serve's HTTP proxy, and straight to the replica's own port (--direct-ingress).
MODES = {"on": BATCHING_ON, "off": BATCHING_OFF, "direct": [*BATCHING_ON, "--direct-ingress"],
         "direct-off": [*BATCHING_OFF, "--direct-ingress"]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, backend: str, port: int, *flags: str) -> subprocess.Popen:
    """`paddlecls-q serve` in the background, its output in a temporary log (a pipe nobody reads would fill up)."""
    command = [sys.executable, "-m", "paddlecls_q", "serve", "--model-dir", str(model_dir), "--backend", backend]
    log = tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log", delete=False)
    process = subprocess.Popen([*command, "--port", str(port), *flags], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        if "Ctrl-C to stop" in Path(log.name).read_text(errors="replace"):
            return process
        time.sleep(0.5)
    stop_server(process)
    raise SystemExit(f"serve did not start (exit {process.returncode}); its log: {log.name}")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(120)


def replica_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::ServeReplica"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class InProcess:
    """What a /predict request does, in this process: decode the bytes, preprocess, engine, top-k."""

    def __init__(self, model_dir: Path, backend: str) -> None:
        self.classifier = Classifier(model_dir, RuntimeOptions(backend=backend, threads=1))

    def __call__(self, body: bytes) -> dict:
        tensor = self.classifier.preprocess(protocol.decode_image(body))
        probabilities = to_probabilities(self.classifier.runtime.infer(tensor[None]))[0]
        labels = self.classifier.labels_for(len(probabilities))
        return protocol.top_classes(probabilities, self.classifier.config.topk, labels)


async def paired_c1(local: InProcess, url: str, body: bytes, seconds: float) -> tuple[float, float, int]:
    """Median ms of in-process calls and of /predict round trips, alternated one by one (a drifting machine
    slows both alike): in-process, serve, and the number of pairs."""
    import aiohttp

    local_ms, serve_ms = [], []
    async with aiohttp.ClientSession() as session:
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at or len(local_ms) < 10:
            began = time.perf_counter()
            local(body)
            local_ms.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            async with session.post(url, data=body) as response:
                await response.read()
                response.raise_for_status()
            serve_ms.append((time.perf_counter() - began) * 1000)
    return float(np.median(local_ms)), float(np.median(serve_ms)), len(local_ms)


def fault_test(model_dir: Path, backend: str, body: bytes, seconds: float) -> None:
    port = free_port()
    process = start_server(model_dir, backend, port, "--replicas", "2", *MODES["on"])
    try:
        url = f"http://127.0.0.1:{port}/predict"
        expected = json.loads(asyncio.run(_one_answer(url, body)))["class_ids"]
        asyncio.run(run_load(url, body, 4, 2.0))

        async def load_and_kill() -> dict:
            load = asyncio.create_task(run_load(url, body, 32, seconds, expected_class_ids=expected))
            await asyncio.sleep(seconds / 3)
            victims = replica_pids()
            os.kill(victims[0], signal.SIGKILL)
            report = await load
            return {"killed_pid": victims[0], "replicas_before": len(victims), **asdict(report)}

        print(json.dumps({"run": "fault: 2 replicas, one SIGKILLed", **asyncio.run(load_and_kill())}), flush=True)
        time.sleep(5)
        print(json.dumps({"run": "after fault", "replicas_now": len(replica_pids())}), flush=True)
    finally:
        stop_server(process)


async def _one_answer(url: str, body: bytes) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
        return await response.text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=registry.DEMO_MODEL_DIR)
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--image", type=Path, default=registry.DEMO_IMAGE)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--modes", default="on,off,direct,direct-off", help="comma-separated: on, off, direct, direct-off")
    parser.add_argument("--fault-seconds", type=float, default=0.0, help="0: no fault test")
    arguments = parser.parse_args()
    body = arguments.image.read_bytes()
    concurrencies = tuple(int(c) for c in arguments.concurrency.split(","))
    local = InProcess(arguments.model_dir, arguments.backend)
    local(body)  # warm-up
    results: list[tuple[str, LoadReport]] = []
    pairs: dict[str, tuple[float, float, int]] = {}
    for mode in arguments.modes.split(","):
        port = free_port()
        process = start_server(arguments.model_dir, arguments.backend, port, *MODES[mode])
        try:
            url = f"http://127.0.0.1:{port + 1 if mode.startswith('direct') else port}"
            for report in bench_server(url, body, concurrencies, arguments.seconds, warmup_s=2.0):
                results.append((mode, report))
                print(json.dumps({"run": f"batching {mode}", **asdict(report)}), flush=True)
            pairs[mode] = asyncio.run(paired_c1(local, f"{url}/predict", body, arguments.seconds))
            print(json.dumps({"run": f"C = 1 paired, {mode}", "in_process_ms": pairs[mode][0], "serve_ms": pairs[mode][1],
                              "pairs": pairs[mode][2]}), flush=True)
        finally:
            stop_server(process)
    if arguments.fault_seconds > 0:
        fault_test(arguments.model_dir, arguments.backend, body, arguments.fault_seconds)
    print(f"\n{arguments.model_dir.name}, {arguments.backend}, 1 thread, 1 replica; load average {os.getloadavg()[0]:.1f}\n")
    print("| batching | C | requests/s | p50 ms | p90 ms | p99 ms | errors | batch sizes seen |\n|---|---|---|---|---|---|---|---|")
    for mode, r in results:
        print(f"| {mode} | {r.concurrency} | {r.throughput:.1f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | "
              f"{sum(r.errors.values())} | {batch_size_summary(r.batch_sizes)} |")
    for mode, (local_ms, serve_ms, count) in pairs.items():
        print(f"C = 1, {mode}, {count} alternated pairs: serve p50 {serve_ms:.2f} ms vs in-process {local_ms:.2f} ms: "
              f"+{serve_ms - local_ms:.2f} ms, {serve_ms / local_ms:.1f}x (goal: <= in-process + 2 ms)")
    by_mode = {(mode, r.concurrency): r for mode, r in results}
    for on_mode, off_mode in (("on", "off"), ("direct", "direct-off")):
        if (on_mode, 32) in by_mode and (off_mode, 32) in by_mode:
            on, off = by_mode[on_mode, 32], by_mode[off_mode, 32]
            print(f"C = 32, {on_mode} / {off_mode}: throughput {on.throughput / off.throughput:.2f}x (goal >= 1.5), "
                  f"p99 / p50 with batching {on.p99_ms / on.p50_ms:.2f} (goal <= 4)")


if __name__ == "__main__":
    main()
