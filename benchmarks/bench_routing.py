"""Routing-core benchmark: compile time and median `matching.decide` time by table size.

Not a test: run it by hand, `python -m benchmarks.bench_routing`. Tables of 10, 1,000 and 10,000
routes over 1,000 hostnames (a route covers 100, 1 or a tenth of a hostname's traffic), each route
with four rules of the usual kinds (PathPrefix, Exact, method, header), one wildcard route and one
route without hostnames. Requests come from a seeded generator: a host, a route serving it, one of
its rules' paths (5 % miss every rule and get the 404), built fresh before each timed batch as a
gateway decides on a request it has just parsed. Decision time is `time.perf_counter_ns` around a
batch of decisions, divided per decision; the median of the batches is reported. Batches
alternate between the three tables, so a busy machine slows every size alike and the ratio
between sizes stays meaningful. Compile time is the best of three.
Results go to benchmarks/results/bench_routing.json and a table on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import random
import statistics
import time
from pathlib import Path

from policies import matching, table
from policies.matching import RequestHead
from policies.model import (
    BackendRef,
    ClusterWeight,
    HeaderMatch,
    Match,
    MemberCluster,
    PathKind,
    PathMatch,
    PolicySet,
    Route,
    RouteKind,
    Rule,
    ServicePort,
    ServiceRef,
    StaticService,
)

HOSTNAMES = 1_000
SIZES = (10, 1_000, 10_000)
RESULTS = Path(__file__).parent / "results" / "bench_routing.json"
SERVICE = ServiceRef("shop", "web", 80)
CANARY = ServiceRef("shop", "web-canary", 80)


def hostname(index: int) -> str:
    return f"svc-{index:04d}.bench.test"


def fleet() -> tuple[MemberCluster, ...]:
    def cluster(name: str, priority: int, subnet: int) -> MemberCluster:
        services = tuple(
            StaticService(s.namespace, s.name, (ServicePort(80, (f"127.0.{subnet}.1:8080",)),))
            for s in (SERVICE, CANARY)
        )
        return MemberCluster(name, {"region": name}, priority=priority, services=services)

    return (cluster("east", 0, 1), cluster("west", 0, 2), cluster("south", 1, 3))


def route(index: int, hostnames: tuple[str, ...]) -> Route:
    base = f"/r{index}"
    split = (BackendRef(SERVICE, weight=90), BackendRef(CANARY, weight=10))
    pinned = (BackendRef(SERVICE, clusters=(ClusterWeight("east", 3), ClusterWeight("west", 1))),)
    rules = (
        Rule(None, (Match(PathMatch(PathKind.PREFIX, f"{base}/api")),), (), split),
        Rule(None, (Match(PathMatch(PathKind.EXACT, f"{base}/healthz")),), (), pinned),
        Rule(
            None, (Match(PathMatch(PathKind.PREFIX, f"{base}/orders"), method="POST"),), (), pinned
        ),
        Rule(
            None,
            (Match(PathMatch(PathKind.PREFIX, base), headers=(HeaderMatch("x-canary", "on"),)),),
            (),
            (BackendRef(CANARY),),
        ),
    )
    return Route(RouteKind.HTTP_ROUTE, "shop", f"route-{index}", hostnames, rules, created=index)


def policies(size: int) -> PolicySet:
    """`size` routes spread evenly over HOSTNAMES names, plus a wildcard and a host-less route."""
    routes = []
    for i in range(size):
        names = tuple(hostname(h) for h in range(i % HOSTNAMES, HOSTNAMES, size))
        routes.append(route(i, names))
    routes.append(route(size, ("*.bench.test",)))
    routes.append(route(size + 1, ()))
    return PolicySet(routes=tuple(routes), clusters=fleet())


def routes_by_host(size: int) -> dict[int, list[int]]:
    by_host: dict[int, list[int]] = {}
    for i in range(size):
        for h in range(i % HOSTNAMES, HOSTNAMES, size):
            by_host.setdefault(h, []).append(i)
    return by_host


def requests(by_host: dict[int, list[int]], count: int, rng: random.Random) -> list[RequestHead]:
    out = []
    for _ in range(count):
        h = rng.randrange(HOSTNAMES)
        base = f"/r{rng.choice(by_host[h])}"
        kind = rng.random()
        method, headers, path = "GET", {}, f"{base}/api/items/{rng.randrange(1000)}"
        if kind < 0.05:
            path = f"/nowhere/{rng.randrange(1000)}"
        elif kind < 0.25:
            path = f"{base}/healthz"
        elif kind < 0.40:
            method, path = "POST", f"{base}/orders"
        elif kind < 0.50:
            headers, path = {"x-canary": "on", "accept": "*/*"}, f"{base}/profile"
        query = "page=2&sort=asc" if kind > 0.9 else ""
        out.append(RequestHead(method, hostname(h), path, query, headers))
    return out


def prepare(size: int, *, seed: int) -> Prepared:
    ps = policies(size)
    inventory = table.inventory_from_clusters(ps.clusters)
    compile_s = []
    compiled = None
    for _ in range(3):
        start = time.perf_counter()
        compiled = table.compile_table(ps, inventory, version=1)
        compile_s.append(time.perf_counter() - start)
    assert compiled is not None
    return Prepared(size, compiled, min(compile_s), random.Random(seed), routes_by_host(size))


@dataclasses.dataclass
class Prepared:
    size: int
    table: table.RoutingTable
    compile_s: float
    rng: random.Random
    by_host: dict[int, list[int]]
    batches_ns: list[float] = dataclasses.field(default_factory=list)  # per decision
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)


def run_batch(prepared: Prepared, count: int) -> None:
    """Time `count` decisions on fresh requests and record the time per decision.

    The requests are built just before the timed loop, as a gateway decides on a request it has
    just parsed: the table is what may be cold in the CPU cache, not the request.
    """
    heads = requests(prepared.by_host, count, prepared.rng)
    rolls = [prepared.rng.random() for _ in heads]
    decide, compiled = matching.decide, prepared.table
    start_ns = time.perf_counter_ns()
    for head, roll in zip(heads, rolls, strict=True):
        decide(compiled, head, roll=roll)
    prepared.batches_ns.append((time.perf_counter_ns() - start_ns) / count)
    for head, roll in zip(heads, rolls, strict=True):
        kind = type(decide(compiled, head, roll=roll)).__name__
        prepared.outcomes[kind] = prepared.outcomes.get(kind, 0) + 1


def summary(prepared: Prepared) -> dict[str, object]:
    hosts = prepared.table.hosts.values()
    return {
        "routes": prepared.size,
        "hostnames": HOSTNAMES,
        "rules_per_host": sum(len(e.rules) for e in hosts) / len(hosts),
        "compile_s": prepared.compile_s,
        "decide_median_us": statistics.median(prepared.batches_ns) / 1000,
        "decide_p90_batch_us": statistics.quantiles(prepared.batches_ns, n=10)[-1] / 1000,
        "outcomes": prepared.outcomes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch", type=int, default=2_000, help="decisions per timed batch")
    parser.add_argument("--batches", type=int, default=100, help="timed batches per table")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    prepared = [prepare(size, seed=args.seed) for size in SIZES]
    for p in prepared:  # warm-up, not recorded
        run_batch(p, args.batch)
        p.batches_ns.clear()
        p.outcomes.clear()
    # Batches alternate between the tables so that a noisy neighbour slows every size alike.
    for _ in range(args.batches):
        for p in prepared:
            run_batch(p, args.batch)
    rows = [summary(p) for p in prepared]
    medians = [float(str(row["decide_median_us"])) for row in rows]
    report = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "parameters": vars(args),
        "rows": rows,
        "ratio_10000_to_10": medians[-1] / medians[0],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'routes':>8} {'rules/host':>10} {'compile s':>10} {'decide µs':>10} {'p90 µs':>8}")
    for row in rows:
        print(
            f"{row['routes']:>8} {row['rules_per_host']:>10.1f} {row['compile_s']:>10.3f} "
            f"{row['decide_median_us']:>10.2f} {row['decide_p90_batch_us']:>8.2f}"
        )
    print(f"median decision, 10,000 routes vs 10: {medians[-1] / medians[0]:.2f}x")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
