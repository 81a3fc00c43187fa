"""Built-in analysis without a `--gateway-metrics` list: the controller scrapes the metrics URLs
the gateways report when they poll for snapshots (real processes on loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import eventually
from tests.e2e.release_fleet import release_fleet
from tests.e2e.test_releases import FAILING

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]


async def test_analysis_finds_the_gateways_through_the_registry(tmp_path: Path) -> None:
    async with release_fleet(tmp_path, FAILING, gateway_metrics=False) as fleet:
        reported = sorted(f"http://{admin}/metrics" for admin in fleet.admins)

        async def both_reported() -> bool:
            status, body = await fleet.call("GET", "gateways")
            assert status == 200, body
            return sorted(str(g["metrics_url"]) for g in body["gateways"]) == reported

        await eventually(both_reported, timeout_s=10)
        for name in ("web-v2-east", "web-v2-west"):
            fleet.backends[name].set_error_rate(0.1)
        async with fleet.load():
            await fleet.act("shop/web-v2", "start")
            aborted = await fleet.until(
                "shop/web-v2", lambda s: s["phase"] == "Aborted", settled=False, timeout_s=30
            )
        assert aborted["abort_reason"] == "analysis_failed", aborted
        assert aborted["analysis"]["failures"] == 2, aborted["analysis"]
