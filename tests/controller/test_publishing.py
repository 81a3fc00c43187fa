"""The snapshot API over real sockets: long-poll, 304, applied versions, rollouts, local sinks."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from controller.published import Snapshot
from controller.publishing import Publisher, PublishSettings
from controller.snapshot_api import VERSION_HEADER, build_app
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

WEB = ServiceRef("shop", "web", 80)


def make_table(version: int, host: str = "shop.example") -> RoutingTable:
    """A small real table: one route for `host` over one static endpoint."""
    route = Route(
        kind=RouteKind.TRAFFIC_POLICY,
        namespace="shop",
        name="web",
        hostnames=(host,),
        rules=(Rule(name=None, matches=(), filters=(), backend_refs=(BackendRef(WEB),)),),
    )
    cluster = MemberCluster(
        name="a",
        labels={},
        services=(StaticService("shop", "web", (ServicePort(80, ("127.0.1.1:8080",)),)),),
    )
    policies = PolicySet(routes=(route,), clusters=(cluster,))
    inventory = tables.inventory_from_clusters(policies.clusters)
    return tables.compile_table(policies, inventory, version=version)


@contextlib.asynccontextmanager
async def serving(publisher: Publisher) -> AsyncIterator[str]:
    runner = web.AppRunner(build_app(publisher))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def polling(publisher: Publisher, gateway_id: str) -> bool:
    return any(g.id == gateway_id and g.polling for g in publisher.gateways())


async def test_long_poll_answers_at_once_when_a_newer_version_exists(
    client: aiohttp.ClientSession,
) -> None:
    publisher = Publisher()
    publisher.publish(make_table(7))
    params = {"after": "0", "wait": "30"}
    async with (
        serving(publisher) as base,
        client.get(f"{base}/v1/snapshot", params=params) as resp,
    ):
        assert resp.status == 200
        assert resp.headers[VERSION_HEADER] == "7"
        assert resp.headers["ETag"] == f'"{publisher.latest and publisher.latest.checksum}"'
        data = await resp.json()
    table = wire.load(data)
    assert table.version == 7
    assert "shop.example" in table.hosts


async def test_long_poll_blocks_until_a_publish(client: aiohttp.ClientSession) -> None:
    publisher = Publisher()
    publisher.publish(make_table(1))
    async with serving(publisher) as base, asyncio.TaskGroup() as tg:
        params = {"after": "1", "applied": "1", "gateway": "gw-1", "wait": "30"}
        poll = tg.create_task(_get_json(client, f"{base}/v1/snapshot", params))
        await eventually(lambda: polling(publisher, "gw-1"))
        assert not poll.done()
        publisher.publish(make_table(2, host="v2.example"))
        status, data = await poll
    assert status == 200
    assert data["version"] == 2
    assert "v2.example" in wire.load(data).hosts


async def test_long_poll_times_out_with_304(client: aiohttp.ClientSession) -> None:
    publisher = Publisher()
    publisher.publish(make_table(5))
    async with (
        serving(publisher) as base,
        client.get(f"{base}/v1/snapshot", params={"after": "5", "wait": "0.05"}) as resp,
    ):
        assert resp.status == 304
        assert resp.headers[VERSION_HEADER] == "5"


async def test_nothing_published_yet_is_304_with_version_0(
    client: aiohttp.ClientSession,
) -> None:
    async with (
        serving(Publisher()) as base,
        client.get(f"{base}/v1/snapshot", params={"wait": "0"}) as resp,
    ):
        assert resp.status == 304
        assert resp.headers[VERSION_HEADER] == "0"


async def test_wait_is_capped_by_the_settings(client: aiohttp.ClientSession) -> None:
    publisher = Publisher(PublishSettings(max_wait_s=0.05))
    async with (
        serving(publisher) as base,
        client.get(f"{base}/v1/snapshot", params={"after": "0", "wait": "3600"}) as resp,
    ):
        assert resp.status == 304


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"after": "-1"}, id="negative-after"),
        pytest.param({"after": "v3"}, id="non-numeric-after"),
        pytest.param({"applied": "1.5"}, id="fractional-applied"),
        pytest.param({"wait": "soon"}, id="non-numeric-wait"),
        pytest.param({"wait": "nan"}, id="nan-wait"),
        pytest.param({"gateway": "gw 1"}, id="space-in-id"),
        pytest.param({"gateway": "x" * 300}, id="long-id"),
    ],
)
async def test_bad_parameters_are_400(
    client: aiohttp.ClientSession, params: dict[str, str]
) -> None:
    publisher = Publisher()
    async with serving(publisher) as base, client.get(f"{base}/v1/snapshot", params=params) as resp:
        assert resp.status == 400
    assert publisher.gateways() == ()


async def test_applied_versions_give_the_rollout(client: aiohttp.ClientSession) -> None:
    publisher = Publisher()
    publisher.publish(make_table(1))
    publisher.publish(make_table(2, host="v2.example"))
    async with serving(publisher) as base:
        for gateway_id, zone, applied in [("gw-a", "z1", 2), ("gw-b", "z2", 2), ("gw-c", "z1", 1)]:
            params = {"after": str(applied), "applied": str(applied), "gateway": gateway_id}
            async with client.get(
                f"{base}/v1/snapshot", params={**params, "zone": zone, "wait": "0"}
            ) as resp:
                assert resp.status == (304 if applied == 2 else 200)
        assert str(publisher.rollout(2)) == "2/3 gateways on v2"
        assert publisher.rollout(2).pending == ("gw-c",)
        assert str(publisher.rollout(1)) == "3/3 gateways on v1"

        async with client.get(
            f"{base}/v1/snapshot",
            params={"after": "2", "applied": "2", "gateway": "gw-c", "wait": "0"},
        ) as resp:
            assert resp.status == 304
        assert str(publisher.rollout(2)) == "3/3 gateways on v2"

        async with client.get(f"{base}/v1/gateways") as resp:
            assert resp.status == 200
            listing = await resp.json()
    assert listing["version"] == 2
    assert listing["rollout"] == "3/3 gateways on v2"
    by_id = {g["id"]: g for g in listing["gateways"]}
    assert sorted(by_id) == ["gw-a", "gw-b", "gw-c"]
    assert by_id["gw-b"]["zone"] == "z2"
    assert all(g["applied"] == 2 and g["behind"] == 0 and g["live"] for g in by_id.values())


async def test_gateway_behind_shows_versions_and_lag() -> None:
    now = [100.0]
    publisher = Publisher(clock=lambda: now[0])
    publisher.publish(make_table(1))
    publisher.record("gw-a", "z1", applied=1)
    now[0] = 110.0
    publisher.publish(make_table(2, host="v2.example"))
    now[0] = 112.5
    publisher.publish(make_table(3, host="v3.example"))
    now[0] = 115.0
    (view,) = publisher.gateways()
    assert (view.applied, view.behind, view.lag_s) == (1, 2, 5.0)
    assert view.last_seen_s == 15.0


async def test_quiet_gateways_stop_counting_and_are_forgotten() -> None:
    now = [0.0]
    publisher = Publisher(
        PublishSettings(stale_after_s=10, forget_after_s=100), clock=lambda: now[0]
    )
    publisher.publish(make_table(1))
    publisher.record("gw-old", None, applied=1)
    now[0] = 50.0
    publisher.record("gw-new", None, applied=0)
    assert str(publisher.rollout(1)) == "0/1 gateways on v1"
    assert [g.live for g in publisher.gateways()] == [True, False]
    now[0] = 151.0
    publisher.record("gw-new", None, applied=1)
    assert [g.id for g in publisher.gateways()] == ["gw-new"]


async def test_wait_applied_returns_when_every_gateway_reports(
    client: aiohttp.ClientSession,
) -> None:
    publisher = Publisher()
    publisher.publish(make_table(1))
    for gateway_id in ("gw-a", "gw-b", "gw-c"):
        publisher.record(gateway_id, None, applied=1)
    publisher.publish(make_table(2, host="v2.example"))
    async with serving(publisher) as base, asyncio.TaskGroup() as tg:
        waiting = tg.create_task(publisher.wait_applied(2, timeout_s=10))
        for gateway_id in ("gw-a", "gw-b", "gw-c"):
            assert not waiting.done()
            params = {"after": "2", "applied": "2", "gateway": gateway_id, "wait": "0"}
            async with client.get(f"{base}/v1/snapshot", params=params) as resp:
                assert resp.status == 304
        rollout = await waiting
    assert rollout.done
    assert rollout.applied == ("gw-a", "gw-b", "gw-c")


async def test_wait_applied_times_out_naming_who_is_behind() -> None:
    publisher = Publisher()
    publisher.publish(make_table(1))
    publisher.record("gw-a", None, applied=1)
    publisher.record("gw-b", None, applied=1)
    publisher.publish(make_table(2, host="v2.example"))
    publisher.record("gw-a", None, applied=2)
    rollout = await publisher.wait_applied(2, timeout_s=0.05)
    assert not rollout.done
    assert rollout.pending == ("gw-b",)
    explicit = await publisher.wait_applied(2, ["gw-a", "gw-unknown"], timeout_s=0.01)
    assert (explicit.applied, explicit.pending) == (("gw-a",), ("gw-unknown",))


async def test_local_gateway_gets_tables_in_process() -> None:
    publisher = Publisher()
    publisher.publish(make_table(1))
    received: list[RoutingTable] = []
    publisher.attach("embedded", "z1", received.append)
    assert [t.version for t in received] == [1]  # the latest at once
    publisher.publish(make_table(2, host="v2.example"))
    assert [t.version for t in received] == [1, 2]
    assert received[1] is publisher.latest.table if publisher.latest else False
    assert str(publisher.rollout(2)) == "1/1 gateways on v2"


async def test_local_gateway_refusal_is_not_counted_as_applied() -> None:
    publisher = Publisher()

    def refuse(table: RoutingTable) -> None:
        raise ValueError(f"no thanks to v{table.version}")

    publisher.attach("embedded", None, refuse)
    publisher.publish(make_table(1))
    assert str(publisher.rollout(1)) == "0/1 gateways on v1"


def test_versions_must_increase() -> None:
    publisher = Publisher()
    publisher.publish(make_table(5))
    with pytest.raises(ValueError, match="must increase"):
        publisher.publish(make_table(5))
    assert publisher.latest is not None
    assert publisher.latest.version == 5


async def test_shutdown_releases_open_long_polls(client: aiohttp.ClientSession) -> None:
    publisher = Publisher()
    publisher.publish(make_table(1))
    runner = web.AppRunner(build_app(publisher), shutdown_timeout=30)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    async with asyncio.TaskGroup() as tg:
        params = {"after": "1", "gateway": "gw-1", "wait": "30"}
        poll = tg.create_task(_get_json(client, f"http://{host}:{port}/v1/snapshot", params))
        await eventually(lambda: polling(publisher, "gw-1"))
        await runner.cleanup()
        status, _ = await poll
    assert status == 304


async def test_token_is_required_when_configured(client: aiohttp.ClientSession) -> None:
    publisher = Publisher(PublishSettings(token="s3cret"))
    publisher.publish(make_table(1))
    async with serving(publisher) as base:
        async with client.get(f"{base}/v1/snapshot", params={"wait": "0"}) as resp:
            assert resp.status == 401
        async with client.get(
            f"{base}/v1/gateways", headers={"Authorization": "Bearer wrong"}
        ) as resp:
            assert resp.status == 401
        async with client.get(
            f"{base}/v1/snapshot",
            params={"wait": "0"},
            headers={"Authorization": "Bearer s3cret"},
        ) as resp:
            assert resp.status == 200


def test_snapshot_encoding_round_trips() -> None:
    snapshot = Snapshot.encode(make_table(9))
    assert json.loads(snapshot.body) == snapshot.data()
    assert wire.load(snapshot.data()) == snapshot.table


async def _get_json(
    client: aiohttp.ClientSession, url: str, params: dict[str, str]
) -> tuple[int, dict[str, object]]:
    async with client.get(url, params=params) as resp:
        data = await resp.json() if resp.status == 200 else {}
        return resp.status, data
