"""Active health checks on a real gateway: probes over loopback take endpoints out and back."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from gateway.health import HealthMonitor, probe
from gateway.server import Gateway
from policies.table import Endpoint
from tests.conftest import eventually
from tests.fakes.upstream import serve_app
from tests.gateway.conftest import EAST, EAST_2, TEST_SETTINGS, WEST, StartGateway
from tests.gateway.fleet import FAST_CHECK, Backends, cluster, fetch, fleet_table, session


@pytest.fixture
async def backends() -> AsyncIterator[Backends]:
    """Upstreams that outlive the gateway: request this fixture before `gateway`, so that the
    gateway (and its probes) stops first. Stopped the other way round, a probe connecting while
    an upstream's server closes can be accepted after aiohttp has closed the connections it
    knows; on Python 3.11 nothing closes that one, and it surfaces as an unclosed-socket
    ResourceWarning (an error here) in whichever later test the garbage collector runs."""
    async with Backends() as started:
        yield started


@pytest.fixture
async def apps() -> AsyncIterator[Callable[[web.Application, str], Awaitable[str]]]:
    """Serve apps on loopback hosts ("host:port"); stopped after the gateway, as `backends`."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, host: str) -> str:
        runner, port = await serve_app(app, host)
        runners.append(runner)
        return f"{host}:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _monitor(gw: Gateway) -> HealthMonitor:
    assert gw.health is not None
    return gw.health


def _endpoint(address: str, cluster_name: str = "east") -> Endpoint:
    host, port = address.split(":")
    return Endpoint(host, int(port), cluster_name)


def _passed(monitor: HealthMonitor, address: str) -> bool:
    state = monitor.state(_endpoint(address))
    return state is not None and state.probed and state.healthy


