"""Load generator for `serve`: C concurrent clients POST one image to /predict for a fixed time (or N requests).

Reports throughput, p50/p90/p99 latency, errors by kind, the engine batch sizes seen (the server's
x-batch-size header), and for fault tests the window from the first to the last failed request.
Run: python -m paddlecls_q.serve.loadtest URL IMAGE --concurrency 8 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class LoadReport:
    concurrency: int
    requests: int
    ok: int
    errors: dict[str, int]
    seconds: float
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    batch_sizes: dict[int, int] = field(default_factory=dict)
    failure_window_s: float = 0.0
    wrong_answers: int = 0


async def _client(session: Any, url: str, body: bytes, stop_at: float, budget: list[int], expected: Any,
                  latencies: list[float], errors: Counter, batches: Counter, failures: list[float]) -> None:
    while time.perf_counter() < stop_at and budget[0] > 0:
        budget[0] -= 1
        began = time.perf_counter()
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/octet-stream"}) as response:
                payload = await response.read()
                if response.status != 200:
                    errors[f"http {response.status}"] += 1
                    failures.append(began)
                    continue
                if expected is not None and json.loads(payload)["class_ids"] != expected:
                    errors["wrong answer"] += 1
                    continue
                batches[int(response.headers.get("x-batch-size", 0))] += 1
        except Exception as error:  # connection reset by a dying replica or proxy: counted, not fatal
            errors[type(error).__name__] += 1
            failures.append(began)
            continue
        latencies.append((time.perf_counter() - began) * 1000)


async def run_load(url: str, body: bytes, concurrency: int, seconds: float, max_requests: int = 10**9,
                   expected_class_ids: list[int] | None = None) -> LoadReport:
    """POST `body` to `url` from `concurrency` clients until `seconds` pass or `max_requests` are sent."""
    import aiohttp

    latencies: list[float] = []
    errors: Counter = Counter()
    batches: Counter = Counter()
    failures: list[float] = []
    budget = [max_requests]
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        began = time.perf_counter()
        stop_at = began + seconds
        await asyncio.gather(*(
            _client(session, url, body, stop_at, budget, expected_class_ids, latencies, errors, batches, failures)
            for _ in range(concurrency)
        ))
        elapsed = time.perf_counter() - began
    p50, p90, p99 = (float(np.percentile(latencies, q)) if latencies else 0.0 for q in (50, 90, 99))
    return LoadReport(
        concurrency=concurrency,
        requests=len(latencies) + sum(errors.values()),
        ok=len(latencies),
        errors=dict(errors),
        seconds=elapsed,
        throughput=len(latencies) / elapsed if elapsed > 0 else 0.0,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        batch_sizes=dict(sorted(batches.items())),
        failure_window_s=(max(failures) - min(failures)) if failures else 0.0,
        wrong_answers=errors.get("wrong answer", 0),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="server root, e.g. http://127.0.0.1:8000")
    parser.add_argument("image", type=Path)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=10**9)
    arguments = parser.parse_args(argv)
    body = arguments.image.read_bytes()
    for concurrency in arguments.concurrency:
        report = asyncio.run(run_load(f"{arguments.url.rstrip('/')}/predict", body, concurrency, arguments.seconds, arguments.requests))
        print(json.dumps(asdict(report)))


if __name__ == "__main__":
    main()
