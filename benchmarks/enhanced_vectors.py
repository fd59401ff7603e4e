"""Eq. 8-9 then Eq. 2: the dense computation against the kept prototypes with merged weights.

Times the prototype-enhanced user vectors at the benchmark preset's sizes (d = 64, M = 8,
n = 64, K = 4, the MLP 64-32, Eq. 2's attention width 64) in two shapes:

* ``train``: a fine-tuning batch (512 users x 5 candidates), forward and backward;
* ``score``: a validation chunk (``--users`` users x ``--items`` items), no gradients;
* ``serve``: one user x 200 candidates, no gradients, as the service scores a ``rank`` request
  (timed over 50 calls);

each way in turn (``dense``: :meth:`peace.nn.prototypes.Prototypes.enhance` then Eq. 2 over all
n prototypes; ``kept``: :func:`peace.nn.enhanced.enhanced_user_vectors`; ``kept_keys``: the same
with each target's top-K prototypes computed beforehand, as the fine-tuning head keeps them once
per catalogue item, P and the item vectors being frozen there), alternated ``--repeats`` times
after a warm-up, and checks that all give the same vectors and gradients (up to float rounding;
``kept_keys`` exactly ``kept``'s). Prints the medians and their ratios; writes
``benchmarks/results/enhanced_vectors.json``.

    python benchmarks/enhanced_vectors.py [--repeats 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from serve_latency import machine

from peace.nn.enhanced import ItemKeys, enhanced_user_vectors, item_keys
from peace.nn.prototypes import Prototypes
from peace.nn.user_encoder import AttentiveFusion

RESULTS = Path(__file__).parent / "results" / "enhanced_vectors.json"
SERVE_CALLS = 50  # rank requests per timing of the ``serve`` shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, m, n, k = 64, 8, 64, 4
    protos, fusion = Prototypes(d, n, k, (64, 32)), AttentiveFusion(d, 64, prior=True)
    torch.nn.init.normal_(fusion.prior, std=0.1)
    params = [*protos.parameters(), *fusion.parameters()]

    def dense(interests: torch.Tensor, targets: torch.Tensor, keys: ItemKeys) -> torch.Tensor:
        return fusion(protos.enhance(interests, protos.similarity(targets)))

    def kept(interests: torch.Tensor, targets: torch.Tensor, keys: ItemKeys) -> torch.Tensor:
        return enhanced_user_vectors(protos, fusion, interests, targets)

    def kept_keys(interests: torch.Tensor, targets: torch.Tensor, keys: ItemKeys) -> torch.Tensor:
        return enhanced_user_vectors(protos, fusion, interests, targets, keys)

    ways = {"dense": dense, "kept": kept, "kept_keys": kept_keys}
    catalogue = torch.randn(args.items, d) * 0.3
    catalogue_keys = item_keys(protos, catalogue)
    picked = torch.randint(args.items, (512, 5))  # a fine-tuning batch's candidates
    batch = torch.randn(512, m, d) * 0.3, catalogue[picked], catalogue_keys.take(picked)
    weights = torch.randn(512, 5, d)
    interests = torch.randn(args.users, m, d) * 0.3
    everything = torch.arange(args.items).expand(args.users, -1)
    chunk = interests, catalogue[everything], catalogue_keys.take(everything)
    asked = torch.randperm(args.items)[:200].unsqueeze(0)  # one request's candidates
    request = interests[:1], catalogue[asked], catalogue_keys.take(asked)

    def train(way: Callable) -> tuple[torch.Tensor, list[torch.Tensor]]:
        out = way(*batch)
        return out, list(torch.autograd.grad((out * weights).sum(), params))

    @torch.no_grad()
    def score(way: Callable) -> torch.Tensor:
        return way(*chunk)

    @torch.no_grad()
    def serve(way: Callable) -> None:
        for _ in range(SERVE_CALLS):
            way(*request)

    # The same numbers every way (float rounding apart; the kept keys exactly).
    (a, ga), (b, gb), (c, gc) = train(dense), train(kept), train(kept_keys)
    checks = {
        "train_max_abs_diff": float((a - b).abs().max()),
        "grad_max_rel_diff": max(
            float((x - y).abs().max() / x.abs().max()) for x, y in zip(ga, gb, strict=True)
        ),
        "score_max_abs_diff": float((score(dense) - score(kept)).abs().max()),
        "kept_keys_equal": bool(
            torch.equal(b, c)
            and all(torch.equal(x, y) for x, y in zip(gb, gc, strict=True))
            and torch.equal(score(kept), score(kept_keys))
        ),
    }
    shapes = {"train": train, "score": score, "serve": serve}
    times: dict[str, dict[str, list[float]]] = {s: {w: [] for w in ways} for s in shapes}
    for r in range(args.repeats + 1):
        for shape, run in shapes.items():
            for name in ways if r % 2 == 0 else reversed(ways):
                t0 = time.perf_counter()
                run(ways[name])
                if r > 0:  # the first round warms up
                    calls = SERVE_CALLS if shape == "serve" else 1
                    times[shape][name].append((time.perf_counter() - t0) / calls)
    result: dict = {"machine": machine(), "threads": args.threads, "checks": checks, "shapes": {}}
    result["shapes"]["train"] = {"users": 512, "candidates": 5, "backward": True}
    result["shapes"]["score"] = {"users": args.users, "items": args.items, "backward": False}
    result["shapes"]["serve"] = {"users": 1, "items": 200, "backward": False, "calls": SERVE_CALLS}
    for shape, by_way in times.items():
        med = {w: statistics.median(t) * 1e3 for w, t in by_way.items()}
        result["shapes"][shape].update(
            {f"{w}_ms": round(v, 3) for w, v in med.items()}
            | {
                "ratio": round(med["dense"] / med["kept"], 2),
                "keys_ratio": round(med["kept"] / med["kept_keys"], 2),
                "repeats": args.repeats,
            }
        )
        print(
            f"{shape}: dense {med['dense']:.2f} ms, kept {med['kept']:.2f} ms "
            f"({med['dense'] / med['kept']:.2f}x), kept with its keys {med['kept_keys']:.2f} ms "
            f"({med['kept'] / med['kept_keys']:.2f}x)"
        )
    print("checks:", checks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
