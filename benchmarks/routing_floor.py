"""The floor under `bench_routing`'s growth: what the cheapest lookups cost by table size.

Not a test: run it by hand, `python -m benchmarks.routing_floor`. `bench_routing` finds the
decision 2.4x slower on 10,000 routes than on 10 with the same instructions per decision
(`routing_cache`); the difference is memory that is not cached. This asks whether another
layout of the table, still made of Python objects, could keep the ratio within the target (1.5x):
it times, on `bench_routing`'s tables and requests, lookups that do less than a decision.

* `host`: the host probe alone (`RoutingTable.hosts`).
* `host+path`: the host probe, then the entry's path index probe (an Exact value, else the first
  segment), reading the first candidate's rule: the lookups every decision makes before it
  tests a rule.
* `flat`: one table-wide dict from "host path" and "host segment" to the same candidates, built
  here for the measurement (one key string and at most two probes): the fewest Python objects a
  lookup can touch to find its candidates.
* `decide`: the whole decision, as `bench_routing` times it.

The budget is what the 1.5x target leaves the 10,000-route table over the 10-route one: half of
`decide`'s time on 10 routes. When `flat` alone grows by more than the budget, no layout of
Python objects reaches the target, whatever the decision does after the lookup. What the
decision does after its lookup (testing the rule, picking among its kept decisions) grows too: the
last line adds that growth (`decide` less `host+path`) to `flat`'s, an estimate of the ratio a
decision would reach with the flat lookup in place of today's two probes. Batches alternate
between sizes and lookups, so a noisy machine slows every row alike.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

from benchmarks import bench_routing
from policies import matching
from policies.matching import RequestHead
from policies.path_index import ScanItem
from policies.table import RoutingTable

Flat = Mapping[str, tuple[ScanItem, ...]]
Lookup = Callable[[RoutingTable, Flat, Sequence[RequestHead]], None]
SIZES = (bench_routing.SIZES[0], bench_routing.SIZES[-1])


def flat_index(compiled: RoutingTable) -> dict[str, tuple[ScanItem, ...]]:
    """Every exact host's path index keys, prefixed with the host, in one dict."""
    return {
        f"{host} {key}": items
        for host, entry in compiled.hosts.items()
        for key, items in entry.path_index().by_key.items()
    }


def host(compiled: RoutingTable, flat: Flat, heads: Sequence[RequestHead]) -> None:
    get = compiled.hosts.get
    for head in heads:
        get(head.host)


def host_path(compiled: RoutingTable, flat: Flat, heads: Sequence[RequestHead]) -> None:
    get = compiled.hosts.get
    for head in heads:
        entry = get(head.host)
        if entry is not None and entry.index is not None:
            path = head.path
            found = entry.index.by_key.get(path)
            if found is None:
                end = path.find("/", 1)
                found = entry.index.by_key.get(path[1:end] if end > 0 else path[1:])
            if found:
                found[0][4]  # the rule: taking it touches it (reference count), as a decision does


def flat_lookup(compiled: RoutingTable, flat: Flat, heads: Sequence[RequestHead]) -> None:
    get = flat.get
    for head in heads:
        path = head.path
        found = get(f"{head.host} {path}")
        if found is None:
            end = path.find("/", 1)
            found = get(f"{head.host} {path[1:end] if end > 0 else path[1:]}")
        if found:
            found[0][4]


def decide(compiled: RoutingTable, flat: Flat, heads: Sequence[RequestHead]) -> None:
    decide = matching.decide
    for head in heads:
        decide(compiled, head, roll=0.5)


LOOKUPS: dict[str, Lookup] = {
    "host": host,
    "host+path": host_path,
    "flat": flat_lookup,
    "decide": decide,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch", type=int, default=2_000, help="lookups per timed batch")
    parser.add_argument("--batches", type=int, default=100, help="timed batches per row")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    prepared = {size: bench_routing.prepare(size, seed=args.seed) for size in SIZES}
    flats = {}
    for size, p in prepared.items():
        for head in bench_routing.first_requests(p.by_host, p.rng):  # as bench_routing
            matching.decide(p.table, head, roll=0.5)
        flats[size] = flat_index(p.table)
    gc.collect()
    gc.disable()  # the tables are built: a collection here would be noise, not lookup cost
    times: dict[tuple[int, str], list[float]] = {(s, n): [] for s in SIZES for n in LOOKUPS}
    for _ in range(args.batches):
        for size, p in prepared.items():
            for name, lookup in LOOKUPS.items():
                heads = bench_routing.requests(p.by_host, args.batch, p.rng)
                start = time.perf_counter_ns()
                lookup(p.table, flats[size], heads)
                times[size, name].append((time.perf_counter_ns() - start) / args.batch)
    gc.enable()
    small, large = SIZES
    median = {key: statistics.median(values) for key, values in times.items()}
    budget = median[small, "decide"] * (bench_routing.TARGET_RATIO - 1)
    print(f"median ns per lookup; {len(flats[small]):,} / {len(flats[large]):,} flat keys")
    print(f"{'lookup':>10} {small:>8,} {large:>8,} {'growth':>7} {'ratio':>6}")
    for name in LOOKUPS:
        a, b = median[small, name], median[large, name]
        print(f"{name:>10} {a:>8.0f} {b:>8.0f} {b - a:>7.0f} {b / a:>6.2f}")

    def growth(name: str) -> float:
        return median[large, name] - median[small, name]

    after = growth("decide") - growth("host+path")
    base = median[small, "decide"] - median[small, "host+path"] + median[small, "flat"]
    estimate = (base + growth("flat") + after) / base
    print(
        f"budget for growth at {bench_routing.TARGET_RATIO}x: {budget:.0f} ns; the flat lookup "
        f"alone grows {growth('flat'):.0f} ns ({growth('flat') / budget:.0%} of it); the "
        f"decision grows {after:.0f} ns after its lookup (decide - host+path), so a decision "
        f"with the flat lookup would be about {estimate:.2f}x"
    )


if __name__ == "__main__":
    main()
