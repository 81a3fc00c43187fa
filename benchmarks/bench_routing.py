"""Routing-core benchmark: compile time and median `matching.decide` time by table size.

Not a test: run it by hand, `python -m benchmarks.bench_routing`. Tables of 10, 1,000 and 10,000
routes over 1,000 hostnames (a route covers 100, 1 or a tenth of a hostname's traffic), each route
with four rules of the usual kinds (PathPrefix, Exact, method, header), one wildcard route and one
route without hostnames. Requests come from a seeded generator: a host, a route serving it, one of
its rules' paths (5 % miss every rule and get the 404), built fresh before each timed batch as a
gateway decides on a request it has just parsed. Decision time is `time.perf_counter_ns` around a
batch of decisions, divided per decision; the median of the batches is reported, with the same
batches' thread CPU time (`time.thread_time_ns`), which leaves out the time other processes held
the core on a shared machine. Batches alternate between the tables, so a busy machine slows every
size alike and the ratio between sizes stays meaningful. Compile time is the best of three (wall
and thread CPU time); the host entries' path indexes are built on their first lookup, so their
build time is reported on its own ("index s", every entry of the table). Likewise a rule keeps
its decisions (one per backend) from its first request on, so before the timed batches every
(host, route) pair gets one request of each kind, shuffled, timed apart ("first µs"): the timed
batches measure the steady state a gateway reaches after the first request for each rule, not
those first requests.

`candidates` is the mean number of rules a request's path index hands to the matcher (the rules
whose path may hold): the work per decision, which should not grow with the table. One more row,
10,000 routes with requests to 10 hostnames only, does the same work on a table that stays in
the CPU caches: what is left between it and the 10,000 row is memory latency, not matching work.
The last row asks the 10,000-route table's hostnames as real traffic tends to, by a Zipf law
(the i-th hostname in proportion to 1 / i): a few hot hostnames stay cached, the long tail does
not. The target's ratio is the uniform rows'; this one is reported beside it, not instead. (The
10-route table is all in the caches under either mix: 10 distinct host entries.)
Results go to benchmarks/results/bench_routing.json and a table on stdout, with the targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

from policies import acyclic, matching, table
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
HOT_HOSTS = 10  # the extra row: the largest table, requests to this many hostnames only
ZIPF_S = 1.0  # the last row: the largest table, the i-th hostname asked with weight 1 / i**ZIPF_S
TARGET_US, TARGET_RATIO, TARGET_COMPILE_S = 5.0, 1.5, 1.0
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


def requests(
    by_host: dict[int, list[int]],
    count: int,
    rng: random.Random,
    cum_weights: list[float] | None = None,
) -> list[RequestHead]:
    """`count` requests; hosts uniformly, or by `cum_weights` (cumulative, in host order)."""
    out = []
    hosts = sorted(by_host)
    for _ in range(count):
        if cum_weights is None:
            h = hosts[rng.randrange(len(hosts))]
        else:
            h = rng.choices(hosts, cum_weights=cum_weights)[0]
        out.append(request(h, rng.choice(by_host[h]), rng.random(), rng))
    return out


def request(host: int, route: int, kind: float, rng: random.Random) -> RequestHead:
    """A request to `host` for `route`'s paths; `kind` in [0, 1) picks which (see `KINDS`)."""
    base = f"/r{route}"
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
    return RequestHead(method, hostname(host), path, query, headers)


KINDS = (0.0, 0.1, 0.3, 0.45, 0.6, 0.95)  # one of each: 404, Exact, POST, header, split, query


def first_requests(by_host: dict[int, list[int]], rng: random.Random) -> list[RequestHead]:
    """One request of every kind to every (host, route) pair, shuffled: after them, every rule
    and path the timed requests use has been seen once (see `warm_up`)."""
    out = [
        request(h, route, kind, rng)
        for h, routes in by_host.items()
        for route in routes
        for kind in KINDS
    ]
    rng.shuffle(out)
    return out


def zipf_weights(count: int, s: float) -> list[float]:
    """Cumulative weights of `count` hosts, the i-th (from 1) asked in proportion to 1 / i**s."""
    return list(itertools.accumulate(1 / (i**s) for i in range(1, count + 1)))


