"""Load generator for `serve`: C concurrent clients POST one image to /predict for a fixed time (or N requests).

Reports throughput, p50/p90/p99 latency, errors by kind, the engine batch sizes seen (the server's
x-batch-size header), and for fault tests the window from the first to the last failed request.
`paddlecls-q bench --serve URL` runs `bench_server`; scripts/serve_loadtest.py adds the fault test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from paddlecls_q.errors import BackendUnavailableError, ConfigError, InputError


@dataclass
class LoadReport:
    """One load run: C clients for `seconds`; latencies of the answered requests only."""

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
    client_cpu_ms: float = 0.0  # the load generator's own CPU (all its threads) per answered request


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
        began, cpu_began = time.perf_counter(), time.process_time()
        stop_at = began + seconds
        await asyncio.gather(*(
            _client(session, url, body, stop_at, budget, expected_class_ids, latencies, errors, batches, failures)
            for _ in range(concurrency)
        ))
        elapsed, cpu_s = time.perf_counter() - began, time.process_time() - cpu_began
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
        client_cpu_ms=cpu_s * 1000 / len(latencies) if latencies else 0.0,
    )


def predict_url(url: str) -> str:
    """The /predict address of a server root (`http://host:port`), or a ConfigError naming the URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--serve {url!r}: give the server's root URL, e.g. http://127.0.0.1:8000")
    root = url.rstrip("/")
    return root if root.endswith("/predict") else f"{root}/predict"


async def _check_reachable(url: str) -> None:
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.get(url.removesuffix("/predict") + "/v2/health/ready") as response:
                await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
        raise InputError(f"--serve {url.removesuffix('/predict')}: no server answers ({type(error).__name__}: {error})") from None


def bench_server(
    url: str, body: bytes, concurrencies: tuple[int, ...], seconds: float, max_requests: int = 10**9, warmup_s: float = 1.0
) -> list[LoadReport]:
    """Load runs against a running `serve` (one per concurrency, after a short warm-up at the highest one)."""
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise BackendUnavailableError("bench --serve needs aiohttp (part of Ray Serve): pip install 'paddlecls-q[serve]'") from None
    if seconds <= 0 or max_requests < 1 or any(c < 1 or c > 1024 for c in concurrencies):
        raise ConfigError("--seconds must be > 0, --requests >= 1 and every concurrency in 1..1024")
    target = predict_url(url)
    asyncio.run(_check_reachable(target))
    if warmup_s > 0:
        asyncio.run(run_load(target, body, max(concurrencies), warmup_s))
    return [asyncio.run(run_load(target, body, concurrency, seconds, max_requests)) for concurrency in concurrencies]


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found
