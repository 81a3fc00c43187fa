"""Gateways report their admin /metrics URL when they poll for snapshots, and built-in analysis
scrapes the live ones when the controller has no static `--gateway-metrics` list."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from controller import snapshot_api
from controller.observations import ObservationSettings
from controller.publishing import Publisher, PublishSettings
from policies import snapshot as wire
from policies.release_state import Phase, Transition
from tests.conftest import eventually
from tests.controller.release_rig import (
    CLUSTERS,
    PollingGateway,
    fast_settings,
    fleet,
    load,
    release_yaml,
)
from tests.controller.test_releases_runner import ANALYSIS, CANARY, STABLE, metrics_app


@contextlib.asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def poll(session: aiohttp.ClientSession, base: str, metrics: str, token: str = "") -> None:
    params = {"gateway": "gw-1", "wait": "0", "metrics": metrics}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(base + "/v1/snapshot", params=params, headers=headers) as response:
        assert response.status in (200, 304)


@pytest.mark.parametrize(
    ("token", "metrics", "recorded"),
    [
        pytest.param("", "http://127.0.0.1:9901/metrics", True, id="own-address"),
        pytest.param("", "https://127.0.0.1:9901/metrics", True, id="https"),
        pytest.param("", "http://10.1.2.3:9901/metrics", False, id="other-host-anonymous"),
        pytest.param("s3cret", "http://10.1.2.3:9901/metrics", True, id="other-host-with-token"),
        pytest.param("", "file:///etc/passwd", False, id="not-http"),
        pytest.param("", "http://u:p@127.0.0.1:9901/metrics", False, id="credentials"),
        pytest.param("", "not a url", False, id="garbage"),
    ],
)
async def test_a_reported_metrics_url_is_recorded_when_acceptable(
    token: str, metrics: str, recorded: bool
) -> None:
    publisher = Publisher(PublishSettings(token=token or None, max_wait_s=1.0))
    async with (
        served(snapshot_api.build_app(publisher)) as base,
        aiohttp.ClientSession() as session,
    ):
        await poll(session, base, metrics, token)
        assert publisher.metrics_urls() == ((metrics,) if recorded else ())
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with session.get(base + "/v1/gateways", headers=headers) as response:
            body: Any = await response.json()
    assert [g["metrics_url"] for g in body["gateways"]] == [metrics if recorded else None]


class ReportingGateway(PollingGateway):
    """A polling gateway that reports where its metrics are, as `fleetgate gateway` does."""

    def __init__(self, base_url: str, gateway_id: str, metrics: str) -> None:
        super().__init__(base_url, gateway_id)
        self.metrics = metrics

    async def run(self, session: aiohttp.ClientSession) -> None:
        after = 0
        while True:
            params = {"after": str(after), "gateway": self.id, "wait": "0.3"}
            params["metrics"] = self.metrics
            if self.applied:
                params["applied"] = str(self.applied)
            async with session.get(self.url, params=params) as response:
                if response.status != 200:
                    continue
                data: Any = await response.json()
            self.table = wire.load(data)
            after = self.applied = self.table.version


async def test_analysis_scrapes_the_gateways_that_reported_their_metrics() -> None:
    policies = load(
        CLUSTERS,
        release_yaml("[{setWeight: 30}, {analysis: {}}, {setWeight: 60}]", analysis=ANALYSIS),
    )
    # No static list: without the registry every measurement would be empty (inconclusive).
    settings = fast_settings(observations=ObservationSettings(metrics_urls=()))
    app = metrics_app({CANARY: (100, 10), STABLE: (400, 0)})
    async with served(app) as metrics_base, fleet(policies, settings, gateways=0) as rig:
        gateway = ReportingGateway(rig.url, "gw-1", metrics_base + "/metrics")
        rig.gateways.append(gateway)
        rig.tasks.append(rig.task_group.create_task(gateway.run(rig.session), name="gw-1"))
        await eventually(lambda: rig.publisher.metrics_urls() == (metrics_base + "/metrics",))
        result = await rig.runner.act("shop/web-v2", "start", actor="alice")
        assert isinstance(result, Transition), result

        def aborted() -> bool:
            state = rig.runner.state("shop/web-v2")
            return state is not None and state.phase is Phase.ABORTED

        await eventually(aborted)
        state = rig.runner.state("shop/web-v2")
        assert state is not None
        assert state.abort_reason == "analysis_failed"
        assert state.tally.last is not None
        assert state.tally.last.canary_success_rate == pytest.approx(0.9)
