"""A controller's release side on loopback: Publisher + Reconciler + ReleaseRunner, the snapshot API
on a real socket, and gateways that long-poll it (each can be held back before applying)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from controller import publishing, snapshot_api
from controller.publishing import Publisher
from controller.reconcile import Reconciler, ReconcileSettings
from controller.releases import ReleaseRunner, ReleaseSettings, reconciler_hook
from policies import loading
from policies import snapshot as wire
from policies.model import PolicySet
from policies.table import RoutingTable
from tests.conftest import eventually

CLUSTERS = """
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: east, labels: {region: us-east}}
spec:
  services:
    - namespace: shop
      name: web
      ports: [{port: 80, endpoints: ["127.0.1.1:8080"]}]
    - namespace: shop
      name: web-v2
      ports: [{port: 80, endpoints: ["127.0.1.1:8081"]}]
---
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {name: storefront, namespace: shop}
spec:
  hostnames: [shop.example]
  rules:
    - backendRefs: [{name: web, port: 80}]
---
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {name: api, namespace: payments}
spec:
  hostnames: [pay.example]
  rules:
    - backendRefs: [{name: web, port: 80}]
"""


def release_yaml(
    steps: str,
    *,
    name: str = "web-v2",
    namespace: str = "shop",
    target: str = "storefront",
    analysis: str = "",
    abort: str = "",
) -> str:
    """A canary Release of shop/storefront from web to web-v2; `steps` is a YAML flow list."""
    return f"""
apiVersion: fleetgate.io/v1alpha1
kind: Release
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  target: {target}
  stable: {{backendRef: {{name: web, port: 80}}}}
  canary: {{backendRef: {{name: web-v2, port: 80}}}}
  strategy:
    canary:
      steps: {steps}
{analysis}
{abort}
"""


async def ticks_pass(runner: ReleaseRunner, count: int = 5) -> None:
    """Let the runner tick `count` more times (a condition to wait on, not a sleep)."""
    target = runner.ticks + count
    await eventually(lambda: runner.ticks >= target)


def load(*texts: str) -> PolicySet:
    result = loading.load_documents([(f"doc{i}.yaml", t) for i, t in enumerate(texts)])
    assert result.ok, [str(p) for p in result.problems]
    return result.policies


def canary_weight(table: RoutingTable, host: str = "shop.example") -> int:
    """The canary's percentage in the first rule for `host` (0 when it is not in the rule)."""
    entry = table.lookup(host)
    assert entry is not None
    rule = entry.rules[0]
    weights = {b.service.name: b.weight for b in rule.backends}
    total = sum(weights.values())
    return round(100 * weights.get("web-v2", 0) / total) if total else 0


class PollingGateway:
    """A gateway as the controller sees one: long-polls /v1/snapshot, reports what it applied.
    Clear `gate` to hold it back between receiving a snapshot and applying it."""

    def __init__(self, base_url: str, gateway_id: str) -> None:
        self.url = base_url + "/v1/snapshot"
        self.id = gateway_id
        self.applied = 0
        self.table: RoutingTable | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.received = 0

    async def run(self, session: aiohttp.ClientSession) -> None:
        after = 0
        while True:
            params = {"after": str(after), "gateway": self.id, "wait": "0.3"}
            if self.applied:
                params["applied"] = str(self.applied)
            async with session.get(self.url, params=params) as response:
                if response.status != 200:
                    continue
                data: Any = await response.json()
            table = wire.load(data)
            after = self.received = table.version
            await self.gate.wait()
            self.table, self.applied = table, table.version

    def weight(self) -> int:
        assert self.table is not None
        return canary_weight(self.table)


@dataclasses.dataclass
class Fleet:
    publisher: Publisher
    reconciler: Reconciler
    runner: ReleaseRunner
    url: str
    gateways: list[PollingGateway]
    task_group: asyncio.TaskGroup
    session: aiohttp.ClientSession
    tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)

    def add_gateway(self, gateway_id: str) -> PollingGateway:
        gateway = PollingGateway(self.url, gateway_id)
        self.gateways.append(gateway)
        task = self.task_group.create_task(gateway.run(self.session), name=f"gw {gateway_id}")
        self.tasks.append(task)
        return gateway

    def live_weight(self) -> int:
        latest = self.publisher.latest
        assert latest is not None
        return canary_weight(latest.table)


def fast_settings(state_file: Path | None = None, **overrides: Any) -> ReleaseSettings:
    return ReleaseSettings(state_file=state_file, tick_interval_s=0.02, **overrides)


@contextlib.asynccontextmanager
async def fleet(
    policies: PolicySet,
    settings: ReleaseSettings,
    *,
    gateways: int = 2,
    clock: Callable[[], float] = time.time,
    app_setup: Callable[[web.Application, ReleaseRunner], None] | None = None,
) -> AsyncIterator[Fleet]:
    """Everything started, policies delivered, `gateways` pollers attached; stopped after."""
    publisher = Publisher(publishing.PublishSettings(max_wait_s=1.0))
    reconciler = Reconciler(publisher, ReconcileSettings(debounce_s=0.01, max_delay_s=0.1))
    runner = ReleaseRunner(settings, publisher, reconciler_hook(reconciler), clock=clock)
    app = snapshot_api.build_app(publisher)
    if app_setup is not None:
        app_setup(app, runner)
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    host, port = app_runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as tg:
            rig = Fleet(publisher, reconciler, runner, url, [], tg, session)
            rig.tasks.append(tg.create_task(reconciler.run(), name="reconciler"))
            rig.tasks.append(tg.create_task(runner.run(), name="runner"))
            runner.update_policies(policies)
            for i in range(gateways):
                rig.add_gateway(f"gw-{i}")
            try:
                yield rig
            finally:
                publisher.close()
                for task in rig.tasks:
                    task.cancel()
    finally:
        await app_runner.cleanup()
