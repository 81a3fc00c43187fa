"""Cycle-collector pauses after table installs, with and without `gateway.frozen_tables`.

Not a test: run it by hand, `python -m benchmarks.bench_collector`. A gateway process replaces
its table with a full snapshot of the `bench_routing` 10,000-route table `--loads` times, built
and installed as the subscriber and the gateway do it (`frozen_tables.build`, then
`FrozenTables.installed` as `Gateway.swap` calls it); after each load it allocates as request
handling does (`--allocations` small containers, a few hundred alive at a time) and decides
requests. Every collection is timed through `gc.callbacks`; the report gives, per mode, the
pauses over 5 ms, the longest, and the total time the collector held the (single) thread.
`default` decodes as gateways did before `gateway.frozen_tables` (`snapshot.loads`, which pauses
the collector for its parts, as `policies.acyclic` does); `paused` keeps it paused for the whole
decode (`frozen_tables.build` without freezing); `frozen` is what a gateway process does now.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import random
import statistics
import time
from pathlib import Path

from benchmarks import bench_routing
from gateway import frozen_tables
from gateway.frozen_tables import FrozenTables
from policies import matching, snapshot, table

RESULTS = Path(__file__).parent / "results" / "bench_collector.json"
LONG_PAUSE_S = 0.005


class Pauses:
    """Collector pauses, by generation, while `recording`."""

    def __init__(self) -> None:
        self.recording = False
        self.pauses: list[tuple[int, float]] = []
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if not self.recording:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._start))


def run(mode: str, wire: bytes, args: argparse.Namespace, pauses: Pauses) -> dict[str, object]:
    gc.collect()
    frozen = FrozenTables() if mode == "frozen" else None
    by_host = bench_routing.routes_by_host(bench_routing.SIZES[-1])
    rng = random.Random(args.seed)
    live: list[table.RoutingTable] = []
    pauses.pauses.clear()
    pauses.recording = True
    for _ in range(args.loads):
        # As the subscriber decodes (in a thread there) and the gateway swaps: the previous
        # table goes.
        if mode == "default":
            live[:] = [snapshot.loads(wire)]
        else:
            live[:] = [frozen_tables.build(frozen, functools.partial(snapshot.loads, wire))]
        if frozen is not None:
            frozen.installed()
        alive: list[list[int]] = []
        for i in range(args.allocations):  # request handling: mostly short-lived containers
            alive.append([i])
            if len(alive) > 300:
                alive.clear()
        for head in bench_routing.requests(by_host, 2_000, rng):
            matching.decide(live[0], head, roll=rng.random())
    pauses.recording = False
    if frozen is not None:
        frozen.release()
    found = [s for _, s in pauses.pauses]
    long = [round(s * 1000, 1) for s in found if s > LONG_PAUSE_S]
    return {
        "mode": mode,
        "collections": len(found),
        "pauses_over_5ms": len(long),
        "longest_ms": round(max(found, default=0.0) * 1000, 1),
        "total_ms": round(sum(found) * 1000, 1),
        "median_long_ms": statistics.median(long) if long else 0.0,
        "full_collections": 0 if frozen is None else frozen.full_collections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--loads", type=int, default=5, help="full table loads per mode")
    parser.add_argument("--allocations", type=int, default=200_000, help="after each load")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    policies = bench_routing.policies(bench_routing.SIZES[-1])
    compiled = table.compile_table(
        policies, table.inventory_from_clusters(policies.clusters), version=1
    )
    wire = snapshot.encode(compiled)
    del compiled, policies
    pauses = Pauses()
    rows = [run(mode, wire, args, pauses) for mode in ("default", "paused", "frozen")]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"parameters": vars(args), "rows": rows}, indent=2) + "\n")
    print(f"{args.loads} full loads of a {bench_routing.SIZES[-1]:,}-route table")
    print(f"{'mode':>8} {'collections':>11} {'> 5 ms':>6} {'longest ms':>10} {'total ms':>9}")
    for row in rows:
        print(
            f"{row['mode']:>8} {row['collections']:>11} {row['pauses_over_5ms']:>6} "
            f"{row['longest_ms']:>10} {row['total_ms']:>9}"
        )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
