"""Delta snapshots and interchangeable controller replicas, against real publishing servers on
127.0.0.1."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from controller.published import Snapshot
from controller.publishing import Publisher
from gateway.subscriber import decode
from policies import snapshot as wire
from policies import table as tables
from policies.model import (
    BackendRef,
    MemberCluster,
    PolicySet,
    Route,
    RouteKind,
    Rule,
    ServicePort,
    ServiceRef,
    StaticService,
)
from policies.table import RoutingTable
from tests.conftest import eventually
from tests.gateway.test_subscriber import Controller, Holder, settings, subscribed

WEB = ServiceRef("shop", "web", 80)
API = ServiceRef("shop", "api", 80)


def fleet(version: int, address: str, host: str = "shop.example") -> RoutingTable:
    """Two routes over two services; `address` is web's one endpoint in cluster "a"."""
    routes = tuple(
        Route(
            RouteKind.TRAFFIC_POLICY,
            "shop",
            service.name,
            hostnames=(f"{service.name}.{host}",),
            rules=(Rule(name=None, matches=(), filters=(), backend_refs=(BackendRef(service),)),),
        )
        for service in (WEB, API)
    )
    cluster = MemberCluster(
        name="a",
        labels={},
        services=(
            StaticService("shop", "web", (ServicePort(80, (address,)),)),
            StaticService("shop", "api", (ServicePort(80, ("127.0.1.9:8080",)),)),
        ),
    )
    policies = PolicySet(routes=routes, clusters=(cluster,))
    inventory = tables.inventory_from_clusters(policies.clusters)
    return tables.compile_table(policies, inventory, version=version)


def addresses(table: RoutingTable | None) -> list[str]:
    assert table is not None
    return [e.address for t in table.backends["shop/web:80"].targets for e in t.endpoints]


async def test_endpoint_changes_arrive_as_deltas_and_the_cache_stays_a_full_snapshot(
    tmp_path: Path,
) -> None:
    publisher = Publisher()
    publisher.publish(fleet(1, "127.0.1.1:8080"))
    controller = Controller(publisher)
    url = await controller.start()
    sink = Holder()
    cache = tmp_path / "snapshot.json"
    config = dataclasses.replace(settings(url, cache), cache_quiet_s=0.05)
    try:
        async with subscribed(config, sink) as subscriber:
            await eventually(lambda: sink.version == 1)
            for version in range(2, 5):
                publisher.publish(fleet(version, f"127.0.1.{version}:8080"))
                await eventually(lambda version=version: sink.version == version)
            await eventually(lambda: str(publisher.rollout(4)) == "1/1 gateways on v4")
            # Written once the deltas paused: the full form of the table held.
            await eventually(lambda: cache.exists() and decode(cache.read_bytes()).version == 4)
            status = subscriber.status
    finally:
        await controller.stop()
    assert (status.deltas, status.delta_failures, status.refused) == (3, 0, 0)
    assert sink.current == fleet(4, "127.0.1.4:8080")
    assert decode(cache.read_bytes()) == sink.current


async def test_a_delta_that_does_not_verify_is_replaced_by_the_full_snapshot(
    tmp_path: Path,
) -> None:
    publisher = Publisher()
    publisher.publish(fleet(1, "127.0.1.1:8080"))
    controller = Controller(publisher)
    url = await controller.start()
    sink = Holder()
    try:
        async with subscribed(settings(url, tmp_path / "snapshot.json"), sink) as subscriber:
            await eventually(lambda: sink.version == 1)
            good = Snapshot.encode(fleet(2, "127.0.1.2:8080"))
            # The spread's JSON no longer matches its digest: any delta built from these parts
            # fails verification; the full body is intact.
            spreads = dict(good.parts.backends)
            spreads["shop/web:80"] = spreads["shop/web:80"].replace(b"127.0.1.2", b"127.6.6.6")
            bad_parts = dataclasses.replace(good.parts, backends=spreads)
            publisher.publish(Snapshot(good.table, good.body, bad_parts))
            await eventually(lambda: sink.version == 2)
            status = subscriber.status
    finally:
        await controller.stop()
    assert (status.deltas, status.delta_failures) == (0, 1)
    assert addresses(sink.current) == ["127.0.1.2:8080"]


async def test_a_gateway_moving_to_another_replica_takes_its_content_whatever_the_versions(
    tmp_path: Path,
) -> None:
    """Two controller replicas behind one address, with clocks apart: the gateway follows
    whichever answers, by content (checksum), not by version number."""
    ahead = Publisher()  # this replica's clock is ahead
    ahead.publish(fleet(9_000, "127.0.1.1:8080"))
    behind = Publisher()
    behind.publish(fleet(5_000, "127.0.1.1:8080"))  # the same content, a lower version
    behind.publish(fleet(5_001, "127.0.1.2:8080"))
    first = Controller(ahead)
    url = await first.start()
    second = Controller(behind)
    second.port = first.port  # the same address: the Service in front of both
    sink = Holder()
    try:
        async with subscribed(settings(url, tmp_path / "snapshot.json"), sink) as subscriber:
            await eventually(lambda: sink.version == 9_000)
            await first.stop()
            await second.start()
            await eventually(lambda: addresses(sink.current) == ["127.0.1.2:8080"])
            # Renumbered above the live table for the sink; reported as the replica's version.
            await eventually(lambda: str(behind.rollout(5_001)) == "1/1 gateways on v5001")
            behind.publish(fleet(5_002, "127.0.1.3:8080"))
            await eventually(lambda: addresses(sink.current) == ["127.0.1.3:8080"])
            await eventually(lambda: str(behind.rollout(5_002)) == "1/1 gateways on v5002")
            status = subscriber.status
    finally:
        await first.stop()
        await second.stop()
    assert sink.version > 9_000
    assert (status.applied, status.refused) == (5_002, 0)
    assert sink.current is not None
    assert sink.current.checksum == fleet(5_002, "127.0.1.3:8080").checksum


async def test_the_same_content_on_another_replica_is_not_fetched_again(tmp_path: Path) -> None:
    ahead = Publisher()
    ahead.publish(fleet(9_000, "127.0.1.1:8080"))
    behind = Publisher()
    behind.publish(fleet(5_000, "127.0.1.1:8080"))
    first = Controller(ahead)
    url = await first.start()
    second = Controller(behind)
    second.port = first.port
    sink = Holder()
    try:
        async with subscribed(settings(url, tmp_path / "snapshot.json"), sink) as subscriber:
            await eventually(lambda: sink.version == 9_000)
            await first.stop()
            await second.start()
            await eventually(lambda: len(behind.gateways()) == 1 and behind.gateways()[0].polling)
            status = subscriber.status
    finally:
        await first.stop()
        await second.stop()
    assert sink.swaps == 1
    assert status.received == 9_000
    assert sink.current is not None
    assert sink.current.checksum == wire.checksum(fleet(1, "127.0.1.1:8080"))
