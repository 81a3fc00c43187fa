"""Kubernetes mode end to end, with real processes: a simulated hub and three simulated member
clusters (API simulators on 127.0.0.1), a real `fleetgate controller` process, two real
`fleetgate gateway` processes, and demo backends on 127.0.1.x / 127.0.2.x / 127.0.3.x.

* an EndpointSlice change in a member cluster changes what both gateways route to within 1 s;
* a 410 on a watch is recovered by a relist, and the change made meanwhile is not lost;
* a member cluster whose API goes away is marked down, then its traffic fails over;
* killing the controller leaves both gateways serving; a gateway restarted while the controller
  is down serves from its cache;
* two controllers elect one leader, and the standby takes over once the lease expires.

Loopback only; every wait is a bounded poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fleetgate import status_cmd
from fleetgate.demo_backend import BackendSpec, DemoBackend
from tests.conftest import eventually
from tests.controller.hub_objects import member_cluster, traffic_policy
from tests.controller.kube_objects import endpoint, endpoint_slice, service
from tests.fakes.kube_api import KubeApiSimulator
from tests.fakes.kube_config import write_kubeconfig
from tests.fakes.kube_store import kind_of
from tests.running import FleetgateProcess

# One event loop, not both: the code under test runs in the fleetgate processes (on uvloop, as
# in production); the test process only hosts the simulators and backends. Both loops would
# double the file's time for no extra coverage.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

SHOP = {"Host": "shop.example.com"}
CONTROLLER_BANNER = re.compile(r"serving snapshots on http://(\S+) \(Kubernetes mode")
SLICES = kind_of("discovery.k8s.io/v1", "EndpointSlice")
LEASES = kind_of("coordination.k8s.io/v1", "Lease")
LEASE_S = 3.0  # short leases keep the takeover quick; long enough for a loaded machine


def controller_args(hub_kubeconfig: Path, identity: str) -> list[str]:
    return [
        "controller", "--hub-kubeconfig", str(hub_kubeconfig), "--lease-namespace", "fleetgate",
        "--id", identity, "--listen", "127.0.0.1:0", "--member-kubeconfigs", "file",
        "--probe-interval", "0.1", "--down-after", "2", "--withdraw-after", "0.5",
        "--debounce", "0.02", "--lease-duration", str(LEASE_S),
        "--renew-deadline", str(LEASE_S * 2 / 3), "--retry-period", "0.2",
        "--log-level", "warning",
    ]  # fmt: skip


def gateway_args(controller: str, identity: str, cache: Path) -> list[str]:
    return [
        "gateway", "--controller", f"http://{controller}", "--listen", "127.0.0.1:0",
        "--admin", "127.0.0.1:0", "--id", identity, "--zone", "z1", "--cache-dir", str(cache),
        "--drain-timeout", "0.5", "--log-level", "warning",
    ]  # fmt: skip


def web_slice(backend: DemoBackend, name: str | None = None) -> dict[str, Any]:
    """One slice per backend: each demo backend has a port of its own."""
    return endpoint_slice(
        name or f"web-{backend.spec.cluster}",
        service_name="web",
        endpoints=[endpoint(backend.host)],
        ports=[("http", backend.port)],
    )


@dataclasses.dataclass
class Fleet:
    tmp: Path
    hub: KubeApiSimulator
    members: dict[str, KubeApiSimulator]
    backends: dict[str, DemoBackend]  # "a1", "a2", "b1", "c1"
    hub_kubeconfig: Path
    processes: list[FleetgateProcess] = dataclasses.field(default_factory=list)

    async def start(self, args: list[str], name: str, **options: Any) -> FleetgateProcess:
        process = FleetgateProcess(args, self.tmp / f"{name}.log")
        self.processes.append(process)
        return await process.start(**options)

    async def controller(self, identity: str) -> FleetgateProcess:
        args = controller_args(self.hub_kubeconfig, identity)
        return await self.start(args, identity, banner=CONTROLLER_BANNER)

    async def gateway(self, controller: str, identity: str) -> FleetgateProcess:
        args = gateway_args(controller, identity, self.tmp / f"cache-{identity}")
        return await self.start(args, identity)

    async def gateways(self, controller: str) -> list[FleetgateProcess]:
        """gw1 and gw2, started side by side."""
        return list(await asyncio.gather(*(self.gateway(controller, f"gw{n}") for n in (1, 2))))


@contextlib.asynccontextmanager
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    """A hub with three MemberClusters (a, b, c in failover order) and one TrafficPolicy; each
    member cluster has shop/web with one ready endpoint (a1, b1, c1). a2 is started, unused."""
    specs = {
        "a1": BackendSpec("a", host="127.0.1.1", pod="a1"),
        "a2": BackendSpec("a", host="127.0.1.2", pod="a2"),
        "b1": BackendSpec("b", host="127.0.2.1", pod="b1"),
        "c1": BackendSpec("c", host="127.0.3.1", pod="c1"),
    }
    backends = {name: DemoBackend(spec) for name, spec in specs.items()}
    sims: list[KubeApiSimulator] = []
    processes: list[FleetgateProcess] = []
    try:
        for backend in backends.values():
            await backend.start()
        hub = KubeApiSimulator("hub")
        sims.append(hub)
        await hub.start()
        members = {}
        for priority, name in enumerate("abc"):
            sim = KubeApiSimulator(name, bookmark_interval_s=0.5)
            sims.append(sim)
            await sim.start()
            sim.store.upsert(service("web"))
            sim.store.upsert(web_slice(backends[f"{name}1"]))
            path = write_kubeconfig(tmp_path / f"{name}.kubeconfig", [sim])
            hub.store.upsert(member_cluster(name, kubeconfig=str(path), priority=priority))
            members[name] = sim
        hub.store.upsert(traffic_policy("store"))
        hub_kubeconfig = write_kubeconfig(tmp_path / "hub.kubeconfig", [hub])
        state = Fleet(tmp_path, hub, members, backends, hub_kubeconfig, processes)
        yield state
    finally:
        for process in reversed(processes):
            await process.close()
        for sim in reversed(sims):
            await sim.stop()
        for backend in backends.values():
            await backend.stop()


async def run_cli(*args: str) -> tuple[int, str]:
    """A short-lived `fleetgate` command: exit status and stdout."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetgate", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def pod_of(session: aiohttp.ClientSession, gateway: FleetgateProcess) -> str:
    """The pod that answered one request through `gateway` ("" for a non-200 answer)."""
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with session.get(f"http://{gateway.listen}/", headers=SHOP, timeout=timeout) as r:
            await r.read()
            return r.headers.get("x-pod", "") if r.status == 200 else ""
    except (aiohttp.ClientError, TimeoutError):
        return ""


