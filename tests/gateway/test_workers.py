"""`--workers`: real worker processes on one SO_REUSEPORT port, subscribed to a real snapshot
API, counted on the parent's single admin port. Both loops in the parent."""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import trustme
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from controller.publishing import Publisher, PublishSettings
from controller.snapshot_api import build_app
from gateway import workers
from policies.model import Route, RouteKind, ServiceRef
from policies.table import RoutingTable
from tests.conftest import eventually
from tests.gateway import tables
from tests.gateway.conftest import EAST, StartApp
from tests.gateway.tables import single
from tests.running import FleetgateProcess

REQUESTS = 60


SNAPSHOT_TOKEN = "s3cret-snapshot-token"


@pytest.fixture
async def snapshot_api() -> AsyncIterator[tuple[Publisher, str]]:
    publisher = Publisher()
    runner = web.AppRunner(build_app(publisher))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield publisher, f"http://{host}:{port}"
    await runner.cleanup()


@pytest.fixture
async def guarded_snapshot_api() -> AsyncIterator[tuple[Publisher, str]]:
    """A snapshot API that wants `SNAPSHOT_TOKEN`."""
    publisher = Publisher(PublishSettings(token=SNAPSHOT_TOKEN))
    runner = web.AppRunner(build_app(publisher))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield publisher, f"http://{host}:{port}"
    await runner.cleanup()


def per_worker(text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fleetgate_requests_total":
                worker = sample.labels["worker"]
                counts[worker] = counts.get(worker, 0.0) + sample.value
    return counts


async def test_two_workers_share_one_port_and_add_up_on_one_admin_port(
    app_upstream: StartApp, snapshot_api: tuple[Publisher, str]
) -> None:
    publisher, api = snapshot_api
    table = single(await app_upstream("east", EAST))
    publisher.publish(table)
    pool = workers.WorkerPool(
        workers.WorkerSettings(
            count=2,
            listen=("127.0.0.1", 0),
            controller_url=api,
            gateway_id="test",
            drain_timeout_s=5.0,
        )
    )
    view = workers.WorkersView(pool)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg, aiohttp.ClientSession() as client:
        supervising = tg.create_task(workers.supervise(pool, view, admin="127.0.0.1:0", stop=stop))
        try:
            await eventually(lambda: view.admin_address is not None)
            admin = f"http://{view.admin_address}"

            async def ready() -> bool:
                async with client.get(f"{admin}/readyz") as resp:
                    return resp.status == 200

            await eventually(ready, timeout_s=30, interval_s=0.05)
            assert pool.port != 0
            # A new connection per request: SO_REUSEPORT spreads connections, not requests.
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)
            ) as fresh:
                for _ in range(REQUESTS):
                    url = f"http://127.0.0.1:{pool.port}/"
                    async with fresh.get(url, headers={"Host": "shop.test"}) as resp:
                        assert resp.status == 200
            async with client.get(f"{admin}/metrics") as resp:
                counts = per_worker(await resp.text())
            async with client.get(f"{admin}/status") as resp:
                status = await resp.json()
            # Each worker reports what it applied on its next long-poll ("2/2 gateways on vN").
            await eventually(lambda: len(publisher.rollout(table.version).applied) == 2)
            rollout = publisher.rollout(table.version)
        finally:
            stop.set()
    assert sum(counts.values()) == REQUESTS
    assert set(counts) == {"0", "1"}
    assert all(n > 0 for n in counts.values()), counts  # both workers served a share
    assert [w["table"]["version"] for w in status["workers"]] == [table.version] * 2
    assert status["table"]["version"] == table.version
    assert sorted(rollout.applied) == ["test/worker-0", "test/worker-1"]
    assert supervising.result() is True  # every worker drained and exited 0


WORKERS_BANNER = re.compile(
    r"listening on http://(\S+?), https://(\S+?) with 2 workers, admin http://(\S+?) "
)
TOKEN = "s3cret-admin-token"


def _write_cert(cert: trustme.LeafCert, chain: Path, key: Path) -> None:
    """Write a pair the way a certificate manager replaces files (rename over the old ones)."""
    for path, data in (
        (chain, b"".join(blob.bytes() for blob in cert.cert_chain_pems)),
        (key, cert.private_key_pem.bytes()),
    ):
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_bytes(data)
        temp.replace(path)


def _limited_table(address: str) -> RoutingTable:
    """shop.test, plus limited.test in namespace "limited" (which has a quota)."""
    limited_web = ServiceRef("limited", "web", 80)
    limited = Route(
        RouteKind.TRAFFIC_POLICY,
        "limited",
        "api",
        ("limited.test",),
        (tables.rule(tables.ref(limited_web)),),
    )
    member = tables.member("east", {tables.service(): [address], limited_web: [address]})
    return tables.table([member], [tables.rule(tables.ref())], extra_routes=[limited])


