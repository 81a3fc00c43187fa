"""`fleetgate run` with a MemberCluster whose endpoints come from DNS, as a real process: the fake
DNS server on loopback answers for `web.east.internal`, two real upstreams share one port on
127.0.1.1 and 127.0.1.2. Requests follow the A record; a changed record is followed once its TTL
runs out; a failing server keeps the last answer for the grace, then the endpoints go; `/status`
shows the name all along. Also `fleetgate controller -c`: its `/status` and snapshots."""

from __future__ import annotations

import errno
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import eventually
from tests.fakes.dns_server import FakeDnsServer
from tests.fakes.upstream import upstream_app
from tests.running import FleetgateProcess

NAME = "web.east.internal"
SHOP = {"Host": "shop.test"}
CONTROLLER_BANNER = re.compile(r"serving snapshots on http://(\S+) ")


def policy(port: int) -> str:
    return f"""\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {{name: east}}
spec:
  services:
    - namespace: shop
      name: web
      ports:
        - port: 80
          dns: {{hostname: {NAME}, port: {port}}}
---
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: storefront, namespace: shop}}
spec:
  hostnames: [shop.test]
  rules:
    - backendRefs:
        - {{name: web, port: 80}}
"""


@pytest.fixture
async def dns_server() -> AsyncIterator[FakeDnsServer]:
    server = FakeDnsServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def upstream_port() -> AsyncIterator[int]:
    """Upstreams "one" on 127.0.1.1 and "two" on 127.0.1.2, on one port (an A record has none)."""
    runners: list[web.AppRunner] = []
    try:
        for _ in range(20):
            first = web.AppRunner(upstream_app("one"))
            await first.setup()
            runners.append(first)
            await web.TCPSite(first, "127.0.1.1", 0).start()
            port: int = first.addresses[0][1]
            second = web.AppRunner(upstream_app("two"))
            await second.setup()
            runners.append(second)
            try:
                await web.TCPSite(second, "127.0.1.2", port).start()
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                continue  # that port is taken on 127.0.1.2: try another
            yield port
            return
        raise OSError(errno.EADDRINUSE, "no port free on both 127.0.1.1 and 127.0.1.2")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


async def upstream(client: aiohttp.ClientSession, listen: str) -> str:
    """Which upstream served `/` through the gateway, or the gateway's status code."""
    async with client.get(f"http://{listen}/", headers=SHOP) as resp:
        return resp.headers.get("x-upstream", str(resp.status))


async def name_status(client: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with client.get(url) as resp:
        document = await resp.json()
    [name] = document["dns"]["names"]
    assert isinstance(name, dict)
    return name


async def test_run_routes_to_what_dns_answers_and_keeps_it_through_a_failure_for_the_grace(
    tmp_path: Path, dns_server: FakeDnsServer, upstream_port: int
) -> None:
    dns_server.set_a(NAME, "127.0.1.1", ttl=1)
    (tmp_path / "fleet.yaml").write_text(policy(upstream_port))
    args = ["run", "-c", str(tmp_path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]
    args += ["--dns-nameserver", dns_server.nameserver, "--dns-min-ttl", "0.2"]
    args += ["--dns-grace", "3"]
    fleetgate = FleetgateProcess(args, tmp_path / "run.log")
    await fleetgate.start()
    status_url = f"http://{fleetgate.admin}/status"
    try:
        async with aiohttp.ClientSession() as client:

            async def served_by(name: str) -> bool:
                return await upstream(client, fleetgate.listen) == name

            # The name was looked up before the first table: no 503 while it resolves.
            assert await upstream(client, fleetgate.listen) == "one"
            name = await name_status(client, status_url)
            assert name["name"] == f"{NAME}:{upstream_port}"
            assert name["used_by"] == ["east shop/web:80"]
            assert name["condition"] == "fresh"
            assert name["addresses"] == [f"127.0.1.1:{upstream_port}"]
            assert name["ttl_s"] == 1

            # The record changes: the next lookup (after the 1 s TTL) moves the traffic.
            asked = dns_server.asked(NAME, "A")
            dns_server.set_a(NAME, "127.0.1.2", ttl=1)
            await eventually(lambda: served_by("two"), timeout_s=10)
            assert dns_server.asked(NAME, "A") > asked

            # The server fails: the last answer stays published for the grace period...
            dns_server.fail("servfail")
            kept: list[str] = []

            async def stale_and_still_served() -> bool:
                # Status, request, status: when the name is stale on both sides of the request,
                # the answer was published while the request was routed.
                before = await name_status(client, status_url)
                served = await upstream(client, fleetgate.listen)
                after = await name_status(client, status_url)
                if before["condition"] == after["condition"] == "stale":
                    kept.append(served)
                    assert after["addresses"] == [f"127.0.1.2:{upstream_port}"]
                    assert after["error"]
                    return True
                return False

            await eventually(stale_and_still_served, timeout_s=10)
            assert kept == ["two"]

            # ... then the endpoints go (nothing else serves the port: 503) ...
            async def failed() -> bool:
                return bool((await name_status(client, status_url))["condition"] == "failed")

            await eventually(failed, timeout_s=15)
            await eventually(lambda: served_by("503"), timeout_s=10)

            # ... and come back with the server (at the next retry: backoff up to 30 s).
            dns_server.heal()
            await eventually(lambda: served_by("two"), timeout_s=40)
    finally:
        await fleetgate.close()


async def test_controller_file_mode_publishes_dns_answers_and_shows_the_names(
    tmp_path: Path, dns_server: FakeDnsServer, upstream_port: int
) -> None:
    dns_server.set_a(NAME, "127.0.1.1", "127.0.1.2", ttl=30)
    (tmp_path / "fleet.yaml").write_text(policy(upstream_port))
    args = ["controller", "-c", str(tmp_path), "--listen", "127.0.0.1:0"]
    args += ["--dns-nameserver", dns_server.nameserver]
    controller = FleetgateProcess(args, tmp_path / "controller.log")
    await controller.start(banner=CONTROLLER_BANNER)
    try:
        async with aiohttp.ClientSession() as client:

            async def fresh() -> bool:
                name = await name_status(client, f"http://{controller.listen}/status")
                return bool(name["condition"] == "fresh")

            await eventually(fresh, timeout_s=10)

            async def published() -> bool:
                # Only DNS gave these addresses: the files name none.
                async with client.get(f"http://{controller.listen}/v1/snapshot") as resp:
                    text = await resp.text()
                return "127.0.1.1" in text and "127.0.1.2" in text

            await eventually(published, timeout_s=10)
    finally:
        await controller.close()
