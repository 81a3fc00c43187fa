"""Fixtures for the Kubernetes side of the controller: simulated clusters on 127.0.0.1 and real
kubernetes_asyncio clients connected to them through kubeconfig contexts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from controller import kube, kube_config
from controller.watching import WatchSettings
from tests.fakes.kube_api import KubeApiSimulator
from tests.fakes.kube_config import write_kubeconfig

StartSimulator = Callable[..., Awaitable[KubeApiSimulator]]
Connect = Callable[..., Awaitable[kube.ClusterClient]]

# Tiny timers: every wait in these tests is a poll on a condition, these only bound how long.
FAST_KUBE = kube.KubeSettings(request_timeout_s=2.0, connect_timeout_s=1.0, probe_timeout_s=0.5)
FAST_WATCH = WatchSettings(
    watch_timeout_s=30.0,
    stall_s=5.0,
    bookmarks=True,
    backoff_base_s=0.01,
    backoff_max_s=0.1,
    min_watch_s=0.0,
)


@pytest.fixture
async def start_simulator() -> AsyncIterator[StartSimulator]:
    """Start simulated clusters (one aiohttp server each); all stopped after the test."""
    sims: list[KubeApiSimulator] = []

    async def start(name: str, **options: Any) -> KubeApiSimulator:
        sim = KubeApiSimulator(name, **options)
        await sim.start()
        sims.append(sim)
        return sim

    yield start
    for sim in reversed(sims):
        await sim.stop()


@pytest.fixture
async def connect(tmp_path: Path) -> AsyncIterator[Connect]:
    """A ClusterClient for a simulator, built the production way: from a kubeconfig file with one
    context per cluster. Closed after the test."""
    clients: list[kube.ClusterClient] = []

    async def _connect(
        sim: KubeApiSimulator, *, settings: kube.KubeSettings = FAST_KUBE
    ) -> kube.ClusterClient:
        path = write_kubeconfig(tmp_path / f"kubeconfig-{sim.name}", [sim])
        client = await kube_config.connect(sim.name, path, context=sim.name, settings=settings)
        clients.append(client)
        return client

    yield _connect
    for client in clients:
        await client.close()