def prepare(
    size: int, *, seed: int, hot_hosts: int | None = None, zipf: float | None = None
) -> Prepared:
    ps = policies(size)
    inventory = table.inventory_from_clusters(ps.clusters)
    compile_s, compile_cpu_s, index_s = [], [], []
    compiled = None
    for _ in range(3):
        start, start_cpu = time.perf_counter(), time.thread_time()
        compiled = table.compile_table(ps, inventory, version=1)
        compile_s.append(time.perf_counter() - start)
        compile_cpu_s.append(time.thread_time() - start_cpu)
        start = time.perf_counter()
        with acyclic.paused_collector():  # as in compile: a full collection is no index cost
            for entry in entries(compiled):
                entry.path_index()
        index_s.append(time.perf_counter() - start)
    assert compiled is not None
    by_host = routes_by_host(size)
    if hot_hosts is not None:
        by_host = {h: by_host[h] for h in sorted(by_host)[:hot_hosts]}
    return Prepared(
        size,
        compiled,
        min(compile_s),
        min(compile_cpu_s),
        min(index_s),
        random.Random(seed),
        by_host,
        None if zipf is None else zipf_weights(len(by_host), zipf),
    )


def entries(compiled: table.RoutingTable) -> list[table.HostRoutes]:
    found = [*compiled.hosts.values(), *(e for _, e in compiled.wildcards)]
    return found if compiled.any_host is None else [*found, compiled.any_host]


@dataclasses.dataclass
class Prepared:
    size: int
    table: table.RoutingTable
    compile_s: float
    compile_cpu_s: float  # thread CPU time
    index_s: float
    rng: random.Random
    by_host: dict[int, list[int]]
    cum_weights: list[float] | None  # None: hosts asked uniformly; else a Zipf mix (`requests`)
    batches_ns: list[float] = dataclasses.field(default_factory=list)  # per decision, wall
    batches_cpu_ns: list[float] = dataclasses.field(default_factory=list)  # thread CPU time
    first_ns: list[float] = dataclasses.field(default_factory=list)  # `warm_up`, per decision
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    candidates: list[int] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        hot = len(self.by_host) < HOSTNAMES
        if self.cum_weights is not None:
            return f"{self.size:,} (Zipf {ZIPF_S})"
        return f"{self.size:,}" + (f" ({len(self.by_host)} hosts)" if hot else "")


def run_batch(prepared: Prepared, count: int) -> None:
    """Time `count` decisions on fresh requests and record the time per decision.

    The requests are built just before the timed loop, as a gateway decides on a request it has
    just parsed: the table is what may be cold in the CPU cache, not the request.
    """
    heads = requests(prepared.by_host, count, prepared.rng, prepared.cum_weights)
    rolls = [prepared.rng.random() for _ in heads]
    decide, compiled = matching.decide, prepared.table
    start_cpu_ns = time.thread_time_ns()
    start_ns = time.perf_counter_ns()
    for head, roll in zip(heads, rolls, strict=True):
        decide(compiled, head, roll=roll)
    prepared.batches_ns.append((time.perf_counter_ns() - start_ns) / count)
    prepared.batches_cpu_ns.append((time.thread_time_ns() - start_cpu_ns) / count)
    for head, roll in zip(heads, rolls, strict=True):
        kind = type(decide(compiled, head, roll=roll)).__name__
        prepared.outcomes[kind] = prepared.outcomes.get(kind, 0) + 1
        entry = compiled.lookup(head.host)
        prepared.candidates.append(0 if entry is None else len(entry.path_index().items(head.path)))


def warm_up(prepared: Prepared, batch: int) -> None:
    """Decide `first_requests` in batches, timed apart as the first-request cost.

    A rule makes its decisions, one per backend, on its first request and keeps them
    (`policies.matching.settle`), so the first request for a rule costs more than the ones after
    it: a one-time cost per rule, like the path index (`index s`), that a gateway pays once per
    table, not per request.
    The steady state is what the timed batches measure; this is the cost before it.
    """
    heads = first_requests(prepared.by_host, prepared.rng)
    decide, compiled = matching.decide, prepared.table
    for start in range(0, len(heads), batch):
        chunk = heads[start : start + batch]
        rolls = [prepared.rng.random() for _ in chunk]
        start_ns = time.perf_counter_ns()
        for head, roll in zip(chunk, rolls, strict=True):
            decide(compiled, head, roll=roll)
        prepared.first_ns.append((time.perf_counter_ns() - start_ns) / len(chunk))