async def all_route_to(
    session: aiohttp.ClientSession, gateways: list[FleetgateProcess], pod: str, *, tries: int = 4
) -> bool:
    for gateway in gateways:
        for _ in range(tries):
            if await pod_of(session, gateway) != pod:
                return False
    return True


async def controller_status(controller: FleetgateProcess) -> dict[str, Any]:
    return await asyncio.to_thread(
        status_cmd.fetch, f"http://{controller.listen}/v1/status", timeout_s=5.0
    )


async def polled_status(controller: FleetgateProcess) -> dict[str, Any] | None:
    """`controller_status` for polls: None when the controller does not answer in time (a
    loaded machine), so the poll tries again instead of failing."""
    try:
        return await controller_status(controller)
    except OSError:
        return None


async def cluster_state(controller: FleetgateProcess, name: str) -> str:
    document = await polled_status(controller)
    if document is None:
        return ""
    return next((c["state"] for c in document["clusters"] if c["name"] == name), "")


async def test_member_cluster_changes_reach_both_gateways(tmp_path: Path) -> None:
    async with fleet(tmp_path) as f, aiohttp.ClientSession() as session:
        controller = await f.controller("c1")
        gateways = await f.gateways(controller.listen)

        async def route_to(pod: str) -> bool:
            return await all_route_to(session, gateways, pod)

        await eventually(lambda: route_to("a1"), timeout_s=10)

        # An EndpointSlice change: both gateways follow within a second.
        a = f.members["a"]
        changed_at = time.monotonic()
        a.store.upsert(web_slice(f.backends["a2"]))
        await eventually(lambda: route_to("a2"), timeout_s=1.0)
        followed_s = time.monotonic() - changed_at
        assert followed_s < 1.0

        # A 410: the watches break, a change lands, and the history they would resume from is
        # compacted away. The watchers relist, and the change is not lost.
        lists_before = sum(1 for r in a.requests if "endpointslices" in r.path and not r.is_watch)
        a.drop_watches()
        a.store.upsert(web_slice(f.backends["a1"]))
        a.compact()
        await eventually(lambda: route_to("a1"), timeout_s=5)
        lists_after = sum(1 for r in a.requests if "endpointslices" in r.path and not r.is_watch)
        assert lists_after > lists_before  # recovered by a relist

        # The member cluster's API goes away: marked down, then its traffic fails over to b.
        await a.stop()
        await eventually(
            lambda: _is_in(cluster_state(controller, "a"), {"down", "withdrawn"}), timeout_s=5
        )
        await eventually(lambda: route_to("b1"), timeout_s=5)
        await eventually(lambda: _is_in(cluster_state(controller, "a"), {"withdrawn"}))
        document = await controller_status(controller)
        assert {g["id"] for g in document["gateways"]} == {"gw1", "gw2"}

        async def both_applied() -> bool:
            document = await polled_status(controller)
            if document is None:
                return False
            version = document["snapshot"]["version"]
            return all(g["applied"] == version for g in document["gateways"])

        await eventually(both_applied, timeout_s=5)
        assert not status_cmd.healthy(document)  # a cluster is not up


