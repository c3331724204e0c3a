"""Load test of `serve` (what `make serve-bench` runs): the goals' side-by-side measurements, then the load table.

Paths: `direct` sends to the replica's own port (`serve`'s default, Ray's direct ingress), `proxy` to `--port`
through Ray Serve's HTTP proxy (`serve --no-direct-ingress`). Batching: `on` (<= 16 within 2 ms) or `off` (1).

1. C = 1 against in-process, per path with batching on: one client alternating an in-process call (decode,
   preprocess, engine, top-k: what /predict does) with a /predict round trip, `--pairs` pairs; the difference of
   the medians with a 95 % bootstrap interval (pairs resampled).
2. Batching on / off at C = 32, per path: both servers up at once, `--rounds` rounds of one load run each,
   the order alternating (on, off / off, on / ...): throughput ratio and p99 / p50 per round, the ratios'
   geometric mean with a 95 % bootstrap interval, and per run the CPU per answered request of the replica
   process (from /proc) and of this load generator.
3. The load table, C = 1, 8, 32 (`--concurrency`) for every path x batching (`--no-table`: not).
4. `--fault-seconds S`: 2 replicas, 32 clients through the proxy for S seconds, one replica SIGKILLed a third in.

    python scripts/serve_loadtest.py --seconds 8
    python scripts/serve_loadtest.py --model-dir DIR --backend openvino --image photo.jpeg --paths direct --rounds 0
    python scripts/serve_loadtest.py --rounds 0 --pairs 0 --no-table --fault-seconds 24

Prints one JSON line per measurement, then markdown tables and the goal lines, with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
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
from paddlecls_q.serve.loadtest import descendants  # noqa: E402
from paddlecls_q.serve import protocol  # noqa: E402
from paddlecls_q.serve.loadtest import LoadReport, bench_server, run_load  # noqa: E402

BATCHING = {"on": ["--max-batch-size", "16", "--batch-wait-ms", "2"], "off": ["--max-batch-size", "1", "--batch-wait-ms", "0"]}
PATHS = {"direct": ["--direct-ingress"], "proxy": ["--no-direct-ingress"]}
BOOTSTRAP_SAMPLES = 2000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`paddlecls-q serve` in the background (its output in a temporary log: a pipe nobody reads would fill up)."""

    def __init__(self, model_dir: Path, backend: str, path: str, batching: str, *extra: str) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "paddlecls_q", "serve", "--model-dir", str(model_dir), "--backend", backend,
                   "--port", str(self.port), *PATHS[path], *BATCHING[batching], *extra]
        self.log = Path(tempfile.NamedTemporaryFile(prefix="serve-", suffix=".log", delete=False).name)
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        self.path = path

    def wait_ready(self) -> str:
        """The URL to load: the replica's own port for `direct`, `--port` for `proxy`."""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and self.process.poll() is None:
            text = self.log.read_text(errors="replace")
            if "Ctrl-C to stop" in text:
                found = re.search(r"replicas directly on ports? (\d+)", text)
                if self.path == "direct" and not found:
                    break
                return f"http://127.0.0.1:{found.group(1) if self.path == 'direct' else self.port}"
            time.sleep(0.5)
        self.stop()
        raise SystemExit(f"serve did not start (exit {self.process.returncode}); its log: {self.log}")

    def replica_cpu_s(self) -> float:
        """CPU seconds (all threads) used so far by this server's replica processes, from /proc."""
        mine = descendants(self.process.pid)
        return sum(process_cpu_s(pid) for pid in replica_pids() if pid in mine)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(120)


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


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), or 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class InProcess:
    """What a /predict request does, in this process: decode the bytes, preprocess, engine, top-k."""

    def __init__(self, model_dir: Path, backend: str) -> None:
        self.classifier = Classifier(model_dir, RuntimeOptions(backend=backend, threads=1))

    def __call__(self, body: bytes) -> dict:
        tensor = self.classifier.preprocess(protocol.decode_image(body))
        probabilities = to_probabilities(self.classifier.runtime.infer(tensor[None]))[0]
        labels = self.classifier.labels_for(len(probabilities))
        return protocol.top_classes(probabilities, self.classifier.config.topk, labels)