async def test_two_workers_with_tls_token_drain_delay_and_config_behave_like_one(
    app_upstream: StartApp, guarded_snapshot_api: tuple[Publisher, str], tmp_path: Path
) -> None:
    publisher, api = guarded_snapshot_api
    publisher.publish(_limited_table(await app_upstream("east", EAST)))
    ca, new_ca = trustme.CA(), trustme.CA()
    chain, key = tmp_path / "shop.pem", tmp_path / "shop.key"
    _write_cert(ca.issue_cert("shop.test"), chain, key)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "apiVersion: fleetgate.io/v1alpha1\nkind: GatewayConfig\nspec:\n"
        "  namespaceQuotas: [{namespace: limited, requestsPerSecond: 0.001, burst: 1}]\n"
    )
    gateway = FleetgateProcess(
        ["gateway", "--controller", api, "--workers", "2",
         "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
         "--tls-listen", "127.0.0.1:0", "--tls-cert", str(chain), "--tls-key", str(key),
         "--admin-token", TOKEN, "--drain-delay", "3", "--drain-timeout", "5",
         "--gateway-config", str(config), "--token", SNAPSHOT_TOKEN],
        tmp_path / "gateway.log",
    )  # fmt: skip
    try:
        await gateway.start(banner=WORKERS_BANNER, timeout_s=60)
        found = WORKERS_BANNER.search(gateway.text())
        assert found is not None
        plain, secure, admin = found.groups()

        async def https_round(trusted: trustme.CA, rounds: int) -> int:
            """Fresh TLS connections (spread over the workers): how many were answered 200."""
            ctx = ssl.create_default_context()
            trusted.configure_trust(ctx)
            answered = 0
            connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
            async with aiohttp.ClientSession(connector=connector) as client:
                for _ in range(rounds):
                    try:
                        async with client.get(
                            f"https://{secure}/",
                            server_hostname="shop.test",
                            headers={"Host": "shop.test"},
                        ) as resp:
                            answered += resp.status == 200
                    except aiohttp.ClientConnectorCertificateError:
                        pass  # the certificate served is not (yet) the one trusted
            return answered

        assert await https_round(ca, 20) == 20
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://{admin}/metrics") as resp:
                assert resp.status == 401
            auth = {"Authorization": f"Bearer {TOKEN}"}
            async with client.get(f"http://{admin}/metrics", headers=auth) as resp:
                assert resp.status == 200
                counts = per_worker(await resp.text())
            assert set(counts) == {"0", "1"}
            assert all(n > 0 for n in counts.values()), counts  # both served TLS
            async with client.get(f"http://{admin}/readyz") as resp:
                assert resp.status == 200  # probes stay open
            async with client.get(f"http://{admin}/status", headers=auth) as resp:
                pids = (await resp.json())["worker_pids"]
        # The workers got the snapshot token (they serve), but not on their command line.
        for pid in pids.values():
            cmdline = await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes)
            assert b"--gateway-config" in cmdline
            assert SNAPSHOT_TOKEN.encode() not in cmdline
            assert TOKEN.encode() not in cmdline

        # The gateway config reached the workers: a keep-alive connection (one worker) gets
        # its namespace's one request, then 429 with Retry-After.
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as client:
            statuses, retry_after = [], None
            for _ in range(2):
                async with client.get(f"http://{plain}/", headers={"Host": "limited.test"}) as resp:
                    statuses.append(resp.status)
                    retry_after = resp.headers.get("Retry-After")
            assert statuses == [200, 429]
            assert retry_after is not None
            assert int(retry_after) >= 1

        # Each worker reloads the replaced certificate files by itself.
        _write_cert(new_ca.issue_cert("shop.test"), chain, key)

        async def all_reloaded() -> bool:
            return await https_round(new_ca, 20) == 20

        await eventually(all_reloaded, timeout_s=30, interval_s=0.2)

        # SIGTERM: readiness fails at once, the listeners keep accepting for the drain delay.
        gateway.send(signal.SIGTERM)

        async def unready() -> bool:
            async with (
                aiohttp.ClientSession() as client,
                client.get(f"http://{admin}/readyz") as resp,
            ):
                return resp.status == 503

        await eventually(unready, timeout_s=10, interval_s=0.02)
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://{plain}/", headers={"Host": "shop.test"}) as resp,
        ):
            assert resp.status == 200  # accepted during the drain delay
        assert await gateway.wait(timeout_s=30) == 0
    finally:
        await gateway.close()