async def test_gateways_serve_without_the_controller(tmp_path: Path) -> None:
    async with fleet(tmp_path) as f, aiohttp.ClientSession() as session:
        controller = await f.controller("c1")
        gateways = await f.gateways(controller.listen)
        await eventually(lambda: all_route_to(session, gateways, "a1"), timeout_s=10)

        # `fleetgate status` as a person runs it.
        code, text = await run_cli("status", "--controller", f"http://{controller.listen}")
        assert code == 0, text
        assert "controller c1 (leader)" in text
        assert "shop/web:80 1/1" in text

        controller.send(signal.SIGKILL)
        await controller.wait()
        assert await all_route_to(session, gateways, "a1", tries=10)

        # A gateway restarted while the controller is down serves its cached snapshot.
        first = gateways[0]
        first.send(signal.SIGTERM)
        assert await first.wait() == 0
        again = await f.gateway(controller.listen, "gw1")
        assert await all_route_to(session, [again, gateways[1]], "a1", tries=10)
        assert "cached snapshot" in again.text()


async def test_two_controllers_elect_one_leader_and_the_standby_takes_over(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path) as f:
        one, two = await asyncio.gather(f.controller("c1"), f.controller("c2"))

        async def leaders() -> set[str]:
            found = set()
            for process in (one, two):
                if process.proc is not None and process.proc.returncode is None:
                    document = await polled_status(process)
                    if document is not None and document["controller"]["leader"]:
                        found.add(document["controller"]["id"])
            return found

        elected: set[str] = set()

        async def one_leader() -> bool:
            elected.clear()
            elected.update(await leaders())
            return len(elected) == 1

        await eventually(one_leader, timeout_s=10)
        [leader_id] = elected
        leader, standby = (one, two) if leader_id == "c1" else (two, one)
        standby_id = "c2" if leader_id == "c1" else "c1"
        assert (
            f.hub.store.get(LEASES, "fleetgate", "fleetgate-controller")["spec"]["holderIdentity"]
            == leader_id
        )

        # Both serve the same table (compared with the leader's latest each time: a rebuild
        # right after a change publishes the intermediate states of the initial sync too).
        async def same_table() -> bool:
            latest = await controller_status(leader)
            return await _standby_serves(standby, latest["snapshot"]["checksum"])

        await eventually(same_table, timeout_s=5)

        # The leader dies without releasing the Lease: the standby waits for it to expire.
        leader.send(signal.SIGKILL)
        await leader.wait()

        async def taken_over() -> bool:
            return await leaders() == {standby_id}

        await eventually(taken_over, timeout_s=5 * LEASE_S)
        lease = f.hub.store.get(LEASES, "fleetgate", "fleetgate-controller")["spec"]
        assert lease["holderIdentity"] == standby_id
        assert lease["leaseTransitions"] >= 1


async def _is_in(state: Any, wanted: set[str]) -> bool:
    return await state in wanted


async def _standby_serves(standby: FleetgateProcess, checksum: str) -> bool:
    document = await polled_status(standby)
    return document is not None and document["snapshot"]["checksum"] == checksum