def median_difference(local_ms: np.ndarray, serve_ms: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """median(serve) - median(local) and its 95 % bootstrap interval, resampling whole pairs."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(local_ms), size=(BOOTSTRAP_SAMPLES, len(local_ms)))
    samples = np.median(serve_ms[picks], axis=1) - np.median(local_ms[picks], axis=1)
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(np.median(serve_ms) - np.median(local_ms)), float(low), float(high)


async def paired_c1(local: InProcess, url: str, body: bytes, pairs: int) -> dict:
    """`pairs` in-process calls and /predict round trips, alternated one by one (a drifting machine slows both)."""
    import aiohttp

    local_ms, serve_ms = [], []
    async with aiohttp.ClientSession() as session:
        for _ in range(pairs):
            began = time.perf_counter()
            local(body)
            local_ms.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            async with session.post(url, data=body) as response:
                await response.read()
                response.raise_for_status()
            serve_ms.append((time.perf_counter() - began) * 1000)
    local_array, serve_array = np.array(local_ms), np.array(serve_ms)
    difference, low, high = median_difference(local_array, serve_array)
    return {"pairs": pairs, "in_process_ms": float(np.median(local_array)), "serve_ms": float(np.median(serve_array)),
            "difference_ms": difference, "ci95_ms": [low, high], "load_average": os.getloadavg()[0]}


def measured_load(server: Server, url: str, body: bytes, seconds: float) -> dict:
    """One C = 32 load run, with the replica's CPU per answered request beside the client's."""
    cpu_began = server.replica_cpu_s()
    report = asyncio.run(run_load(f"{url}/predict", body, 32, seconds))
    replica_cpu_ms = (server.replica_cpu_s() - cpu_began) * 1000 / max(report.ok, 1)
    return {**asdict(report), "replica_cpu_ms": replica_cpu_ms}


def batching_rounds(servers: dict[str, Server], urls: dict[str, str], body: bytes, rounds: int, seconds: float) -> list[dict]:
    """C = 32 load runs on the batching-on and -off servers (both up), alternating which goes first."""
    for url in urls.values():
        asyncio.run(run_load(f"{url}/predict", body, 32, 2.0))  # warm-up
    results = []
    for number in range(rounds):
        order = ("on", "off") if number % 2 == 0 else ("off", "on")
        runs = {mode: measured_load(servers[mode], urls[mode], body, seconds) for mode in order}
        on, off = runs["on"], runs["off"]
        results.append({"round": number + 1, "order": "/".join(order), "on": on, "off": off,
                        "ratio": on["throughput"] / off["throughput"], "p99_over_p50_on": on["p99_ms"] / on["p50_ms"],
                        "load_average": os.getloadavg()[0]})
    return results


def ratio_interval(ratios: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Geometric mean of the rounds' ratios and its 95 % bootstrap interval (rounds resampled)."""
    logs = np.log(np.array(ratios))
    picks = np.random.default_rng(seed).integers(0, len(logs), size=(BOOTSTRAP_SAMPLES, len(logs)))
    low, high = np.exp(np.percentile(logs[picks].mean(axis=1), [2.5, 97.5]))
    return float(np.exp(logs.mean())), float(low), float(high)


def fault_test(model_dir: Path, backend: str, body: bytes, seconds: float) -> None:
    server = Server(model_dir, backend, "direct", "on", "--replicas", "2")  # serve's defaults; the load via --port
    try:
        server.wait_ready()
        url = f"http://127.0.0.1:{server.port}/predict"
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
        server.stop()


async def _one_answer(url: str, body: bytes) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
        return await response.text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=registry.DEMO_MODEL_DIR)
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--image", type=Path, default=registry.DEMO_IMAGE)
    parser.add_argument("--paths", default="direct,proxy", help="comma-separated: direct, proxy")
    parser.add_argument("--pairs", type=int, default=1000, help="C = 1 alternated pairs per path (0: skip)")
    parser.add_argument("--rounds", type=int, default=5, help="batching on/off rounds at C = 32 per path (0: skip)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per load run")
    parser.add_argument("--table", action=argparse.BooleanOptionalAction, default=True,
                        help="the load table at --concurrency, every path x batching")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--fault-seconds", type=float, default=0.0, help="0: no fault test")
    arguments = parser.parse_args()
    body = arguments.image.read_bytes()
    paths = arguments.paths.split(",") if arguments.pairs > 0 or arguments.rounds > 0 or arguments.table else []
    local = InProcess(arguments.model_dir, arguments.backend)
    local(body)  # warm-up
    pairs: dict[str, dict] = {}
    rounds: dict[str, list[dict]] = {}
    table: list[tuple[str, str, LoadReport]] = []
    for path in paths:
        servers = {mode: Server(arguments.model_dir, arguments.backend, path, mode) for mode in ("on", "off")}
        try:
            urls = {mode: server.wait_ready() for mode, server in servers.items()}
            if arguments.pairs > 0:
                pairs[path] = asyncio.run(paired_c1(local, f"{urls['on']}/predict", body, arguments.pairs))
                print(json.dumps({"run": f"C = 1 paired, {path}, batching on", **pairs[path]}), flush=True)
            if arguments.rounds > 0:
                rounds[path] = batching_rounds(servers, urls, body, arguments.rounds, arguments.seconds)
                for result in rounds[path]:
                    print(json.dumps({"run": f"C = 32 batching on/off, {path}", **result}), flush=True)
            if arguments.table:
                concurrencies = tuple(int(c) for c in arguments.concurrency.split(","))
                for mode in ("on", "off"):
                    for report in bench_server(urls[mode], body, concurrencies, arguments.seconds, warmup_s=2.0):
                        table.append((path, mode, report))
                        print(json.dumps({"run": f"{path}, batching {mode}", **asdict(report)}), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    if arguments.fault_seconds > 0:
        fault_test(arguments.model_dir, arguments.backend, body, arguments.fault_seconds)
    print(f"\n{arguments.model_dir.name}, {arguments.backend}, 1 thread, 1 replica; load average {os.getloadavg()[0]:.1f}\n")
    if table:
        print("| path | batching | C | requests/s | p50 ms | p90 ms | p99 ms | errors | batch sizes seen |")
        print("|---|---|---|---|---|---|---|---|---|")
        for path, mode, r in table:
            print(f"| {path} | {mode} | {r.concurrency} | {r.throughput:.1f} | {r.p50_ms:.2f} | {r.p90_ms:.2f} | {r.p99_ms:.2f} | "
                  f"{sum(r.errors.values())} | {batch_size_summary(r.batch_sizes)} |")
    for path, result in pairs.items():
        low, high = result["ci95_ms"]
        print(f"C = 1, {path}, {result['pairs']} alternated pairs: serve p50 {result['serve_ms']:.2f} ms vs in-process "
              f"{result['in_process_ms']:.2f} ms: {result['difference_ms']:+.2f} ms (95 % CI {low:+.2f} .. {high:+.2f}; "
              f"goal <= +2 ms: {'met' if high <= 2 else 'not met' if low > 2 else 'undecided'}), load {result['load_average']:.1f}")
    for path, results in rounds.items():
        ratios = [result["ratio"] for result in results]
        spreads = [result["p99_over_p50_on"] for result in results]
        mean, low, high = ratio_interval(ratios)
        print(f"C = 32, {path}, batching on / off, {len(results)} alternated rounds: throughput "
              f"{', '.join(f'{ratio:.2f}x' for ratio in ratios)} (geometric mean {mean:.2f}x, 95 % CI {low:.2f} .. "
              f"{high:.2f}; goal >= 1.5), p99 / p50 on {', '.join(f'{spread:.2f}' for spread in spreads)} (goal <= 4)")
        for result in results:
            on, off = result["on"], result["off"]
            print(f"  round {result['round']} ({result['order']}): on {on['throughput']:.1f} req/s p50 {on['p50_ms']:.2f} "
                  f"p99 {on['p99_ms']:.2f} batches {batch_size_summary({int(k): v for k, v in on['batch_sizes'].items()})}, "
                  f"CPU ms/request replica {on['replica_cpu_ms']:.3f} client {on['client_cpu_ms']:.3f}; "
                  f"off {off['throughput']:.1f} req/s p50 {off['p50_ms']:.2f} p99 {off['p99_ms']:.2f}, "
                  f"CPU ms/request replica {off['replica_cpu_ms']:.3f} client {off['client_cpu_ms']:.3f}; "
                  f"load {result['load_average']:.1f}")


if __name__ == "__main__":
    main()
