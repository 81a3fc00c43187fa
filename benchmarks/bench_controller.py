"""Controller benchmark at fleet scale: compile time, memory, and EndpointSlice change → gateways.

Not a test: run it by hand, `python -m benchmarks.bench_controller` (from the repository root).
Loopback only. Three kinds of processes, so that each number belongs to one party:

* **simulators** (`--role sims`): a hub and `--clusters` member clusters (the Kubernetes API
  simulator of tests/fakes), each member with `--services` Services and one EndpointSlice of
  `--endpoints` ready endpoints per Service; the hub has one MemberCluster per member (kubeconfig
  files) and one TrafficPolicy per Service (its own hostname, backendRef to that Service on every
  member cluster). It changes one slice when told to on stdin.
* **the controller** (this process): a Kubernetes-mode `KubeController` on uvloop, serving the
  snapshot API on 127.0.0.1, with the reconcile debounce of `fleetgate controller` (`--debounce`).
* **gateways** (`--role gateways`): `--gateways` snapshot subscribers (gateway.subscriber, real
  HTTP long-poll, decode, verify) in `--gateway-processes` processes.

Measured:

* initial sync: controller start → first snapshot holding every endpoint; RSS of the controller
  process before and after (VmRSS, VmHWM from /proc/self/status);
* compile: the pure pipeline on the synced inputs, median of `--compiles` runs: merge inventory,
  `compile_table`, `Snapshot.encode` (dump + JSON), and a gateway's decode
  (`policies.snapshot.loads`), as after a policy change; then, as after one EndpointSlice change,
  the incremental compile (`policies.incremental`), its encode, the delta
  (`policies.delta.encode_delta`) and a gateway applying it (`apply_delta`);
* change → gateways: `--changes` times, one EndpointSlice of a random member and Service gets a
  new endpoint address; from the write (sent to the simulators) to (a) the snapshot carrying it
  being published and (b) every gateway having applied it (the controller's registry: each
  gateway reports its applied version on its next poll, sent the moment it applied). The
  controller runs as `fleetgate controller` does: a lone change is compiled at once (leading-edge
  debounce), incrementally, and reaches the gateways as a delta.

Results: a table on stdout and benchmarks/results/bench_controller.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web

RESULTS = Path(__file__).parent / "results" / "bench_controller.json"


# -- simulators process --------------------------------------------------------------------------


def address(cluster: int, service: int, index: int, generation: int = 0) -> str:
    """A unique loopback address per endpoint (never connected to: gateways only compile)."""
    host = service * 16 + index + generation * 10_000
    return f"127.{10 + cluster}.{host // 250}.{host % 250 + 1}"


async def run_sims(args: argparse.Namespace) -> None:
    from tests.controller.hub_objects import member_cluster, traffic_policy
    from tests.controller.kube_objects import endpoint, endpoint_slice, service
    from tests.fakes.kube_api import KubeApiSimulator
    from tests.fakes.kube_config import write_kubeconfig

    directory = Path(args.dir)
    hub = KubeApiSimulator("hub", bookmark_interval_s=60.0)
    await hub.start()
    members = []
    for c in range(args.clusters):
        sim = KubeApiSimulator(f"m{c}", bookmark_interval_s=60.0)
        await sim.start()
        for s in range(args.services):
            sim.store.upsert(service(f"svc-{s}"))
            sim.store.upsert(
                endpoint_slice(
                    f"svc-{s}-1",
                    service_name=f"svc-{s}",
                    endpoints=[endpoint(address(c, s, e)) for e in range(args.endpoints)],
                )
            )
        path = write_kubeconfig(directory / f"m{c}.kubeconfig", [sim])
        hub.store.upsert(member_cluster(f"m{c}", kubeconfig=str(path), priority=c % 3))
        members.append(sim)
    for s in range(args.services):
        hub.store.upsert(
            traffic_policy(f"svc-{s}", hostnames=[f"svc-{s}.bench.test"], service=f"svc-{s}")
        )
    hub_path = write_kubeconfig(directory / "hub.kubeconfig", [hub])
    print(json.dumps({"hub": str(hub_path)}), flush=True)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        c, s, generation = (int(x) for x in line.split())
        addresses = [address(c, s, 0, generation)] + [
            address(c, s, e) for e in range(1, args.endpoints)
        ]
        members[c].store.upsert(
            endpoint_slice(
                f"svc-{s}-1", service_name=f"svc-{s}", endpoints=[endpoint(a) for a in addresses]
            )
        )
        print("ok", flush=True)
    for sim in (hub, *members):
        await sim.stop()


# -- gateways process ----------------------------------------------------------------------------


class _Sink:
    """A gateway's table holder, without the proxy: decode and verify are what is measured."""

    def __init__(self) -> None:
        self.version = 0

    def apply(self, table: Any) -> None:
        self.version = table.version


