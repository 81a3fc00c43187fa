"""Retries on a real gateway: other endpoint, then other cluster; idempotency; body replay limit."""

from __future__ import annotations

import asyncio
from collections import Counter

from policies.model import Retry, Timeouts, TrafficSettings
from tests.gateway.conftest import EAST, WEST, StartGateway
from tests.gateway.fleet import Backends, cluster, fetch, fleet_table, session

RETRY = TrafficSettings(retry=Retry(attempts=2))
DEAD = "127.0.1.9"  # nothing listens on this cluster address in these tests


async def test_a_get_is_retried_on_another_endpoint_after_a_connect_failure(
    gateway: StartGateway, closed_port: int
) -> None:
    async with Backends() as backends:
        live = await backends.start("east", EAST)
        dead = f"127.0.0.1:{closed_port}"
        east = cluster("east", [dead, live.address], check=None)
        gw = await gateway(fleet_table([east], RETRY))
        statuses: Counter[int] = Counter()
        async with session() as client:
            for _ in range(30):
                statuses[(await fetch(client, gw.addresses[0]))[0]] += 1
        assert statuses == {200: 30}
        assert gw.counters.retries > 0
        assert gw.counters.upstream_connect_failed == gw.counters.retries


async def test_without_a_retry_policy_the_failure_reaches_the_client(
    gateway: StartGateway, closed_port: int
) -> None:
    async with Backends() as backends:
        live = await backends.start("east", EAST)
        east = cluster("east", [f"127.0.0.1:{closed_port}", live.address], check=None)
        gw = await gateway(fleet_table([east]))
        statuses: Counter[int] = Counter()
        async with session() as client:
            for _ in range(30):
                statuses[(await fetch(client, gw.addresses[0]))[0]] += 1
        assert statuses[503] > 0
        assert gw.counters.retries == 0


async def test_a_retry_moves_to_the_next_cluster_when_the_first_is_exhausted(
    gateway: StartGateway, closed_port: int
) -> None:
    async with Backends() as backends:
        west = await backends.start("west", WEST)
        clusters = [
            cluster("east", [f"127.0.0.1:{closed_port}"], check=None),
            cluster("west", [west.address], priority=1, check=None),
        ]
        gw = await gateway(fleet_table(clusters, RETRY))
        async with session() as client:
            for _ in range(10):
                status, headers = await fetch(client, gw.addresses[0])
                assert status == 200
                assert headers["x-cluster"] == "west"


async def test_a_post_is_retried_only_when_the_policy_allows_non_idempotent_methods(
    gateway: StartGateway, closed_port: int
) -> None:
    async with Backends() as backends:
        west = await backends.start("west", WEST)
        clusters = [
            cluster("east", [f"127.0.0.1:{closed_port}"], check=None),
            cluster("west", [west.address], priority=1, check=None),
        ]
        safe = await gateway(fleet_table(clusters, RETRY))
        opted = TrafficSettings(retry=Retry(attempts=2, allow_non_idempotent=True))
        bold = await gateway(fleet_table(clusters, opted))
        async with session() as client:
            status, headers = await fetch(client, safe.addresses[0], method="POST", data=b"x" * 10)
            assert status == 503
            assert headers["x-gateway-reason"] == "upstream_connect_failed"
            assert west.requests == 0
            status, headers = await fetch(client, bold.addresses[0], method="POST", data=b"y" * 10)
            assert status == 200
            assert headers["x-cluster"] == "west"
            assert west.requests == 1


async def test_a_body_over_the_replay_limit_is_not_retried(
    gateway: StartGateway, closed_port: int
) -> None:
    async with Backends() as backends:
        west = await backends.start("west", WEST)
        clusters = [
            cluster("east", [f"127.0.0.1:{closed_port}"], check=None),
            cluster("west", [west.address], priority=1, check=None),
        ]
        retry = Retry(attempts=2, allow_non_idempotent=True, max_body_bytes=1024)
        gw = await gateway(fleet_table(clusters, TrafficSettings(retry=retry)))
        async with session() as client:
            small = await fetch(client, gw.addresses[0], method="PUT", data=b"s" * 512)
            large = await fetch(client, gw.addresses[0], method="PUT", data=b"L" * 4096)
        assert small[0] == 200
        assert large[0] == 503
        assert west.requests == 1
        assert gw.counters.retries_exhausted == 1


async def test_a_silent_endpoint_costs_one_per_try_timeout_then_the_retry_answers(
    gateway: StartGateway,
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts, reads nothing, never answers

    server = await asyncio.start_server(silent, DEAD, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Backends() as backends:
            live = await backends.start("east", EAST)
            settings = TrafficSettings(
                retry=Retry(attempts=2, on=("gateway-error",), per_try_timeout_s=0.2),
                timeouts=Timeouts(request_s=5.0),
            )
            east = cluster("east", [f"{DEAD}:{port}", live.address], check=None)
            gw = await gateway(fleet_table([east], settings))
            async with session() as client:
                for _ in range(10):
                    status, headers = await fetch(client, gw.addresses[0])
                    assert status == 200
                    assert headers["x-pod"] == live.pod
            assert gw.counters.upstream_timeouts == gw.counters.retries > 0
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_retriable_status_is_dropped_and_retried_elsewhere(gateway: StartGateway) -> None:
    async with Backends() as backends:
        failing = await backends.start("east", EAST)
        west = await backends.start("west", WEST)
        failing.set_error_rate(1.0)  # every answer a 500
        clusters = [
            cluster("east", [failing.address], check=None),
            cluster("west", [west.address], priority=1, check=None),
        ]
        retry = Retry(attempts=1, on=("retriable-status-codes",), codes=(500,))
        gw = await gateway(fleet_table(clusters, TrafficSettings(retry=retry)))
        plain = await gateway(fleet_table(clusters))
        async with session() as client:
            for _ in range(5):
                status, headers = await fetch(client, gw.addresses[0])
                assert status == 200
                assert headers["x-cluster"] == "west"
            assert (await fetch(client, plain.addresses[0]))[0] == 500
            # A POST is not retried: its 500 reaches the client as the upstream sent it.
            assert (await fetch(client, gw.addresses[0], method="POST", data=b"p"))[0] == 500
        assert failing.errors == 7
        assert gw.counters.retries == 5
