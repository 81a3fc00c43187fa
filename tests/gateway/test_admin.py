"""The admin port on a real gateway process: health, readiness through start-up and drain,
/status, /metrics moving with traffic. Real sockets on loopback, both loops."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from gateway.replica import GatewayProcess, ProcessSettings
from policies.model import ClusterWeight
from tests.conftest import eventually
from tests.fakes.upstream import RawUpstream, SeenRequest
from tests.gateway.conftest import EAST, TEST_SETTINGS, WEST, StartApp, StartRaw
from tests.gateway.tables import member, ref, rule, service, single, table

SHOP = {"Host": "shop.test"}


@contextlib.asynccontextmanager
async def serving(process: GatewayProcess) -> AsyncIterator[asyncio.Event]:
    """Run `process.serve` (no feeders: tables are applied by the test); set the event to stop."""
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(process.serve([], stop))
        await eventually(lambda: process.admin_address is not None)
        try:
            yield stop
        finally:
            stop.set()


def new_process(**parts: str) -> GatewayProcess:
    settings = ProcessSettings(gateway=TEST_SETTINGS, admin="127.0.0.1:0", drain_timeout_s=5.0)
    process = GatewayProcess(settings)
    for name, text in parts.items():
        process.view.parts[name] = functools.partial(dict, value=text)
    return process


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_readiness_waits_for_a_table_and_fails_first_on_drain(
    raw_upstream: StartRaw,
) -> None:
    held: list[SeenRequest] = []

    def respond(request: SeenRequest) -> bytes | None:
        if request.target == b"/hold":
            held.append(request)
            return None
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    upstream: RawUpstream = await raw_upstream(respond)
    process = new_process()
    async with serving(process) as stop, aiohttp.ClientSession() as client:
        admin = f"http://{process.admin_address}"
        async with client.get(f"{admin}/healthz") as resp:
            assert resp.status == 200
        async with client.get(f"{admin}/readyz") as resp:
            assert resp.status == 503
            assert "no_table" in await resp.text()
        assert not process.gateway.addresses  # nothing listens before the first table

        process.apply(single(upstream.address))
        await process.listening.wait()
        async with client.get(f"{admin}/readyz") as resp:
            assert resp.status == 200
        host, port = process.gateway.addresses[0]

        async def slow_request() -> tuple[int, str, str]:
            async with client.get(f"http://{host}:{port}/hold", headers=SHOP) as resp:
                return resp.status, await resp.text(), resp.headers.get("Connection", "")

        async with asyncio.TaskGroup() as tg:
            in_flight = tg.create_task(slow_request())
            await eventually(lambda: bool(held))
            stop.set()

            async def unready() -> bool:
                async with client.get(f"{admin}/readyz") as resp:
                    return resp.status == 503 and "draining" in await resp.text()

            await eventually(unready)
            held[0].answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        assert in_flight.result() == (200, "late", "close")


async def test_status_shows_the_table_with_live_weights_and_endpoints(
    app_upstream: StartApp,
) -> None:
    east, west = await app_upstream("east", EAST), await app_upstream("west", WEST)
    clusters = [member("east", {service(): [east]}), member("west", {service(): [west]})]
    weighted = ref(clusters=[ClusterWeight("east", 3), ClusterWeight("west", 1)])
    live = table(clusters, [rule(weighted)])
    process = new_process(policy="from the composition root")
    async with serving(process), aiohttp.ClientSession() as client:
        process.apply(live)
        await process.listening.wait()
        async with client.get(f"http://{process.admin_address}/status") as resp:
            assert resp.status == 200
            status = await resp.json()
    assert status["ready"] is True
    assert status["table"]["version"] == live.version
    assert status["table"]["checksum"] == live.checksum
    assert status["policy"] == {"value": "from the composition root"}
    (route,) = status["routes"]
    assert route["route"] == "shop/main"
    assert route["hostnames"] == ["shop.test"]
    (backend,) = route["rules"][0]["backends"]
    assert backend["service"] == "shop/web:80"
    shares = {c["cluster"]: (c["weight"], c["share_in_tier"]) for c in backend["clusters"]}
    assert shares == {"east": (3, 0.75), "west": (1, 0.25)}
    assert {e["address"]: e["healthy"] for e in status["endpoints"]} == {east: True, west: True}
    assert status["clusters"] == [
        {"cluster": "east", "endpoints": 1, "healthy": 1},
        {"cluster": "west", "endpoints": 1, "healthy": 1},
    ]


async def test_metrics_move_with_traffic(app_upstream: StartApp) -> None:
    east = await app_upstream("east", EAST)
    process = new_process()
    async with serving(process), aiohttp.ClientSession() as client:
        process.apply(single(east))
        await process.listening.wait()
        host, port = process.gateway.addresses[0]
        metrics_url = f"http://{process.admin_address}/metrics"

        async def scrape() -> Samples:
            async with client.get(metrics_url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return samples(await resp.text())

        before = await scrape()
        for _ in range(5):
            async with client.get(f"http://{host}:{port}/item", headers=SHOP) as resp:
                assert resp.status == 200
        async with client.get(f"http://{host}:{port}/", headers={"Host": "nowhere.test"}) as resp:
            assert resp.status == 404
        after = await scrape()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("fleetgate_requests_total", worker="0", code_class="2xx") == 5
    assert grew("fleetgate_requests_total", worker="0", code_class="4xx") == 1
    assert (
        grew(
            "fleetgate_route_requests_total",
            route="shop/main",
            rule="shop/main#0",
            cluster="east",
            code_class="2xx",
        )
        == 5
    )
    assert (
        grew(
            "fleetgate_backend_requests_total",
            backend="shop/web:80",
            cluster="east",
            code_class="2xx",
        )
        == 5
    )
    assert (
        grew(
            "fleetgate_backend_request_duration_seconds_count",
            backend="shop/web:80",
            cluster="east",
        )
        == 5
    )
    assert (
        grew(
            "fleetgate_backend_request_duration_seconds_bucket",
            backend="shop/web:80",
            cluster="east",
            le="+Inf",
        )
        == 5
    )
    assert grew("fleetgate_local_replies_total", reason="no_route") == 1
    assert grew("fleetgate_downstream_connections_total") >= 1
    assert value(after, "fleetgate_table_version", worker="0") == process.gateway.table.version
    assert value(after, "fleetgate_upstream_pool_idle_connections") >= 1
