"""The gateway's snapshot subscription against a real publishing server on 127.0.0.1.

Covers static stability: the controller going away, and a restart from the disk cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from controller.published import Snapshot
from controller.publishing import Publisher
from controller.snapshot_api import build_app
from gateway.errors import StaleTableError
from gateway.subscriber import Subscriber, SubscriberSettings, decode, write_atomically
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


def make_table(version: int, host: str) -> RoutingTable:
    web_ref = ServiceRef("shop", "web", 80)
    rule = Rule(name=None, matches=(), filters=(), backend_refs=(BackendRef(web_ref),))
    route = Route(RouteKind.TRAFFIC_POLICY, "shop", "web", hostnames=(host,), rules=(rule,))
    cluster = MemberCluster(
        name="a",
        labels={},
        services=(StaticService("shop", "web", (ServicePort(80, ("127.0.1.1:8080",)),)),),
    )
    policies = PolicySet(routes=(route,), clusters=(cluster,))
    inventory = tables.inventory_from_clusters(policies.clusters)
    return tables.compile_table(policies, inventory, version=version)


class Holder:
    """A TableSink like the gateway's: swaps whole tables and refuses ones that are not newer."""

    def __init__(self) -> None:
        self.current: RoutingTable | None = None
        self.swaps = 0

    def apply(self, table: RoutingTable) -> None:
        if self.current is not None and table.version <= self.current.version:
            raise StaleTableError(f"v{table.version} is not newer than v{self.current.version}")
        self.current = table
        self.swaps += 1

    @property
    def version(self) -> int:
        return self.current.version if self.current else 0


