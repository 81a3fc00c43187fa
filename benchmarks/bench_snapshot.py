"""In-process snapshot pipeline benchmark: compile_table, encode, decode + verify. Pure CPU.

Not a test: `python -m benchmarks.bench_snapshot [--clusters 10 --services 500 --endpoints 10]`
(from the repository root). The fleet of benchmarks.bench_controller without its processes: one
TrafficPolicy per Service on every member cluster, `--endpoints` ready endpoints per Service and
cluster; then, as after an EndpointSlice change, one Service's endpoints in one cluster change
and the table is compiled again: from scratch (`compile_table`, encode, a gateway's full decode)
and incrementally (`policies.incremental.Compiler`, the delta from the previous table, a gateway
applying it). Prints the median of `--runs` runs of each step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import yaml

from benchmarks.bench_controller import address
from controller.published import Snapshot
from gateway.subscriber import decode
from policies import delta
from policies import snapshot as wire
from policies.incremental import Compiler
from policies.loading import load_documents
from policies.model import PolicySet, ServiceRef
from policies.table import Endpoint, Inventory, compile_table


def fleet(clusters: int, services: int) -> PolicySet:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "fleetgate.io/v1alpha1",
            "kind": "MemberCluster",
            "metadata": {"name": f"m{c}", "labels": {"region": f"m{c}"}},
            "spec": {"priority": c % 3},
        }
        for c in range(clusters)
    ]
    documents += [
        {
            "apiVersion": "fleetgate.io/v1alpha1",
            "kind": "TrafficPolicy",
            "metadata": {"name": f"svc-{s}", "namespace": "shop"},
            "spec": {
                "hostnames": [f"svc-{s}.bench.test"],
                "rules": [{"name": "all", "backendRefs": [{"name": f"svc-{s}", "port": 80}]}],
            },
        }
        for s in range(services)
    ]
    result = load_documents([("fleet.yaml", yaml.safe_dump_all(documents))])
    assert len(result.policies.routes) == services
    assert len(result.policies.clusters) == clusters
    return result.policies


def inventory(clusters: int, services: int, endpoints: int, generation: int = 0) -> Inventory:
    found = {}
    for c in range(clusters):
        for s in range(services):
            hosts = [address(c, s, e) for e in range(endpoints)]
            if generation and (c, s) == (0, 0):
                hosts[0] = address(c, s, 0, generation)
            found[(f"m{c}", ServiceRef("shop", f"svc-{s}", 80))] = tuple(
                Endpoint(h, 8080, f"m{c}", zone=f"z{c % 3}") for h in hosts
            )
    return Inventory(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    policies = fleet(args.clusters, args.services)
    samples: dict[str, list[float]] = {
        "compile_table": [],
        "encode": [],
        "decode": [],
        "incremental_compile": [],
        "delta_encode": [],
        "delta_apply": [],
    }
    size = delta_size = 0
    compiler = Compiler()
    base = inventory(args.clusters, args.services, args.endpoints)
    compiler.compile(policies, base, version=1)
    held, digests = wire.loads_digested(
        Snapshot.encode(compile_table(policies, base, version=1)).body
    )
    for run in range(args.runs):
        found = inventory(args.clusters, args.services, args.endpoints, generation=run + 1)
        t0 = time.perf_counter()
        table = compile_table(policies, found, version=run + 2)
        t1 = time.perf_counter()
        snapshot = Snapshot.encode(table)
        t2 = time.perf_counter()
        decoded = decode(snapshot.body)
        t3 = time.perf_counter()
        assert decoded == table
        t4 = time.perf_counter()
        compiled = compiler.compile(policies, found, version=run + 2)
        t5 = time.perf_counter()
        body = delta.encode_delta(digests, compiled.parts, version=run + 2)
        t6 = time.perf_counter()
        assert body is not None
        held, digests = delta.apply_delta(held, digests, body)
        t7 = time.perf_counter()
        assert held == table == compiled.table
        spent = (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t6 - t5, t7 - t6)
        for key, seconds in zip(samples, spent, strict=True):
            samples[key].append(seconds)
        size, delta_size = len(snapshot.body), len(body)
    report = {f"{k}_s": round(statistics.median(v), 4) for k, v in samples.items()}
    report["snapshot_bytes"] = size
    report["delta_bytes"] = delta_size
    print(json.dumps(report))


if __name__ == "__main__":
    main()
