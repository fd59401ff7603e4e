"""The HTTP half of ``serve_latency.py``: the service as a subprocess on loopback (one or more
server workers), and rank and recommend requests from 1 or more concurrent clients (threads, one
keep-alive ``httpx.Client`` each), with latency percentiles and throughput per case."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

NORMAL_DOMAIN, ZERO_SHOT_DOMAIN, ANN_DOMAIN = "travel", "rental", "ann-large"
RANK, RECOMMEND = "/v1/domains/{domain}/rank", "/v1/domains/{domain}/recommend"
"""Route templates: the endpoint labels of the service's latency histogram."""


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "max_ms": float(a.max()),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_seconds(base: str, endpoint: str) -> tuple[float, float]:
    """The service's own latency histogram for ``endpoint``: (sum of seconds, count)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    found = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name != "peace_request_duration_seconds":
            continue
        for sample in family.samples:
            key = sample.name.removeprefix(f"{family.name}_")
            if key in found and sample.labels.get("endpoint") == endpoint:
                found[key] = sample.value
    return found["sum"], found["count"]


def load(base: str, make_request: Any, n: int, clients: int, endpoint: str) -> dict[str, Any]:
    """Send ``n`` requests from ``clients`` threads; latency per request and throughput, and the
    mean time the service itself spent on them (its latency histogram, so without the clients'
    own cost of building, sending and parsing requests)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    rankers: list[set[str]] = [set() for _ in range(clients)]
    per = [n // clients + (1 if c < n % clients else 0) for c in range(clients)]
    warm = threading.Barrier(clients + 1)
    barrier = threading.Barrier(clients + 1)

    def worker(c: int) -> None:
        rng = np.random.default_rng(1000 + c)
        with httpx.Client(base_url=base, timeout=30) as http:
            for _ in range(10):  # warm-up, not measured
                method, url, kwargs = make_request(rng)
                http.request(method, url, **kwargs)
            warm.wait()
            barrier.wait()
            for _ in range(per[c]):
                method, url, kwargs = make_request(rng)
                t = time.perf_counter()
                r = http.request(method, url, **kwargs)
                latencies[c].append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    errors[c] += 1
                else:
                    rankers[c].add(r.json()["ranker"])

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    warm.wait()
    served_before = server_seconds(base, endpoint)
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    served_after = server_seconds(base, endpoint)
    flat = [x for lat in latencies for x in lat]
    served = served_after[1] - served_before[1]
    return {
        "requests": len(flat),
        "clients": clients,
        "errors": sum(errors),
        "throughput_rps": len(flat) / wall,
        "wall_s": wall,
        "ranker": sorted(set().union(*rankers)),
        **percentiles(flat),
        "server_mean_ms": (served_after[0] - served_before[0]) / served * 1000 if served else None,
    }


def http_cases(
    store: Path,
    catalogues: dict[str, list[str]],
    users: list[str],
    args: argparse.Namespace,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Every case against one server with ``workers`` processes (``peace serve --workers``)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "peace.serve.app",
        "--store",
        str(store),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        "1",
        "--workers",
        str(workers),
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    results = []
    try:
        for _ in range(600):  # at most 60 s to start
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None:
                raise RuntimeError(
                    f"server exited: {server.stderr.read() if server.stderr else ''}"
                )
            time.sleep(0.1)
        else:
            raise RuntimeError("server did not start in 60 s")
        wait_for_workers(base, workers)

        def ranker_request(domain: str) -> Any:
            cat = catalogues[domain]

            def make(rng: np.random.Generator) -> tuple[str, str, dict]:
                body = {
                    "user": users[int(rng.integers(len(users)))],
                    "items": list(rng.choice(cat, args.candidates, replace=False)),
                }
                return "POST", f"/v1/domains/{domain}/rank", {"json": body}

            return make

        def recommend_request(rng: np.random.Generator) -> tuple[str, str, dict]:
            user = users[int(rng.integers(len(users)))]
            return "GET", f"/v1/domains/{ANN_DOMAIN}/recommend", {"params": {"user": user, "k": 10}}

        for domain in (ZERO_SHOT_DOMAIN, NORMAL_DOMAIN):
            for clients in args.clients:
                r = load(base, ranker_request(domain), args.requests, clients, RANK)
                results.append(
                    {
                        "case": f"rank {domain}",
                        "endpoint": "rank",
                        "candidates": args.candidates,
                        "workers": workers,
                        **r,
                    }
                )
                print_row(results[-1])
        for clients in args.clients:
            r = load(base, recommend_request, args.recommend_requests, clients, RECOMMEND)
            results.append(
                {
                    "case": f"recommend {ANN_DOMAIN} (k=10)",
                    "endpoint": "recommend",
                    "candidates": len(catalogues[ANN_DOMAIN]),
                    "workers": workers,
                    **r,
                }
            )
            print_row(results[-1])
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return results


def wait_for_workers(base: str, workers: int, seconds: float = 120.0) -> set[int]:
    """The process ids of the workers, once every one has answered (the first may serve while
    others still load the store)."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, headers={"Connection": "close"}, timeout=30) as http:
        while len(seen) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(seen)} of {workers} workers answered in {seconds} s")
            seen.add(int(http.get("/healthz").json()["worker"]))
            time.sleep(0.02)
    return seen


def print_row(r: dict[str, Any]) -> None:
    server = r["server_mean_ms"]
    print(
        f"{r['case']:<34} {'/'.join(r['ranker']):<20} {r['workers']:>3} {r['clients']:>3} "
        f"{r['requests']:>6} "
        f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['throughput_rps']:>9.1f} {r['errors']:>4} "
        f"{'-' if server is None else f'{server:.2f}':>9}",
        flush=True,
    )