async def run_gateways(args: argparse.Namespace) -> None:
    from gateway.subscriber import Subscriber, SubscriberSettings

    async with asyncio.TaskGroup() as group:
        for index in range(args.first, args.first + args.count):
            settings = SubscriberSettings(
                controller_url=args.controller, gateway_id=f"bench-gw-{index}", zone="bench"
            )
            group.create_task(Subscriber(settings, _Sink()).run(), name=f"gw{index}")


# -- the controller (this process) ---------------------------------------------------------------


def memory() -> dict[str, float]:
    """VmRSS and VmHWM of this process, MiB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = round(int(value.split()[0]) / 1024, 1)
    return found


async def poll(check: Callable[[], bool], *, interval_s: float = 0.001) -> None:
    """Return once `check()` holds (polled: the controller offers no event for "published X")."""
    while True:
        if check():
            return
        await asyncio.sleep(interval_s)


def median_s(samples: list[float]) -> float:
    return round(statistics.median(samples), 4)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    from controller.health import HealthSettings
    from controller.hubsource import HubSettings
    from controller.kube import ClusterClient
    from controller.kubemode import KubeController, KubeModeSettings, connect_hub
    from controller.members import MemberSettings
    from controller.reconcile import ReconcileSettings

    report: dict[str, Any] = {
        "parameters": vars(args) | {"machine": platform.platform(), "cpus": os.cpu_count()},
        "memory_mib": {"before": memory()},
    }
    scratch = tempfile.TemporaryDirectory(prefix="bench-controller-")
    sims = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.bench_controller", "--role", "sims",
        "--dir", scratch.name, "--clusters", str(args.clusters), "--services", str(args.services),
        "--endpoints", str(args.endpoints),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    gateways: list[asyncio.subprocess.Process] = []
    runner: web.AppRunner | None = None
    hub: ClusterClient | None = None
    try:
        assert sims.stdout is not None
        assert sims.stdin is not None
        hub_kubeconfig = Path(json.loads(await sims.stdout.readline())["hub"])
        settings = KubeModeSettings(
            identity="bench",
            lease_namespace="fleetgate",
            hub_kubeconfig=hub_kubeconfig,
            member_kubeconfigs="file",
            hub=HubSettings(),
            members=MemberSettings(health=HealthSettings(interval_s=5.0)),
            reconcile=ReconcileSettings(
                debounce_s=args.debounce, max_delay_s=max(2.0, 4 * args.debounce)
            ),
        )
        hub = await connect_hub(settings)
        controller = KubeController(settings, hub)
        app = web.Application()
        controller.add_routes(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        total = args.clusters * args.services * args.endpoints

        def endpoints_published() -> int:
            latest = controller.publisher.latest
            if latest is None:
                return 0
            backends = latest.table.backends.values()
            return sum(len(t.endpoints) for b in backends for t in b.targets)

        async with asyncio.TaskGroup() as group:
            running = group.create_task(controller.run(), name="bench.controller")
            started = time.perf_counter()
            await poll(lambda: endpoints_published() >= total, interval_s=0.02)
            report["initial_sync_s"] = round(time.perf_counter() - started, 3)
            report["memory_mib"]["synced"] = memory()
            latest = controller.publisher.latest
            assert latest is not None
            report["snapshot_bytes"] = len(latest.body)

            report["compile"] = await asyncio.to_thread(compile_figures, controller, args.compiles)
            report["memory_mib"]["after_compiles"] = memory()

            per_process = -(-args.gateways // args.gateway_processes)
            for start in range(0, args.gateways, per_process):
                gateways.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "benchmarks.bench_controller",
                        "--role",
                        "gateways",
                        "--controller",
                        f"http://{host}:{port}",
                        "--first",
                        str(start),
                        "--count",
                        str(min(per_process, args.gateways - start)),
                    )
                )
            ids = [f"bench-gw-{i}" for i in range(args.gateways)]
            version = latest.version
            rollout = await controller.publisher.wait_applied(version, ids, timeout_s=120)
            assert rollout.done, f"gateways never applied v{version}: {rollout}"

            rng = random.Random(args.seed)
            published: list[float] = []
            first: list[float] = []  # the first gateway applied it
            applied: list[float] = []  # every gateway applied it
            for generation in range(1, args.changes + 1):
                c, s = rng.randrange(args.clusters), rng.randrange(args.services)
                wanted = address(c, s, 0, generation)
                before = controller.publisher.latest
                assert before is not None
                changed_at = time.perf_counter()
                sims.stdin.write(f"{c} {s} {generation}\n".encode())
                await sims.stdin.drain()
                await poll(
                    functools.partial(_carries, controller.publisher, before.version, wanted)
                )
                published.append(time.perf_counter() - changed_at)
                new = controller.publisher.latest
                assert new is not None
                await poll(functools.partial(_any_applied, controller.publisher, new.version))
                first.append(time.perf_counter() - changed_at)
                rollout = await controller.publisher.wait_applied(new.version, ids, timeout_s=120)
                assert rollout.done, f"gateways never applied v{new.version}: {rollout}"
                applied.append(time.perf_counter() - changed_at)
                await sims.stdout.readline()
                await asyncio.sleep(args.pause)
            report["change_to_published_s"] = {
                "median": median_s(published),
                "max": round(max(published), 4),
            }
            report["change_to_first_gateway_applied_s"] = {
                "median": median_s(first),
                "max": round(max(first), 4),
            }
            report["change_to_all_gateways_applied_s"] = {
                "median": median_s(applied),
                "max": round(max(applied), 4),
                "gateways": args.gateways,
            }
            report["served"] = dict(controller.publisher.served)
            report["reconcile"] = {
                k: v
                for k, v in dataclasses.asdict(controller.reconciler.status).items()
                if k in ("builds", "incremental", "published")
            }
            report["memory_mib"]["end"] = memory()
            running.cancel()
    finally:
        if hub is not None:
            await hub.close()
        for process in (*gateways, sims):
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if runner is not None:
            await runner.cleanup()
        scratch.cleanup()
    return report


def _carries(publisher: Any, after: int, address_: str) -> bool:
    """The latest snapshot is newer than `after` and has the endpoint `address_`."""
    snapshot = publisher.latest
    if snapshot is None or snapshot.version <= after:
        return False
    return address_.encode() in snapshot.body


def _any_applied(publisher: Any, version: int) -> bool:
    return any(g.applied >= version for g in publisher.gateways() if not g.local)


def compile_figures(controller: Any, runs: int) -> dict[str, float]:
    """The pure pipeline on the controller's current inputs (worker thread, as in reconcile):
    from scratch (`compile_table`, as after a policy change), and after one EndpointSlice change
    (`policies.incremental.Compiler`, the delta, and a gateway applying it)."""
    from controller.published import Snapshot
    from controller.reconcile import merge_inventory
    from policies import delta
    from policies import snapshot as wire
    from policies import table as tables
    from policies.incremental import Compiler
    from policies.table import Inventory

    load = controller.load
    observed = controller._observed()
    samples: dict[str, list[float]] = {
        "merge": [],
        "compile_table": [],
        "encode": [],
        "decode": [],
        "incremental_compile": [],
        "incremental_encode": [],
        "delta_encode": [],
        "delta_apply": [],
    }
    compiler = Compiler()
    for run in range(runs):
        t0 = time.perf_counter()
        inventory = merge_inventory(load.policies, observed)
        t1 = time.perf_counter()
        table = tables.compile_table(load.policies, inventory, version=run + 1)
        t2 = time.perf_counter()
        snapshot = Snapshot.encode(table)
        t3 = time.perf_counter()
        held, digests = wire.loads_digested(snapshot.body)  # as gateway.subscriber.decode
        t4 = time.perf_counter()
        # One EndpointSlice change: one (cluster, service port) gets another first endpoint.
        compiler.compile(load.policies, inventory, version=run + 1)
        key, endpoints = list(inventory.endpoints.items())[run * 997 % len(inventory.endpoints)]
        moved = (dataclasses.replace(endpoints[0], host=f"127.99.0.{run + 1}"), *endpoints[1:])
        changed = Inventory({**inventory.endpoints, key: moved})
        t5 = time.perf_counter()
        compiled = compiler.compile(load.policies, changed, version=run + 2)
        t6 = time.perf_counter()
        Snapshot.from_parts(compiled.table, compiled.parts)
        t7 = time.perf_counter()
        body = delta.encode_delta(digests, compiled.parts, version=run + 2)
        t8 = time.perf_counter()
        assert body is not None
        assert compiled.changed
        applied, _ = delta.apply_delta(held, digests, body)
        t9 = time.perf_counter()
        assert applied == compiled.table
        spent = (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5, t7 - t6, t8 - t7, t9 - t8)
        for key_, seconds in zip(samples, spent, strict=True):
            samples[key_].append(seconds)
    figures = {f"{key}_s": median_s(values) for key, values in samples.items()}
    figures["controller_total_s"] = round(
        figures["merge_s"] + figures["compile_table_s"] + figures["encode_s"], 4
    )
    return figures


def render(report: dict[str, Any]) -> str:
    p = report["parameters"]
    c, mem = report["compile"], report["memory_mib"]
    lines = [
        f"{p['clusters']} member clusters x {p['services']} services x {p['endpoints']} endpoints"
        f" = {p['clusters'] * p['services'] * p['endpoints']} endpoints;"
        f" snapshot {report['snapshot_bytes'] / 1e6:.1f} MB",
        f"initial sync (start -> every endpoint published)   {report['initial_sync_s']:.2f} s",
        f"compile on the controller (median of {p['compiles']})          "
        f"{c['controller_total_s']:.3f} s"
        f"  (merge {c['merge_s']:.3f}, compile_table {c['compile_table_s']:.3f},"
        f" encode {c['encode_s']:.3f})",
        f"decode + verify on one gateway                     {c['decode_s']:.3f} s",
        f"after one EndpointSlice change: incremental compile {c['incremental_compile_s']:.4f} s,"
        f" encode {c['incremental_encode_s']:.4f}, delta {c['delta_encode_s']:.5f},"
        f" a gateway applying it {c['delta_apply_s']:.4f} s",
        f"controller RSS: {mem['before']['VmRSS']} MiB before, {mem['synced']['VmRSS']} synced,"
        f" peak {mem['end']['VmHWM']} MiB",
        f"EndpointSlice change -> snapshot published          median"
        f" {report['change_to_published_s']['median'] * 1000:.0f} ms"
        f" (max {report['change_to_published_s']['max'] * 1000:.0f})",
        f"EndpointSlice change -> first gateway applied       median"
        f" {report['change_to_first_gateway_applied_s']['median'] * 1000:.0f} ms"
        f" (max {report['change_to_first_gateway_applied_s']['max'] * 1000:.0f})",
        f"EndpointSlice change -> all {p['gateways']} gateways applied    median"
        f" {report['change_to_all_gateways_applied_s']['median'] * 1000:.0f} ms"
        f" (max {report['change_to_all_gateways_applied_s']['max'] * 1000:.0f});"
        f" target <= 500 ms",
        f"snapshots served: {report['served']}; rebuilds: {report['reconcile']}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("bench", "sims", "gateways"), default="bench")
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--gateways", type=int, default=10)
    parser.add_argument("--gateway-processes", type=int, default=2)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--compiles", type=int, default=3)
    parser.add_argument("--debounce", type=float, default=0.2, help="reconcile debounce (s)")
    parser.add_argument("--pause", type=float, default=0.5, help="between two changes (s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--controller", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    role = {"sims": run_sims, "gateways": run_gateways}.get(args.role)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if role is not None:
            with contextlib.suppress(KeyboardInterrupt):
                runner.run(role(args))
            return
        report = runner.run(bench(args))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"(details: {RESULTS})")


if __name__ == "__main__":
    main()
