"""`--workers`: real worker processes on one SO_REUSEPORT port, subscribed to a real snapshot
API, counted on the parent's single admin port. Both loops in the parent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from controller import publishing
from controller.publishing import Publisher
from gateway import workers
from tests.conftest import eventually
from tests.gateway.conftest import EAST, StartApp
from tests.gateway.tables import single

REQUESTS = 60


@pytest.fixture
async def snapshot_api() -> AsyncIterator[tuple[Publisher, str]]:
    publisher = Publisher()
    runner = web.AppRunner(publishing.build_app(publisher))
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
