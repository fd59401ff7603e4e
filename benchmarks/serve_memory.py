"""Memory of the ranking service per worker process, and what several workers share.

Generates a synthetic platform (``--size``, default ``medium``: 20,000 users), pre-trains PEACE
briefly with the paper's model sizes (as ``serve_latency.py``), exports a store version, then for
each ``--workers`` count starts ``python -m peace.serve.app --workers N`` on loopback, sends one
``rank`` request for every user of the store (16 client threads), so that every user's vectors
have been read, and reads each worker's ``/proc/PID/smaps_rollup``:

* RSS: resident pages, shared ones included;
* PSS: resident pages with each shared page divided among the processes that map it (the sum
  over the workers is what they hold together);
* USS: pages only this process holds (private clean + private dirty).

Writes ``benchmarks/results/serve_memory.json`` (Linux only: it reads ``/proc``).

Usage::

    python benchmarks/serve_memory.py
    python benchmarks/serve_memory.py --size small --workers 1 2 4
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from serve_http import free_port, wait_for_workers
from serve_latency import MODEL, machine

from peace.config import PeaceConfig
from peace.data.dataset import load_dataset
from peace.data.synthetic import generate
from peace.flows.offline_inference import export
from peace.flows.pretrain import pretrain
from peace.store import StoreVersion, current_version

ROOT = Path(__file__).resolve().parent
FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty")


def smaps(pid: int) -> dict[str, float]:
    """MiB of RSS, PSS, USS and shared pages of one process (``/proc/PID/smaps_rollup``)."""
    kib: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in FIELDS:
            kib[key] = int(rest.split()[0])
    mib = {k: v / 1024 for k, v in kib.items()}
    return {
        "rss_mib": mib["Rss"],
        "pss_mib": mib["Pss"],
        "uss_mib": mib["Private_Clean"] + mib["Private_Dirty"],
        "shared_mib": mib["Shared_Clean"] + mib["Shared_Dirty"],
    }


def touch_every_user(base: str, domain: str, item: str, users: list[str], clients: int) -> float:
    """One rank request per user (so each worker reads the vectors of the users it serves);
    seconds taken."""
    shares = [users[c::clients] for c in range(clients)]
    failures: list[str] = []

    def run(share: list[str]) -> None:
        with httpx.Client(base_url=base, timeout=60) as http:
            for user in share:
                r = http.post(f"/v1/domains/{domain}/rank", json={"user": user, "items": [item]})
                if r.status_code != 200:
                    failures.append(r.text[:200])

    t = time.perf_counter()
    threads = [threading.Thread(target=run, args=(s,)) for s in shares]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        raise RuntimeError(f"{len(failures)} failed requests, e.g. {failures[0]}")
    return time.perf_counter() - t


def measure(store: Path, workers: int, users: list[str], domain: str, item: str) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "peace.serve.app", "--store", str(store), "--port", str(port)]
    server = subprocess.Popen(
        [*cmd, "--workers", str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        with httpx.Client(base_url=base, headers={"Connection": "close"}, timeout=30) as http:
            for _ in range(1200):  # at most 120 s to start
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
                if server.poll() is not None:
                    raise RuntimeError(f"server exited: {server.stderr.read().decode()[-2000:]}")
        pids = wait_for_workers(base, workers)
        seconds = touch_every_user(base, domain, item, users, clients=16)
        per = {pid: smaps(pid) for pid in sorted(pids)}
    finally:
        server.terminate()
        server.wait(timeout=60)
    total = {k: sum(p[k] for p in per.values()) for k in ("rss_mib", "pss_mib", "uss_mib")}
    return {
        "workers": workers,
        "touch_s": seconds,
        "per_worker": list(per.values()),
        "sum_rss_mib": total["rss_mib"],
        "sum_pss_mib": total["pss_mib"],
        "sum_uss_mib": total["uss_mib"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["small", "medium", "large"], default="medium")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pretrain-steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "peace-serve-memory"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse the store in --work")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "serve_memory.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    info = machine()
    data, run, store = (args.work / n for n in (f"data-{args.size}", "run", "store"))
    if not (args.reuse and current_version(store)):
        if not (data / "interactions.parquet").exists():
            generate(data, seed=args.seed, size=args.size)
        ds = load_dataset(data)
        overrides = [*MODEL, f"pretrain.max_steps={args.pretrain_steps}", f"seed={args.seed}"]
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
        pretrain(ds, PeaceConfig().override(overrides), out=run, show_progress=False)
        export(run, ds, store)
    version = StoreVersion.open(store, verify=False)
    users = [str(u) for u in version.users]
    domain = sorted(version.catalogues)[0]
    item = str(version.catalogues[domain].items[0])
    files = {p.name: p.stat().st_size / 2**20 for p in version.path.glob("*.arrow")}
    del version
    print(f"{len(users):,} users; store files {sum(files.values()):.1f} MiB", flush=True)
    rows = []
    for w in args.workers:
        rows.append(measure(store, w, users, domain, item))
        r = rows[-1]
        print(
            f"workers {w}: RSS {r['sum_rss_mib']:.0f} MiB, PSS {r['sum_pss_mib']:.0f} MiB, USS "
            f"{r['sum_uss_mib']:.0f} MiB in all; per worker USS "
            + ", ".join(f"{p['uss_mib']:.0f}" for p in r["per_worker"])
            + f" MiB ({r['touch_s']:.1f} s to rank every user once)",
            flush=True,
        )
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "data": {"synthetic": args.size, "seed": args.seed, "users": len(users)},
        "model": {"overrides": [*MODEL], "note": "paper sizes (A.3), briefly trained"},
        "store_files_mib": files,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