async def _pods(gw: Gateway, count: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    async with session() as client:
        for _ in range(count):
            status, headers = await fetch(client, gw.addresses[0])
            assert status == 200
            seen[headers["x-pod"]] += 1
    return seen


async def test_a_failing_health_check_takes_an_endpoint_out_and_a_passing_one_back(
    backends: Backends,
    gateway: StartGateway,
) -> None:
    one = await backends.start("east", EAST)
    two = await backends.start("east", EAST_2)
    gw = await gateway(fleet_table([cluster("east", [one.address, two.address])]))
    monitor = _monitor(gw)
    await eventually(lambda: _passed(monitor, one.address) and _passed(monitor, two.address))
    assert set(await _pods(gw, 20)) == {one.pod, two.pod}

    one.fail_health()
    await eventually(lambda: not monitor.healthy(_endpoint(one.address)))
    assert set(await _pods(gw, 20)) == {two.pod}
    assert gw.counters.health_transitions >= 1

    one.fail_health(False)
    await eventually(lambda: monitor.healthy(_endpoint(one.address)))
    assert one.pod in await _pods(gw, 40)


async def test_a_draining_upstream_leaves_rotation_while_its_listener_still_serves(
    backends: Backends,
    gateway: StartGateway,
) -> None:
    one = await backends.start("east", EAST)
    two = await backends.start("east", EAST_2)
    gw = await gateway(fleet_table([cluster("east", [one.address, two.address])]))
    one.drain()  # 503 on /healthz: out at the first such answer, no threshold
    await eventually(lambda: not _monitor(gw).healthy(_endpoint(one.address)))
    served_before = one.requests
    assert set(await _pods(gw, 20)) == {two.pod}
    assert one.running
    assert one.requests == served_before


async def test_health_survives_a_reload_and_new_endpoints_are_probed_at_once(
    backends: Backends,
    gateway: StartGateway,
) -> None:
    one = await backends.start("east", EAST)
    two = await backends.start("east", EAST_2)
    gw = await gateway(fleet_table([cluster("east", [one.address])]))
    monitor = _monitor(gw)
    one.fail_health()
    await eventually(lambda: not monitor.healthy(_endpoint(one.address)))
    gw.swap(fleet_table([cluster("east", [one.address, two.address])]))
    await eventually(lambda: two.health_probes > 0)
    state = monitor.state(_endpoint(one.address))
    assert state is not None
    assert not state.healthy  # kept across the reload
    assert set(await _pods(gw, 10)) == {two.pod}

    gw.swap(fleet_table([cluster("east", [two.address])]))
    assert monitor.state(_endpoint(one.address)) is None  # gone with its endpoint


async def test_probe_answers_and_failures(closed_port: int) -> None:
    async with Backends() as backends:
        one = await backends.start("east", EAST)
        assert await probe(_endpoint(one.address), FAST_CHECK) == 200
        one.drain()
        assert await probe(_endpoint(one.address), FAST_CHECK) == 503
    assert await probe(Endpoint("127.0.0.1", closed_port, "east"), FAST_CHECK) is None


async def test_the_gateway_prefers_its_own_zone_and_spills_when_it_fails() -> None:
    async with Backends() as backends:
        east = await backends.start("east", EAST)
        west = await backends.start("west", WEST)
        clusters = [
            dataclasses.replace(cluster("east", [east.address]), labels={"zone": "z1"}),
            dataclasses.replace(cluster("west", [west.address]), labels={"zone": "z2"}),
        ]
        gw = Gateway(TEST_SETTINGS, fleet_table(clusters), zone="z1")
        await gw.start()
        try:
            await eventually(lambda: _passed(_monitor(gw), east.address))
            assert set(await _pods(gw, 20)) == {east.pod}  # same tier, weights 1:1: all local
            east.fail_health()
            await eventually(lambda: not _monitor(gw).healthy(_endpoint(east.address)))
            assert set(await _pods(gw, 20)) == {west.pod}
        finally:
            await gw.close()


async def test_an_endpoint_that_is_out_is_probed_at_the_unhealthy_interval(
    backends: Backends,
    gateway: StartGateway,
) -> None:
    # A minute between probes of healthy endpoints, 50 ms between probes of one that is out:
    # the recovery is seen within the test only through unhealthyInterval.
    check = dataclasses.replace(FAST_CHECK, interval_s=60.0, unhealthy_interval_s=0.05)
    one = await backends.start("east", EAST)
    two = await backends.start("east", EAST_2)
    one.fail_health()
    gw = await gateway(fleet_table([cluster("east", [one.address, two.address], check=check)]))
    monitor = _monitor(gw)
    await eventually(lambda: monitor.state(_endpoint(one.address)) is not None)
    assert not monitor.healthy(_endpoint(one.address))
    probes_of_two = two.health_probes
    one.fail_health(False)
    await eventually(lambda: monitor.healthy(_endpoint(one.address)))
    assert one.health_probes >= 3  # the rejected first probe, then two passes
    assert two.health_probes == probes_of_two  # the healthy one waits its minute


def _signalling_app(name: str) -> web.Application:
    """An upstream whose live answers carry the immediate-fail header when asked to (`?out`)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def answer(request: web.Request) -> web.Response:
        headers = {"x-pod": name}
        if "out" in request.query:
            headers["X-Fleetgate-Immediate-Health-Check-Fail"] = "true"
        return web.Response(text=name, headers=headers)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/{tail:.*}", answer)
    return app


async def test_a_live_answer_with_the_immediate_fail_header_takes_its_endpoint_out(
    apps: Callable[[web.Application, str], Awaitable[str]],
    gateway: StartGateway,
) -> None:
    slow_check = dataclasses.replace(FAST_CHECK, interval_s=60.0)  # no probe brings it back
    addresses = []
    for name, host in (("one", EAST), ("two", EAST_2), ("unchecked", WEST)):
        addresses.append(await apps(_signalling_app(name), host))
    one, two, unchecked = addresses
    gw = await gateway(
        fleet_table(
            [
                cluster("east", [one, two], check=slow_check),
                cluster("west", [unchecked], priority=1, check=None),
            ]
        )
    )
    monitor = _monitor(gw)
    await eventually(lambda: _passed(monitor, one) and _passed(monitor, two))
    async with session() as client:
        seen = set()
        for _ in range(40):
            status, headers = await fetch(client, gw.addresses[0], "/?out")
            assert status == 200
            assert "x-fleetgate-immediate-health-check-fail" not in headers
            seen.add(headers["x-pod"])
            if seen == {"one", "two"}:
                break
        # Both east endpoints asked to leave: out at once, the tier spills to west.
        assert not monitor.healthy(_endpoint(one))
        assert not monitor.healthy(_endpoint(two))
        status, headers = await fetch(client, gw.addresses[0], "/?out")
        assert headers["x-pod"] == "unchecked"
        # Not actively checked: the header is removed but changes nothing.
        assert monitor.healthy(_endpoint(unchecked, "west"))
        status, headers = await fetch(client, gw.addresses[0], "/")
        assert headers["x-pod"] == "unchecked"
