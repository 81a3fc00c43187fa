"""Instructions and simulated cache misses per routing decision, by table size (valgrind).

Not a test: run it by hand, `python -m benchmarks.routing_cache` (needs valgrind). Wall-clock
figures on a shared VM move from run to run; valgrind's cachegrind counts the instructions a
decision executes and simulates a cache hierarchy, the same count for the same inputs whatever
else the machine does. It answers where `bench_routing`'s growth between table sizes comes from:
more work per decision (instructions) or the same work on memory that is not cached (misses).

For each size, the `bench_routing` table is built, every path index built and every rule's kept
decisions made (`bench_routing.first_requests`, then 40,000 requests: the steady state the timed
batches measure), the collector disabled; then `--decisions` more decisions. The program runs twice
under cachegrind, once without those decisions, and the difference divided by `--decisions` is the
cost of one decision. `--last-level` sets the simulated last-level cache: 1 MiB is this machine's
per-core L2 (the first level a miss leaves the core for); 32 MiB its L3. Python's hash seed is
fixed, so two runs lay the dicts out alike. The simulation is the machine's cache geometry, not its
latencies: multiply misses by a latency to estimate time, and read it next to bench_routing.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import subprocess
import sys

from benchmarks import bench_routing
from policies import matching, table

EVENTS = {  # cachegrind's summary lines: instructions, L1 data misses, last-level data misses
    "I": r"I\s+refs:\s+([\d,]+)",
    "D1": r"D1\s+misses:\s+([\d,]+)",
    "LL": r"LLd misses:\s+([\d,]+)",
}


def decide(size: int, decisions: int) -> None:
    """The measured program: build, warm up, then `decisions` decisions; exit without teardown."""
    policies = bench_routing.policies(size)
    compiled = table.compile_table(
        policies, table.inventory_from_clusters(policies.clusters), version=1
    )
    for entry in bench_routing.entries(compiled):
        entry.path_index()
    by_host = bench_routing.routes_by_host(size)
    rng = random.Random(7)
    gc.collect()
    gc.disable()
    warm = bench_routing.first_requests(by_host, rng) + bench_routing.requests(by_host, 40_000, rng)
    for head in warm:
        matching.decide(compiled, head, roll=rng.random())
    heads = bench_routing.requests(by_host, 20_000, rng)
    rolls = [rng.random() for _ in heads]
    for head, roll in zip(heads[:decisions], rolls, strict=False):
        matching.decide(compiled, head, roll=roll)
    sys.stdout.flush()
    os._exit(0)  # interpreter teardown would differ between the two runs


def counts(size: int, decisions: int, last_level: int) -> dict[str, int]:
    run = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=yes",
            "--cachegrind-out-file=/dev/null",
            f"--LL={last_level},16,64",
            sys.executable,
            "-m",
            "benchmarks.routing_cache",
            "--run",
            str(size),
            str(decisions),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    found = {}
    for name, pattern in EVENTS.items():
        match = re.search(pattern, run.stderr)
        if match is None:
            raise SystemExit(f"no {name} count in valgrind's output:\n{run.stderr[-2000:]}")
        found[name] = int(match.group(1).replace(",", ""))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000, help="at most 20,000")
    parser.add_argument("--last-level", type=int, default=1 << 20, help="bytes (default 1 MiB)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(bench_routing.SIZES))
    parser.add_argument("--run", type=int, nargs=2, help=argparse.SUPPRESS)  # the measured child
    args = parser.parse_args()
    if args.run is not None:
        decide(*args.run)
    decisions = min(args.decisions, 20_000)
    print(f"per decision; simulated last level {args.last_level / (1 << 20):g} MiB")
    print(f"{'routes':>8} {'instructions':>12} {'L1d misses':>10} {'LL misses':>9}")
    for size in args.sizes:
        base, more = counts(size, 0, args.last_level), counts(size, decisions, args.last_level)
        per = {name: (more[name] - base[name]) / decisions for name in EVENTS}
        print(f"{size:>8,} {per['I']:>12,.0f} {per['D1']:>10.1f} {per['LL']:>9.1f}")


if __name__ == "__main__":
    main()