class Controller:
    """A real snapshot API server that can be stopped and started again on the same port."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> str:
        self.runner = web.AppRunner(build_app(self.publisher))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def settings(url: str, cache: Path | None, gateway_id: str = "gw-1") -> SubscriberSettings:
    return SubscriberSettings(
        controller_url=url,
        gateway_id=gateway_id,
        zone="z1",
        cache_path=cache,
        wait_s=5.0,
        read_margin_s=2.0,
        connect_timeout_s=1.0,
        startup_timeout_s=1.0,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )


@contextlib.asynccontextmanager
async def subscribed(config: SubscriberSettings, sink: Holder) -> AsyncIterator[Subscriber]:
    subscriber = Subscriber(config, sink)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(subscriber.run(), name="subscriber")
        try:
            yield subscriber
        finally:
            task.cancel()


async def test_follows_the_controller_and_reports_what_it_applied(tmp_path: Path) -> None:
    publisher = Publisher()
    publisher.publish(make_table(1, "v1.example"))
    controller = Controller(publisher)
    url = await controller.start()
    sink = Holder()
    cache = tmp_path / "cache" / "snapshot.json"
    try:
        async with subscribed(settings(url, cache), sink) as subscriber:
            await eventually(lambda: sink.version == 1)
            await eventually(lambda: str(publisher.rollout(1)) == "1/1 gateways on v1")
            publisher.publish(make_table(2, "v2.example"))
            await eventually(lambda: sink.version == 2)
            await eventually(lambda: str(publisher.rollout(2)) == "1/1 gateways on v2")
            status = subscriber.status
    finally:
        await controller.stop()
    assert sink.current is not None
    assert list(sink.current.hosts) == ["v2.example"]
    assert (status.applied, status.source, status.connected) == (2, "controller", True)
    assert decode(cache.read_bytes()).version == 2
    assert [p.name for p in cache.parent.iterdir()] == ["snapshot.json"]  # no temp files left
    (view,) = publisher.gateways()
    assert (view.id, view.zone) == ("gw-1", "z1")


async def test_keeps_serving_when_the_controller_stops_and_catches_up_when_back(
    tmp_path: Path,
) -> None:
    publisher = Publisher()
    publisher.publish(make_table(1, "v1.example"))
    controller = Controller(publisher)
    url = await controller.start()
    sink = Holder()
    try:
        async with subscribed(settings(url, tmp_path / "snapshot.json"), sink) as subscriber:
            await eventually(lambda: sink.version == 1)
            await controller.stop()
            await eventually(lambda: subscriber.status.failures >= 3)
            assert not subscriber.status.connected
            assert sink.version == 1  # still serving the last table
            publisher.publish(make_table(2, "v2.example"))
            await controller.start()  # same port
            await eventually(lambda: sink.version == 2)
            assert subscriber.status.connected
    finally:
        await controller.stop()


async def test_restart_with_the_controller_down_serves_from_the_cache(
    tmp_path: Path, closed_port: int
) -> None:
    cache = tmp_path / "snapshot.json"
    publisher = Publisher()
    publisher.publish(make_table(1, "v1.example"))
    publisher.publish(make_table(2, "v2.example"))
    controller = Controller(publisher)
    url = await controller.start()
    try:
        first = Holder()
        async with subscribed(settings(url, cache), first):
            await eventually(lambda: first.version == 2)
            await eventually(cache.exists)
    finally:
        await controller.stop()

    restarted = Holder()
    down = f"http://127.0.0.1:{closed_port}"
    async with subscribed(settings(down, cache), restarted) as subscriber:
        await eventually(lambda: restarted.version == 2)
        status = subscriber.status
    assert restarted.current is not None
    assert list(restarted.current.hosts) == ["v2.example"]
    assert (status.source, status.connected) == ("cache", False)


async def test_a_controller_without_snapshots_yet_also_means_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "snapshot.json"
    write_atomically(cache, Snapshot.encode(make_table(3, "cached.example")).body)
    publisher = Publisher()
    controller = Controller(publisher)
    url = await controller.start()
    sink = Holder()
    try:
        async with subscribed(settings(url, cache), sink) as subscriber:
            await eventually(lambda: sink.version == 3)
            await eventually(lambda: len(publisher.gateways()) == 1)
            publisher.publish(make_table(4, "fresh.example"))
            await eventually(lambda: sink.version == 4)
            assert subscriber.status.source == "controller"
    finally:
        await controller.stop()


async def test_a_corrupt_snapshot_is_refused_once_and_the_table_stays(tmp_path: Path) -> None:
    publisher = Publisher()
    publisher.publish(make_table(1, "v1.example"))
    controller = Controller(publisher)
    url = await controller.start()
    sink = Holder()
    try:
        async with subscribed(settings(url, tmp_path / "snapshot.json"), sink) as subscriber:
            await eventually(lambda: sink.version == 1)
            good = Snapshot.encode(make_table(2, "v2.example"))
            tampered = json.loads(good.body)
            tampered["hosts"] = {"evil.example": tampered["hosts"]["v2.example"]}
            # Other hosts, so not expressible as a delta: the tampered full body is what is sent.
            publisher.publish(Snapshot(good.table, json.dumps(tampered).encode(), good.parts))
            await eventually(lambda: subscriber.status.refused == 1)
            await eventually(lambda: subscriber.status.received == 2)
            assert sink.version == 1
            assert "checksum" in (subscriber.status.last_error or "")
            publisher.publish(make_table(3, "v3.example"))
            await eventually(lambda: sink.version == 3)
            await eventually(lambda: str(publisher.rollout(3)) == "1/1 gateways on v3")
            refused = subscriber.status.refused
    finally:
        await controller.stop()
    assert refused == 1  # v2 was not fetched again in a loop


async def test_a_corrupt_cache_is_ignored(tmp_path: Path, closed_port: int) -> None:
    cache = tmp_path / "snapshot.json"
    cache.write_bytes(b'{"schema": "fleetgate.io/snapshot/v2", "truncat')
    sink = Holder()
    config = settings(f"http://127.0.0.1:{closed_port}", cache)
    async with subscribed(config, sink) as subscriber:
        await eventually(lambda: subscriber.status.refused == 1)
        await eventually(lambda: subscriber.status.failures >= 2)
        status = subscriber.status
    assert sink.current is None
    assert status.applied == 0
    assert status.source is None


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "snapshot.json"
    write_atomically(path, b"first")
    write_atomically(path, b"second, longer")
    assert path.read_bytes() == b"second, longer"
    assert sorted(p.name for p in path.parent.iterdir()) == ["snapshot.json"]
