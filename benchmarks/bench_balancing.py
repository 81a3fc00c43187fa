"""Balancing benchmark: per-request cost of the placement decisions, and their rebuild costs.

Not a test: run it by hand, `python -m benchmarks.bench_balancing`. A backend of three clusters in
two tiers (the examples' shape: two clusters of 8 endpoints in tier 0, one of 8 in tier 1), with
one endpoint down. Per-request operations are timed with `time.perf_counter_ns` around batches of
calls over pre-drawn rolls and keys; the median of the batches is reported, per call. Rebuilds
(`view_backend` on a health change, `HashRing.build` on a table change) are timed the same way
with fewer calls. Results go to benchmarks/results/bench_balancing.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from policies import balancing, limits, outliers, retries
from policies.balancing import Draw
from policies.hashring import HashRing, hash_key
from policies.model import Algorithm, OutlierDetection, RateLimit, Retry, ServiceRef
from policies.table import Backend, ClusterTarget, Endpoint

RESULTS = Path(__file__).parent / "results" / "bench_balancing.json"


def fleet_backend(per_cluster: int) -> Backend:
    def target(cluster: str, priority: int, subnet: int) -> ClusterTarget:
        endpoints = tuple(
            Endpoint(f"127.0.{subnet}.{i + 1}", 8080, cluster) for i in range(per_cluster)
        )
        return ClusterTarget(cluster, priority, 1, endpoints)

    service = ServiceRef("shop", "web", 80)
    targets = (target("east-a", 0, 1), target("east-b", 0, 2), target("west", 1, 3))
    return Backend(str(service), service, 1, targets)


def per_call_ns(run: Callable[[int], None], calls: int, batches: int) -> float:
    """Median over batches of the time per call; `run(n)` performs n calls."""
    samples = []
    for _ in range(batches):
        start = time.perf_counter_ns()
        run(calls)
        samples.append((time.perf_counter_ns() - start) / calls)
    return statistics.median(samples)


def measure(*, per_cluster: int, calls: int, batches: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    backend = fleet_backend(per_cluster)
    down = {backend.targets[0].endpoints[0].id}
    healthy = lambda e: e.id not in down  # noqa: E731
    view = balancing.view_backend(backend, healthy)
    rolls = [(rng.random(), rng.random(), rng.random(), rng.random()) for _ in range(calls)]
    keys = [f"session-{rng.getrandbits(48):x}" for _ in range(calls)]
    active: dict[Endpoint, int] = {
        e: rng.randrange(10) for t in backend.targets for e in t.endpoints
    }
    rings = {t.cluster: HashRing.build([e.id for e in t.endpoints]) for t in backend.targets}
    picks = [view.pick(tier_roll=r[0], cluster_roll=r[1]) for r in rolls]
    limit = RateLimit(requests_per_s=1e9, burst=10**9)
    detection = OutlierDetection()
    policy = Retry()

    def pick_only(n: int) -> None:
        for tier_roll, cluster_roll, _, _ in rolls[:n]:
            view.pick(tier_roll=tier_roll, cluster_roll=cluster_roll)

    def place(algorithm: Algorithm, keyed: bool) -> Callable[[int], None]:
        picker = balancing.PICKERS[algorithm]  # looked up once per route, as the gateway would
        counts = active.get

        def load(endpoint: Endpoint) -> int:
            return counts(endpoint, 0)

        def run(n: int) -> None:
            for (tier_roll, cluster_roll, a, b), key in zip(rolls[:n], keys, strict=False):
                pick = view.pick(tier_roll=tier_roll, cluster_roll=cluster_roll)
                assert pick is not None
                if keyed:
                    draw = Draw(a, b, key=key, ring=rings[pick.target.cluster])
                else:
                    draw = Draw(a, b, counter=n, active=load)
                picker(pick, draw)

        return run

    def hashing(n: int) -> None:
        for key in keys[:n]:
            hash_key(key)

    def bucket(n: int) -> None:
        state = None
        for i in range(n):
            state, _, _ = limits.take(limit, state, float(i))

    def outlier(n: int) -> None:
        state = outliers.OutlierState()
        for i in range(n):
            state, _ = outliers.record(
                detection, state, error=i % 7 == 0, now=float(i), ejected=0, total=8
            )

    def retry_decision(n: int) -> None:
        for _ in range(n):
            retries.should_retry(
                policy,
                method="GET",
                attempt=1,
                failure=retries.Failure.RESET,
                response_started=False,
                body_buffered=True,
                budget_ok=True,
            )

    def rebuild_view(n: int) -> None:
        for _ in range(n):
            balancing.view_backend(backend, healthy)

    def rebuild_ring(n: int) -> None:
        endpoints = [e.id for e in backend.targets[0].endpoints]
        for _ in range(n):
            HashRing.build(endpoints)

    assert all(p is not None for p in picks)
    few = max(1, calls // 100)
    return {
        "view_pick_ns": per_call_ns(pick_only, calls, batches),
        "place_least_request_ns": per_call_ns(
            place(Algorithm.LEAST_REQUEST, False), calls, batches
        ),
        "place_round_robin_ns": per_call_ns(place(Algorithm.ROUND_ROBIN, False), calls, batches),
        "place_ring_hash_ns": per_call_ns(place(Algorithm.RING_HASH, True), calls, batches),
        "hash_key_ns": per_call_ns(hashing, calls, batches),
        "token_bucket_take_ns": per_call_ns(bucket, calls, batches),
        "outlier_record_ns": per_call_ns(outlier, calls, batches),
        "should_retry_ns": per_call_ns(retry_decision, calls, batches),
        "view_backend_rebuild_us": per_call_ns(rebuild_view, few, batches) / 1000,
        "ring_build_us": per_call_ns(rebuild_ring, few, batches) / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-cluster", type=int, default=8, help="endpoints per cluster")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per batch")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    figures = measure(
        per_cluster=args.per_cluster, calls=args.calls, batches=args.batches, seed=args.seed
    )
    report = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "parameters": vars(args),
        "figures": figures,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for name, value in figures.items():
        print(f"{name:28} {value:10.1f}")


if __name__ == "__main__":
    main()
