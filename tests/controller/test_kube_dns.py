"""DNS endpoints in Kubernetes mode: a hub MemberCluster whose service port names a DNS host.

The controller resolves it with the real resolver against the fake DNS server on loopback, merges
the answer into the inventory next to the EndpointSlice-discovered clusters, follows a changed
record, and shows the name in its status document as `fleetgate status` reads it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller import kube_config
from controller.dns import DnsSettings
from controller.kubemode import KubeController
from tests.conftest import eventually
from tests.controller.conftest import FAST_KUBE, StartSimulator
from tests.controller.hub_objects import FLEETGATE, member_cluster, traffic_policy
from tests.controller.kube_objects import endpoint, endpoint_slice, service
from tests.controller.test_status import LOADED_S, fast_settings
from tests.controller.test_watching import running
from tests.fakes.dns_server import FakeDnsServer
from tests.fakes.kube_config import write_kubeconfig

NAME = "web.edge.internal"


@pytest.fixture
async def dns_server() -> AsyncIterator[FakeDnsServer]:
    server = FakeDnsServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def edge_cluster() -> dict[str, object]:
    """A MemberCluster without an API server: shop/web:80 comes from DNS only."""
    return {
        "apiVersion": FLEETGATE,
        "kind": "MemberCluster",
        "metadata": {"name": "edge", "labels": {"region": "edge"}},
        "spec": {
            "priority": 0,
            "services": [
                {
                    "namespace": "shop",
                    "name": "web",
                    "ports": [{"port": 80, "dns": {"hostname": NAME, "port": 8080}}],
                }
            ],
        },
    }


def edge_hosts(controller: KubeController) -> set[str]:
    latest = controller.publisher.latest
    if latest is None:
        return set()
    return {
        e.host
        for b in latest.table.backends.values()
        for t in b.targets
        if t.cluster == "edge"
        for e in t.endpoints
    }


async def test_a_dns_named_port_joins_the_discovered_clusters(
    start_simulator: StartSimulator, dns_server: FakeDnsServer, tmp_path: Path
) -> None:
    hub, east = await start_simulator("hub"), await start_simulator("east")
    east.store.upsert(service("web"))
    east.store.upsert(
        endpoint_slice("web-1", service_name="web", endpoints=[endpoint("127.0.1.1")])
    )
    east_kubeconfig = write_kubeconfig(tmp_path / "east.kubeconfig", [east])
    hub.store.upsert(member_cluster("east", kubeconfig=str(east_kubeconfig)))
    hub.store.upsert(edge_cluster())
    hub.store.upsert(traffic_policy("store", clusters=["east", "edge"]))
    dns_server.set_a(NAME, "127.0.3.1", ttl=1)
    hub_kubeconfig = write_kubeconfig(tmp_path / "hub.kubeconfig", [hub])

    settings = dataclasses.replace(
        fast_settings("one", hub_kubeconfig),
        dns=DnsSettings(nameserver=dns_server.nameserver, min_ttl_s=0.2, jitter=0.0),
    )
    client = await kube_config.connect("hub", hub_kubeconfig, settings=FAST_KUBE)
    try:
        controller = KubeController(settings, client)
        async with running(controller.run()):
            await eventually(lambda: edge_hosts(controller) == {"127.0.3.1"}, timeout_s=LOADED_S)

            dns_server.set_a(NAME, "127.0.3.2", ttl=1)
            await eventually(lambda: edge_hosts(controller) == {"127.0.3.2"}, timeout_s=LOADED_S)

            document = controller.status_document()
            names = document["dns"]["names"]
            assert [n["name"] for n in names] == [f"{NAME}:8080"]
            assert names[0]["condition"] == "fresh"
            assert list(names[0]["addresses"]) == ["127.0.3.2:8080"]
            # Discovery through the member API server carries on beside DNS.
            clusters = {c["name"]: c["state"] for c in document["clusters"]}
            assert clusters["east"] == "up"
    finally:
        await client.close()