def summary(prepared: Prepared) -> dict[str, object]:
    hosts = prepared.table.hosts.values()
    return {
        "routes": prepared.size,
        "hostnames": HOSTNAMES,
        "requested_hostnames": len(prepared.by_host),
        "host_mix": "uniform" if prepared.cum_weights is None else f"zipf {ZIPF_S}",
        "rules_per_host": sum(len(e.rules) for e in hosts) / len(hosts),
        "candidates_per_request": statistics.mean(prepared.candidates),
        "compile_s": prepared.compile_s,
        "compile_cpu_s": prepared.compile_cpu_s,
        "index_s": prepared.index_s,
        "decide_median_us": statistics.median(prepared.batches_ns) / 1000,
        "decide_cpu_median_us": statistics.median(prepared.batches_cpu_ns) / 1000,
        "decide_p90_batch_us": statistics.quantiles(prepared.batches_ns, n=10)[-1] / 1000,
        "first_request_median_us": statistics.median(prepared.first_ns) / 1000,
        "first_requests": sum(len(routes) for routes in prepared.by_host.values()) * len(KINDS),
        "outcomes": prepared.outcomes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch", type=int, default=2_000, help="decisions per timed batch")
    parser.add_argument("--batches", type=int, default=100, help="timed batches per table")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()
    prepared = [prepare(size, seed=args.seed) for size in SIZES]
    prepared.append(prepare(SIZES[-1], seed=args.seed, hot_hosts=HOT_HOSTS))
    prepared.append(prepare(SIZES[-1], seed=args.seed, zipf=ZIPF_S))
    for p in prepared:
        warm_up(p, args.batch)
    # Batches alternate between the tables so that a noisy neighbour slows every size alike.
    for _ in range(args.batches):
        for p in prepared:
            run_batch(p, args.batch)
    rows = [summary(p) for p in prepared]
    wall = [statistics.median(p.batches_ns) / 1000 for p in prepared]
    cpu = [statistics.median(p.batches_cpu_ns) / 1000 for p in prepared]
    largest = prepared[len(SIZES) - 1]
    report = {
        "machine": {
            "python": platform.python_version(),
            "cpu": platform.processor(),
            "cores": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "parameters": vars(args),
        "rows": rows,
        "ratio_10000_to_10": wall[len(SIZES) - 1] / wall[0],
        "cpu_ratio_10000_to_10": cpu[len(SIZES) - 1] / cpu[0],
        "zipf_ratio_10000_to_10": wall[-1] / wall[0],
        "targets": {"decide_us": TARGET_US, "ratio": TARGET_RATIO, "compile_s": TARGET_COMPILE_S},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"{'routes':>17} {'rules/host':>10} {'candidates':>10} {'compile s':>9} {'index s':>8} "
        f"{'decide µs':>9} {'cpu µs':>7} {'p90 µs':>7} {'first µs':>8}"
    )
    for p, row in zip(prepared, rows, strict=True):
        print(
            f"{p.label:>17} {row['rules_per_host']:>10.1f} {row['candidates_per_request']:>10.2f} "
            f"{row['compile_s']:>9.3f} {row['index_s']:>8.3f} {row['decide_median_us']:>9.2f} "
            f"{row['decide_cpu_median_us']:>7.2f} {row['decide_p90_batch_us']:>7.2f} "
            f"{row['first_request_median_us']:>8.2f}"
        )
    worst = max(wall[: len(SIZES)])
    ratio, cpu_ratio = wall[len(SIZES) - 1] / wall[0], cpu[len(SIZES) - 1] / cpu[0]
    print(
        f"median decision: slowest size {worst:.2f} µs (target <= {TARGET_US} µs); "
        f"10,000 routes vs 10: {ratio:.2f}x wall, {cpu_ratio:.2f}x cpu "
        f"(target <= {TARGET_RATIO}x)"
    )
    print(
        f"10,000 routes, hostnames asked by Zipf {ZIPF_S} (not the target's uniform mix) vs 10: "
        f"{wall[-1] / wall[0]:.2f}x wall, {cpu[-1] / cpu[0]:.2f}x cpu"
    )
    print(
        f"compile 10,000 routes: {largest.compile_s:.3f} s wall, {largest.compile_cpu_s:.3f} s cpu "
        f"(target <= {TARGET_COMPILE_S} s), + {largest.index_s:.3f} s to index every host entry "
        "(done on first lookup)"
    )
    print(
        "load average (1, 5, 15 min) before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + f", on {os.cpu_count()} cores"
    )
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
