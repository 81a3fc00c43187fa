"""Failover under load (DESIGN.md §7, "member cluster down"): a real `fleetgate run` process with
retries and health checks; every backend of the first-tier cluster is killed while a load
generator sends GETs, and not one client request fails; traffic moves to the next tier and comes
back once the backends return. Loopback only; the load is bounded in count and time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from fleetgate.demo_backend import BackendSpec, DemoBackend
from tests.conftest import eventually
from tests.running import FleetgateProcess

pytestmark = pytest.mark.e2e

CLIENTS = 4
MAX_REQUESTS = 100_000
MAX_SECONDS = 60.0
SHOP = {"Host": "shop.test"}
INTERVAL_S = 0.1
HEALTHY_THRESHOLD = 2
# Returning backends take `HEALTHY_THRESHOLD` passing probes, spaced by the interval plus up to
# 10 % jitter; the bound below gives a loaded test machine ten times that.
RETURN_S = 10 * HEALTHY_THRESHOLD * INTERVAL_S * 1.1 + 1.0
WINDOW = 20  # "traffic has moved": the last WINDOW answers all came from one cluster


def policy(east: list[str], west: list[str]) -> str:
    check = f"""\
  healthCheck:
    path: /healthz
    interval: {int(INTERVAL_S * 1000)}ms
    timeout: 500ms
    unhealthyThreshold: 2
    healthyThreshold: {HEALTHY_THRESHOLD}
"""
    return f"""\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {{name: east}}
spec:
  priority: 0
{check}  services:
    - namespace: shop
      name: web
      ports:
        - port: 80
          endpoints: {east}
---
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {{name: west}}
spec:
  priority: 1
{check}  services:
    - namespace: shop
      name: web
      ports:
        - port: 80
          endpoints: {west}
---
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: storefront, namespace: shop}}
spec:
  hostnames: [shop.test]
  retry:
    attempts: 3
    retryOn: [connect-failure, reset, gateway-error]
    perTryTimeout: 1s
    minRetryConcurrency: {CLIENTS * 2}
  outlierDetection:
    consecutiveErrors: 3
    baseEjectionTime: 1s
    maxEjectionPercent: 100
  rules:
    - backendRefs:
        - {{name: web, port: 80}}
"""


class Load:
    """Keep-alive clients sending GETs until told to stop (or a bound); answers by cluster."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.answers: list[str] = []  # x-cluster of every answer, in order
        self.failures: list[str] = []
        self.stop = asyncio.Event()
        self.deadline = time.monotonic() + MAX_SECONDS

    def last(self, cluster: str) -> bool:
        """The last WINDOW answers all came from `cluster`."""
        tail = self.answers[-WINDOW:]
        return len(tail) == WINDOW and set(tail) == {cluster}

    async def client(self, session: aiohttp.ClientSession) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        while not self.stop.is_set() and self.sent < MAX_REQUESTS:
            if time.monotonic() > self.deadline:
                self.failures.append("load generator hit its time bound")
                return
            self.sent += 1
            try:
                async with session.get(self.url, headers=SHOP, timeout=timeout) as resp:
                    await resp.read()
                    if resp.status != 200:
                        self.failures.append(f"{resp.status} {dict(resp.headers)}")
                    self.answers.append(resp.headers.get("x-cluster", "?"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            asyncio.TaskGroup() as tg,
        ):
            for _ in range(CLIENTS):
                tg.create_task(self.client(session))


async def test_killing_a_whole_cluster_under_load_fails_no_request(tmp_path: Path) -> None:
    east = [DemoBackend(BackendSpec("east", host=f"127.0.1.{n}")) for n in (1, 2)]
    west = [DemoBackend(BackendSpec("west", host="127.0.2.1"))]
    for backend in (*east, *west):
        await backend.start()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "fleet.yaml").write_text(
        policy([b.address for b in east], [b.address for b in west])
    )
    run = FleetgateProcess(
        ["run", "-c", str(policies), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
         "--log-level", "warning"],
        tmp_path / "run.log",
    )  # fmt: skip
    load = Load("")
    metrics: dict[str, float] = {}
    try:
        await run.start()
        load = Load(f"http://{run.listen}/")
        async with asyncio.TaskGroup() as tg:
            generator = tg.create_task(load.run())
            try:
                await eventually(lambda: load.last("east"), timeout_s=10)
                for backend in east:
                    await backend.stop()  # the whole first tier goes away mid-traffic
                moved_at = len(load.answers)
                await eventually(lambda: load.last("west"), timeout_s=10)

                async def checks_noticed() -> bool:  # both east pods out by active checks
                    return (await scrape(run.admin))["fleetgate_health_transitions_total"] >= 2

                await eventually(checks_noticed, timeout_s=10)
                for backend in east:
                    await backend.start()  # same addresses: the pods come back
                await eventually(lambda: load.last("east"), timeout_s=RETURN_S)
            finally:
                load.stop.set()
            await generator
            metrics = await scrape(run.admin)
    finally:
        await run.close()
        for backend in (*east, *west):
            await backend.stop()
    assert load.failures == [], run.text()[-2000:]
    assert "west" in load.answers[moved_at:]
    assert load.sent >= 3 * WINDOW
    assert metrics["fleetgate_health_transitions_total"] >= 4  # east pods out and back in
    assert metrics["fleetgate_retries_total"] >= 1  # the requests in flight when east died


async def scrape(admin: str) -> dict[str, float]:
    """The unlabelled samples of the admin port's /metrics page."""
    async with aiohttp.ClientSession() as scraper, scraper.get(f"http://{admin}/metrics") as resp:
        text = await resp.text()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            out[name] = float(value)
    return out
