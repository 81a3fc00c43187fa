"""Release analysis from a real Prometheus gives the same verdicts as the built-in gateway counters.

The fleet of tests/e2e/release_fleet.py (controller, two gateways, v1/v2 backends) serves the same
services in two namespaces, `shop` and `lab`, from the same backend servers. Two releases run side
by side with the same analysis: `shop/web-v2` reads the gateways' `/metrics` (built-in), and
`lab/web-v2` asks a Prometheus server that scrapes both gateways' admin ports. The `backend` label
(the service) keeps the two releases' traffic apart. Both get the same traffic shape, and must
reach the same verdict with the same reason, three times over:

* no traffic: `Inconclusive` (`not_enough_traffic`), a pause, never a pass;
* a healthy canary: `Pass` (`ok`), the gate passes;
* a canary answering 10 % errors: `Fail` (`success_rate_below_min`), an abort.

Prometheus is Debian's `prometheus` package: installed by scripts/install-prometheus.sh when the
binary is missing (its service is never started), then run by the test on 127.0.0.1 with a
generated config and a 200 ms scrape interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import eventually
from tests.e2e.release_fleet import ReleaseFleet, free_port, release_fleet

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

INSTALL = Path(__file__).resolve().parents[2] / "scripts" / "install-prometheus.sh"
RELEASES = ("shop/web-v2", "lab/web-v2")  # built-in, Prometheus
HOSTS = ("shop.test", "lab.shop.test")
SCRAPE = "200ms"


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The `prometheus` binary, installed from the distribution's package when missing."""
    found = shutil.which("prometheus")
    if found is None:
        subprocess.run(["bash", str(INSTALL)], check=True, timeout=600)
        found = shutil.which("prometheus")
    assert found is not None, "scripts/install-prometheus.sh did not install prometheus"
    return found


def release(namespace: str, prometheus: str | None) -> str:
    source = (
        f"    prometheus: {{address: 'http://{prometheus}', query: 'job=\"fleetgate-gateway\"'}}\n"
        if prometheus
        else ""
    )
    return f"""\
apiVersion: fleetgate.io/v1alpha1
kind: Release
metadata: {{name: web-v2, namespace: {namespace}}}
spec:
  target: storefront
  stable: {{backendRef: {{name: web, port: 80}}}}
  canary: {{backendRef: {{name: web-v2, port: 80}}}}
  strategy:
    canary:
      steps: [{{setWeight: 50}}, {{analysis: {{}}}}, {{pause: {{}}}}]
  analysis:
    interval: 2s
    count: 2
    failureLimit: 0
    minRequests: 20
    successRate: {{min: 0.99}}
{source}---
"""


@contextlib.asynccontextmanager
async def prometheus(
    binary: str, address: str, tmp: Path, targets: list[str]
) -> AsyncIterator[None]:
    """A Prometheus on `address` scraping `targets` (gateway admin "host:port"s)."""
    config = tmp / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: {SCRAPE}, scrape_timeout: {SCRAPE}}}\n"
        "scrape_configs:\n"
        "  - job_name: fleetgate-gateway\n"
        f"    static_configs: [{{targets: [{', '.join(targets)}]}}]\n"
    )
    log = await asyncio.to_thread(open, tmp / "prometheus.log", "wb")
    with log:
        proc = await asyncio.create_subprocess_exec(
            binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address={address}", "--log.level=warn",
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def query(session: aiohttp.ClientSession, address: str, promql: str) -> list[Any]:
    async with session.get(f"http://{address}/api/v1/query", params={"query": promql}) as response:
        body = await response.json()
    assert body["status"] == "success", body
    result: list[Any] = body["data"]["result"]
    return result


async def both_until(
    fleet: ReleaseFleet, phase: str, step: int | None = None
) -> tuple[list[dict[str, Any]], list[list[tuple[str, str]]]]:
    """Wait until both releases are in `phase` (at `step`, if given); their statuses and the
    verdicts each one showed meanwhile."""
    verdicts: list[list[tuple[str, str]]] = [[], []]

    def there(status: dict[str, Any]) -> bool:
        return status["phase"] == phase and (step is None or status["step"] == step)

    statuses = await asyncio.gather(
        *(
            fleet.until(r, there, settled=False, verdicts=v, timeout_s=30)
            for r, v in zip(RELEASES, verdicts, strict=True)
        )
    )
    return list(statuses), verdicts


# The first run on a fresh machine installs Prometheus in this test's setup (apt can take a
# minute or two); the test itself takes well under one.
@pytest.mark.timeout(300)
async def test_prometheus_and_gateway_counters_give_the_same_verdicts(
    tmp_path: Path, prometheus_binary: str
) -> None:
    address = f"127.0.0.1:{free_port()}"  # named by the lab Release, so chosen first
    releases = release("shop", None) + release("lab", address)
    async with (
        release_fleet(tmp_path, releases, namespaces=("shop", "lab")) as fleet,
        prometheus(prometheus_binary, address, tmp_path, fleet.admins),
    ):

        async def scraping_both_gateways() -> bool:
            try:
                up = await query(fleet.session, address, 'up{job="fleetgate-gateway"} == 1')
            except (aiohttp.ClientError, ValueError):
                return False  # not listening yet
            return len(up) == 2

        await eventually(scraping_both_gateways, timeout_s=30, interval_s=0.1)

        # No traffic: too little to judge is inconclusive, and pauses both.
        for release_id in RELEASES:
            await fleet.act(release_id, "start")
        statuses, verdicts = await both_until(fleet, "Paused", step=1)
        assert [s["pause_reason"] for s in statuses] == ["inconclusive_analysis"] * 2
        assert verdicts == [[("Inconclusive", "not_enough_traffic")]] * 2, verdicts

        # A healthy canary passes both gates (the gate's last measurement clears the tally).
        async with fleet.load(HOSTS) as load:
            for release_id in RELEASES:
                await fleet.act(release_id, "abort")
                await fleet.act(release_id, "retry")
            statuses, verdicts = await both_until(fleet, "Paused", step=2)
        assert load.split.failed == 0, load.split
        assert [s["pause_reason"] for s in statuses] == ["pause_step"] * 2
        assert verdicts == [[("Pass", "ok")]] * 2, verdicts

        # 10 % errors fail the first measurement of both, and both abort.
        for name in ("web-v2-east", "web-v2-west"):
            fleet.backends[name].set_error_rate(0.1)
        async with fleet.load(HOSTS):
            for release_id in RELEASES:
                await fleet.act(release_id, "abort")
                await fleet.act(release_id, "retry")
            statuses, verdicts = await both_until(fleet, "Aborted")
        assert [s["abort_reason"] for s in statuses] == ["analysis_failed"] * 2
        assert verdicts == [[("Fail", "success_rate_below_min")]] * 2, verdicts
