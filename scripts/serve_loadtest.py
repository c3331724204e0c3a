"""Load and fault tests of `serve` on the demo model: C = 1, 8, 32 with batching on and off, then a killed replica.

Prints JSON lines (one per run). Run from the repository root: python scripts/serve_loadtest.py [--seconds 8]
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
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from paddlecls_q import registry
from paddlecls_q.config import RuntimeOptions
from paddlecls_q.infer import Classifier
from paddlecls_q.preprocess import read_image
from paddlecls_q.serve.loadtest import run_load


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(port: int, *flags: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "paddlecls_q", "serve", "--model", "demo", "--port", str(port), *flags]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "Ctrl-C to stop" in line or not line:
            break
    return process


def stop_server(process: subprocess.Popen) -> None:
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


def in_process_ms(image: Path, repeats: int = 300) -> float:
    """Median end-to-end latency in-process: read + preprocess + engine + softmax check, batch 1."""
    classifier = Classifier(registry.DEMO_MODEL_DIR, RuntimeOptions(backend="ort", threads=1))
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        classifier.predict([read_image(image)])
        times.append((time.perf_counter() - began) * 1000)
    return float(np.median(times[20:]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fault-seconds", type=float, default=30.0)
    arguments = parser.parse_args()
    image = registry.DEMO_IMAGE
    body = image.read_bytes()
    print(json.dumps({"run": "in-process", "p50_ms": in_process_ms(image)}), flush=True)
    for label, flags in (("batching on", ["--max-batch-size", "16", "--batch-wait-ms", "2"]), ("batching off", ["--max-batch-size", "1", "--batch-wait-ms", "0"])):
        port = free_port()
        process = start_server(port, *flags)
        try:
            url = f"http://127.0.0.1:{port}/predict"
            asyncio.run(run_load(url, body, 4, 2.0))  # warm-up
            for concurrency in (1, 8, 32):
                report = asyncio.run(run_load(url, body, concurrency, arguments.seconds))
                print(json.dumps({"run": label, **asdict(report)}), flush=True)
        finally:
            stop_server(process)
    port = free_port()
    process = start_server(port, "--replicas", "2", "--max-batch-size", "16", "--batch-wait-ms", "2")
    try:
        url = f"http://127.0.0.1:{port}/predict"
        expected = json.loads(subprocess.run(
            [sys.executable, "-m", "paddlecls_q", "infer", "--model", "demo", "--image", str(image), "--json"],
            capture_output=True, text=True, check=True).stdout)["predictions"][0]["class_ids"]
        asyncio.run(run_load(url, body, 4, 2.0))

        async def load_and_kill() -> dict:
            load = asyncio.create_task(run_load(url, body, 32, arguments.fault_seconds, expected_class_ids=expected))
            await asyncio.sleep(arguments.fault_seconds / 3)
            victims = replica_pids()
            os.kill(victims[0], signal.SIGKILL)
            killed_at = time.perf_counter()
            report = await load
            return {"killed_pid": victims[0], "replicas_before": len(victims), "killed_at_s": killed_at, **asdict(report)}

        print(json.dumps({"run": "fault: 2 replicas, one SIGKILLed", **asyncio.run(load_and_kill())}), flush=True)
        time.sleep(5)
        print(json.dumps({"run": "after fault", "replicas_now": len(replica_pids())}), flush=True)
    finally:
        stop_server(process)


if __name__ == "__main__":
    main()
