"""The HTTP half of ``serve_latency.py``: the service as a subprocess on loopback (one or more
server workers), and rank and recommend requests from 1 or more concurrent clients, with latency
percentiles and throughput per case.

Two load generators send the same kinds of requests:

* ``httpx``: Python threads, one keep-alive ``httpx.Client`` each, a fixed number of requests.
  Each client builds, sends and parses its requests in Python on the same two cores as the
  server, so its own cost is part of every latency and takes CPU from the server.
* ``wrk`` (when the ``wrk`` program is on PATH, e.g. Debian's ``wrk`` package): a C load
  generator on one thread with one keep-alive connection per client, replaying requests drawn
  the same way, for a fixed time. Its cost per request is a small fraction of the Python
  client's, so what it measures is closer to the service's own latency and capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

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


WRK_SCRIPT = r"""
local requests = {}
for line in io.lines(os.getenv("PEACE_WRK_REQUESTS")) do
  local method, path, body = line:match("^(%u+)\t([^\t]+)\t(.*)$")
  local headers = {}
  if body ~= "" then headers["Content-Type"] = "application/json" else body = nil end
  requests[#requests + 1] = wrk.format(method, path, headers, body)
end
local i = 0
request = function()
  i = i % #requests + 1
  return requests[i]
end
done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format("PEACE_WRK %d %d %d %d %d %d %.3f %.3f %.3f %.3f %.3f\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout,
    latency.min, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""
"""wrk's Lua script: replays the request lines of ``$PEACE_WRK_REQUESTS`` (method, path and
JSON body, tab-separated) in turn, and prints the counts and latencies (microseconds) at the end."""


def wrk_available() -> str | None:
    """The ``wrk`` program's path, or None."""
    return shutil.which("wrk")


def wrk_load(
    base: str, lines: list[str], clients: int, seconds: float, endpoint: str
) -> dict[str, Any]:
    """Replay request ``lines`` with wrk for ``seconds`` from ``clients`` connections (one wrk
    thread), after a one-second warm-up that is not measured; the same fields as :func:`load`."""
    wrk = wrk_available()
    if wrk is None:
        raise RuntimeError("wrk is not on PATH (Debian: apt-get install wrk).")
    with tempfile.TemporaryDirectory(prefix="peace-wrk-") as tmp:
        script, spec = Path(tmp) / "replay.lua", Path(tmp) / "requests.tsv"
        script.write_text(WRK_SCRIPT, encoding="utf-8")
        spec.write_text("\n".join(lines) + "\n", encoding="utf-8")
        env = {**os.environ, "PEACE_WRK_REQUESTS": str(spec)}

        def run(duration: float) -> list[str]:
            cmd = [wrk, "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s", "--timeout", "30s"]
            out = subprocess.run(
                [*cmd, "-s", str(script), base], env=env, capture_output=True, text=True, check=True
            ).stdout
            found = [ln.split()[1:] for ln in out.splitlines() if ln.startswith("PEACE_WRK ")]
            if not found:
                raise RuntimeError(f"wrk printed no result:\n{out}")
            return found[0]

        run(1)  # warm-up, not measured
        served_before = server_seconds(base, endpoint)
        f = run(seconds)
        served_after = server_seconds(base, endpoint)
    n, micros, status, socket_errors, timeouts = (int(x) for x in f[:5])
    lo, p50, p90, p99, mean, hi = (float(x) / 1000 for x in f[5:])
    served = served_after[1] - served_before[1]
    return {
        "requests": n,
        "clients": clients,
        "errors": status + socket_errors + timeouts,
        "throughput_rps": n / (micros / 1e6),
        "wall_s": micros / 1e6,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": mean,
        "max_ms": hi,
        "min_ms": lo,
        "server_mean_ms": (served_after[0] - served_before[0]) / served * 1000 if served else None,
    }


def request_line(method: str, url: str, kwargs: dict[str, Any]) -> str:
    """One request of a ``make_request`` function as wrk's script reads it."""
    if "params" in kwargs:
        url = f"{url}?{urlencode(kwargs['params'])}"
    body = json.dumps(kwargs["json"], separators=(",", ":")) if "json" in kwargs else ""
    return f"{method}\t{url}\t{body}"


def http_cases(
    store: Path,
    catalogues: dict[str, list[str]],
    users: list[str],
    args: argparse.Namespace,
    workers: int = 1,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """Every case against one server with ``workers`` processes (``peace serve --workers``) of
    ``threads`` torch threads each (``peace serve --threads``)."""
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
        str(threads),
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

        def measure(case: str, endpoint: str, route: str, make: Any, n: int, clients: int) -> None:
            for generator in getattr(args, "load", ["httpx"]):
                if generator == "httpx":
                    r = load(base, make, n, clients, route)
                else:
                    rng = np.random.default_rng(2000 + clients)
                    lines = [request_line(*make(rng)) for _ in range(n)]
                    r = wrk_load(base, lines, clients, args.wrk_seconds, route)
                    method, url, kwargs = make(rng)
                    with httpx.Client(base_url=base, timeout=30) as http:
                        r["ranker"] = [http.request(method, url, **kwargs).json()["ranker"]]
                results.append(
                    {
                        "case": case,
                        "endpoint": endpoint,
                        "candidates": len(catalogues[ANN_DOMAIN])
                        if endpoint == "recommend"
                        else args.candidates,
                        "workers": workers,
                        "threads": threads,
                        "load_generator": generator,
                        **r,
                    }
                )
                print_row(results[-1])

        for domain in (ZERO_SHOT_DOMAIN, NORMAL_DOMAIN):
            for clients in args.clients:
                make = ranker_request(domain)
                measure(f"rank {domain}", "rank", RANK, make, args.requests, clients)
        for clients in args.clients:
            case = f"recommend {ANN_DOMAIN} (k=10)"
            n = args.recommend_requests
            measure(case, "recommend", RECOMMEND, recommend_request, n, clients)
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
        f"{r['case']:<34} {'/'.join(r['ranker']):<20} {r.get('load_generator', 'httpx'):<6} "
        f"{r['workers']:>3} {r.get('threads', 1):>3} {r['clients']:>3} "
        f"{r['requests']:>6} "
        f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['throughput_rps']:>9.1f} {r['errors']:>4} "
        f"{'-' if server is None else f'{server:.2f}':>9}",
        flush=True,
    )
