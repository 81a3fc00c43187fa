"""Passive outlier detection on a real gateway: consecutive gateway errors eject an endpoint."""

from __future__ import annotations

import asyncio

import aiohttp

from gateway.server import Gateway
from policies.model import OutlierDetection, Retry, Timeouts, TrafficSettings
from policies.table import Endpoint
from tests.conftest import eventually
from tests.gateway.conftest import EAST, EAST_2, StartGateway
from tests.gateway.fleet import Backends, cluster, fetch, fleet_table, session

SILENT = "127.0.1.9"


def _endpoint(address: str) -> Endpoint:
    host, port = address.rsplit(":", 1)
    return Endpoint(host, int(port), "east")


def _ejected(gw: Gateway, address: str) -> bool:
    assert gw.health is not None
    return gw.health.ejected(_endpoint(address))


async def _until(
    client: aiohttp.ClientSession, gw: Gateway, done: object, *, bound: int = 200
) -> list[int]:
    """Send GETs until `done()` holds (at most `bound`); the statuses seen."""
    statuses = []
    for _ in range(bound):
        if done():  # type: ignore[operator]
            break
        statuses.append((await fetch(client, gw.addresses[0]))[0])
    assert done(), "condition never held within the request bound"  # type: ignore[operator]
    return statuses


async def test_consecutive_5xx_eject_an_endpoint_until_its_time_is_over(
    gateway: StartGateway,
) -> None:
    detection = OutlierDetection(consecutive_errors=3, base_ejection_s=0.5, max_ejection_percent=50)
    async with Backends() as backends:
        bad = await backends.start("east", EAST)
        good = await backends.start("east", EAST_2)
        bad.set_error_rate(1.0)
        east = cluster("east", [bad.address, good.address], check=None)
        gw = await gateway(fleet_table([east], TrafficSettings(outlier_detection=detection)))
        async with session() as client:
            await _until(client, gw, lambda: _ejected(gw, bad.address))
            assert gw.counters.outlier_ejections == 1
            served = bad.requests
            for _ in range(20):
                status, headers = await fetch(client, gw.addresses[0])
                assert status == 200
                assert headers["x-pod"] == good.pod
            assert bad.requests == served
            bad.set_error_rate(0.0)
            await eventually(lambda: not _ejected(gw, bad.address))
            await _until(client, gw, lambda: bad.requests > served)


async def test_never_more_than_the_configured_share_but_always_one(
    gateway: StartGateway,
) -> None:
    detection = OutlierDetection(consecutive_errors=2, max_ejection_percent=10)
    async with Backends() as backends:
        one = await backends.start("east", EAST)
        two = await backends.start("east", EAST_2)
        one.set_error_rate(1.0)
        two.set_error_rate(1.0)
        east = cluster("east", [one.address, two.address], check=None)
        gw = await gateway(fleet_table([east], TrafficSettings(outlier_detection=detection)))
        async with session() as client:
            await _until(client, gw, lambda: gw.counters.outlier_ejections == 1)
            for _ in range(20):
                await fetch(client, gw.addresses[0])
        assert gw.counters.outlier_ejections == 1
        assert [_ejected(gw, one.address), _ejected(gw, two.address)].count(True) == 1


async def test_a_silent_and_a_refusing_endpoint_are_ejected_and_clients_never_fail(
    gateway: StartGateway, closed_port: int
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, SILENT, 0)
    hung = f"{SILENT}:{server.sockets[0].getsockname()[1]}"
    refusing = f"127.0.0.1:{closed_port}"
    settings = TrafficSettings(
        retry=Retry(attempts=2, on=("connect-failure", "gateway-error"), per_try_timeout_s=0.2),
        outlier_detection=OutlierDetection(consecutive_errors=2, max_ejection_percent=100),
        timeouts=Timeouts(request_s=3.0),
    )
    try:
        async with Backends() as backends:
            # Four good endpoints: with two of six ejected the cluster stays out of panic (50 %),
            # where ejected endpoints would serve again.
            live = [(await backends.start("east", EAST)).address for _ in range(4)]
            east = cluster("east", [hung, refusing, *live], check=None)
            gw = await gateway(fleet_table([east], settings))
            async with session() as client:
                statuses = await _until(
                    client, gw, lambda: _ejected(gw, hung) and _ejected(gw, refusing)
                )
                assert set(statuses) <= {200}
                timeouts = gw.counters.upstream_timeouts
                assert timeouts <= 2  # each hung try is one per-try timeout, then ejected
                for _ in range(20):
                    assert (await fetch(client, gw.addresses[0]))[0] == 200
                assert gw.counters.upstream_timeouts == timeouts
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
