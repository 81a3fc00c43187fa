"""A release in Kubernetes mode with real processes: two `fleetgate controller` replicas on a
simulated hub, each with the operator API; the leader is killed mid-release (SIGKILL: the Lease
is not released) and the standby takes over at the same step with the same weights."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import eventually, sampled
from tests.controller.release_rig import PollingGateway
from tests.e2e.release_fleet import free_port, write_tokens
from tests.fakes.kube_api import KubeApiSimulator
from tests.fakes.kube_config import write_kubeconfig
from tests.fakes.kube_store import kind_of
from tests.running import FleetgateProcess

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

FLEETGATE = "fleetgate.io/v1alpha1"
RELEASES = kind_of(FLEETGATE, "Release")
LEASES = kind_of("coordination.k8s.io/v1", "Lease")
BANNER = re.compile(r"serving snapshots on http://(\S+) \(Kubernetes mode")
LEASE_S = 3.0
TIMEOUT = aiohttp.ClientTimeout(total=10)

HUB_OBJECTS: list[dict[str, Any]] = [
    {
        "apiVersion": FLEETGATE,
        "kind": "MemberCluster",
        "metadata": {"name": "east"},
        "spec": {
            "services": [
                {"namespace": "shop", "name": name, "ports": [{"port": 80, "endpoints": [ep]}]}
                for name, ep in (("web", "127.0.1.1:8080"), ("web-v2", "127.0.1.1:8081"))
            ]
        },
    },
    {
        "apiVersion": FLEETGATE,
        "kind": "TrafficPolicy",
        "metadata": {"name": "storefront", "namespace": "shop"},
        "spec": {
            "hostnames": ["shop.example"],
            "rules": [{"backendRefs": [{"name": "web", "port": 80}]}],
        },
    },
    {
        "apiVersion": FLEETGATE,
        "kind": "Release",
        "metadata": {"name": "web-v2", "namespace": "shop"},
        "spec": {
            "target": "storefront",
            "stable": {"backendRef": {"name": "web", "port": 80}},
            "canary": {"backendRef": {"name": "web-v2", "port": 80}},
            "strategy": {
                "canary": {
                    "steps": [{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]
                }
            },
        },
    },
]


class Gateway(PollingGateway):
    """A polling gateway that, like `fleetgate gateway`, retries when its controller is not
    reachable for a moment (a replica being replaced, a loaded machine)."""

    refused = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            try:
                await super().run(session)
            except aiohttp.ClientConnectionError:
                self.refused += 1
                await asyncio.sleep(0.05)


def controller_args(kubeconfig: Path, identity: str, api: str, tokens: Path) -> list[str]:
    return [
        "controller", "--hub-kubeconfig", str(kubeconfig), "--lease-namespace", "fleetgate",
        "--id", identity, "--listen", "127.0.0.1:0", "--api", api, "--tokens", str(tokens),
        "--release-tick", "0.1", "--lease-duration", str(LEASE_S),
        "--renew-deadline", str(LEASE_S * 2 / 3), "--retry-period", "0.2",
        "--debounce", "0.02", "--log-level", "warning",
    ]  # fmt: skip


@contextlib.asynccontextmanager
async def hub(tmp_path: Path) -> AsyncIterator[tuple[KubeApiSimulator, Path]]:
    sim = KubeApiSimulator("hub")
    await sim.start()
    try:
        for obj in HUB_OBJECTS:
            sim.store.upsert(obj)
        yield sim, write_kubeconfig(tmp_path / "hub.kubeconfig", [sim])
    finally:
        await sim.stop()


async def test_a_killed_leader_is_replaced_at_the_same_step_with_the_same_weights(
    tmp_path: Path,
) -> None:
    tokens = write_tokens(tmp_path / "tokens.yaml")
    apis = {identity: f"127.0.0.1:{free_port()}" for identity in ("c1", "c2")}
    async with (
        hub(tmp_path) as (sim, kubeconfig),
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        asyncio.TaskGroup() as group,
    ):
        processes = {
            identity: FleetgateProcess(
                controller_args(kubeconfig, identity, api, tmp_path / "tokens.yaml"),
                tmp_path / f"{identity}.log",
            )
            for identity, api in apis.items()
        }
        try:
            await asyncio.gather(*(p.start(banner=BANNER) for p in processes.values()))
            gateways = {
                identity: Gateway(f"http://{p.listen}", f"gw-{identity}")
                for identity, p in processes.items()
            }
            polls = {i: group.create_task(g.run(session)) for i, g in gateways.items()}

            async def call(identity: str, method: str, path: str) -> tuple[int, Any]:
                url = f"http://{apis[identity]}/api/v1/{path}"
                headers = {"Authorization": f"Bearer {tokens['admin']}"}
                async with session.request(method, url, headers=headers) as response:
                    return response.status, await response.json()

            def holder() -> str:
                lease = sim.store.list_objects(LEASES, "fleetgate")[0]
                return str(lease[0]["spec"]["holderIdentity"]) if lease else ""

            await eventually(lambda: holder() in apis, timeout_s=20)
            leader = holder()
            standby = next(i for i in apis if i != leader)

            async def started() -> bool:
                status, _ = await call(leader, "POST", "releases/shop/web-v2/start")
                return status == 200

            await eventually(started, timeout_s=20)  # 503 starting until the state is loaded

            def release_status() -> dict[str, Any]:
                found = sim.store.get(RELEASES, "shop", "web-v2").get("status") or {}
                return dict(found.get("release") or {})

            await eventually(lambda: release_status().get("phase") == "Paused", timeout_s=20)
            assert (release_status()["step"], release_status()["canaryWeight"]) == (1, 30)
            record = json.loads(release_status()["record"])
            assert record["state"]["canary_weight"] == 30

            # The standby serves the same weights and refuses to act.
            standby_gw = gateways[standby]
            await eventually(
                lambda: standby_gw.table is not None and standby_gw.weight() == 30, timeout_s=20
            )

            async def refused_naming_the_leader() -> bool:
                status, body = await call(standby, "POST", "releases/shop/web-v2/promote")
                assert (status, body["error"]) == (503, "not_leader"), body
                return bool(body["leader"] == leader)  # once the standby has read the Lease

            await eventually(refused_naming_the_leader, timeout_s=10)

            async def resumed() -> bool:
                status, body = await call(standby, "GET", "releases/shop/web-v2")
                return status == 200 and body.get("phase") == "Paused"

            # SIGKILL: the Lease is not released; the standby takes over when it expires.
            async with sampled(lambda: (standby_gw.weight(),), period_s=0.01) as seen:
                polls[leader].cancel()  # its gateway would only see refused connections
                processes[leader].send(signal.SIGKILL)
                await processes[leader].wait()
                await eventually(lambda: holder() == standby, timeout_s=8 * LEASE_S)
                await eventually(resumed, timeout_s=20)
                status, body = await call(standby, "GET", "releases/shop/web-v2")
                assert (body["step"], body["canary_weight"]) == (1, 30), body
            assert seen == {30}, seen

            status, body = await call(standby, "POST", "releases/shop/web-v2/promote")
            assert status == 200, body
            await eventually(lambda: standby_gw.weight() == 60, timeout_s=20)
            await eventually(lambda: release_status().get("canaryWeight") == 60, timeout_s=20)
            for task in polls.values():
                task.cancel()
        finally:
            await asyncio.gather(*(p.close() for p in processes.values()))
