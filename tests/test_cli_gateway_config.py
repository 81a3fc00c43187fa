"""`--gateway-config` and `--zone` on real `fleetgate run` / `fleetgate gateway` processes: the
balancer prefers the gateway's zone, namespace quotas and the circuit breaker come from the
file (and follow its changes), and a bad file is refused at start-up with its problems
positioned."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import eventually
from tests.fakes.upstream import RawUpstream
from tests.running import FleetgateProcess


def _policies(east: str, west: str) -> str:
    """Two clusters in one tier, equal weights, in zones z1 (east) and z2 (west)."""
    cluster = """\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {{name: {name}, labels: {{topology.kubernetes.io/zone: {zone}}}}}
spec:
  services:
    - {{namespace: shop, name: web, ports: [{{port: 80, endpoints: ["{address}"]}}]}}
---
"""
    return (
        cluster.format(name="east", zone="z1", address=east)
        + cluster.format(name="west", zone="z2", address=west)
        + """\
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {name: storefront, namespace: shop}
spec:
  hostnames: [shop.test]
  rules:
    - backendRefs: [{name: web, port: 80}]
"""
    )


CONFIG = """\
apiVersion: fleetgate.io/v1alpha1
kind: GatewayConfig
spec:
  circuitBreaker: {maxRequests: 100}
  namespaceQuotas:
    - {namespace: shop, requestsPerSecond: 0.001, burst: 25}
"""


def _answer(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


async def test_run_prefers_its_zone_and_follows_the_namespace_quota(tmp_path: Path) -> None:
    east_ok, west_ok = _answer(b"east"), _answer(b"west")
    east = await RawUpstream(lambda request: east_ok, "127.0.1.1").start()
    west = await RawUpstream(lambda request: west_ok, "127.0.2.1").start()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "fleet.yaml").write_text(_policies(east.address, west.address))
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG)
    run = FleetgateProcess(
        ["run", "-c", str(policies), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
         "--zone", "z1", "--gateway-config", str(config)],
        tmp_path / "run.log",
    )  # fmt: skip
    try:
        await run.start()
        bodies, statuses = [], []
        retry_after = reason = None
        async with aiohttp.ClientSession() as client:
            for _ in range(40):
                async with client.get(
                    f"http://{run.listen}/", headers={"Host": "shop.test"}
                ) as resp:
                    statuses.append(resp.status)
                    if resp.status == 200:
                        bodies.append(await resp.text())
                    else:
                        retry_after = resp.headers.get("Retry-After")
                        reason = resp.headers.get("x-gateway-reason")
                        break
            # The administrator raises the quota: followed without a restart.
            temp = config.with_name(".gateway.yaml.tmp")
            temp.write_text(CONFIG.replace("burst: 25", "burst: 1000"))
            temp.replace(config)

            async def admitted() -> bool:
                async with client.get(
                    f"http://{run.listen}/", headers={"Host": "shop.test"}
                ) as resp:
                    return resp.status == 200

            await eventually(admitted, timeout_s=15, interval_s=0.2)
    finally:
        await run.close()
        await east.close()
        await west.close()
    # Same tier, equal weights: without the zone half would go west.
    assert set(bodies) == {"east"}
    assert statuses == [200] * 25 + [429]  # the burst, then the namespace quota
    assert retry_after is not None
    assert reason == "rate_limited"


BAD = """\
apiVersion: fleetgate.io/v1alpha1
kind: GatewayConfig
spec:
  namespaceQuotas:
    - {namespace: shop, requestsPerSecond: 0}
"""


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["run", "-c", "{dir}"], id="run"),
        pytest.param(["gateway", "--controller", "http://127.0.0.1:9"], id="gateway"),
        pytest.param(
            ["gateway", "--controller", "http://127.0.0.1:9", "--workers", "2"], id="workers"
        ),
    ],
)
async def test_a_bad_gateway_config_is_refused_at_start_up(
    tmp_path: Path, command: list[str]
) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(BAD)
    args = [part.replace("{dir}", str(tmp_path)) for part in command]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetgate", *args,
        "--listen", "127.0.0.1:0", "--admin", "none", "--gateway-config", str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert f"{config}:5:44: spec.namespaceQuotas[0].requestsPerSecond" in err.decode()
