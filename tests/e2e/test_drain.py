"""Graceful drain (DESIGN.md §7): SIGTERM to a real `fleetgate run` process under load. /readyz
fails first, the listener stays open for the drain delay, responses say `Connection: close`,
every request that started before the signal completes, and the process exits 0 within the
drain delay plus the drain timeout. Loopback only; the load is bounded in count and time."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import eventually
from tests.fakes.upstream import RawUpstream, SeenRequest
from tests.running import FleetgateProcess, policy_text

pytestmark = pytest.mark.e2e

CLIENTS = 8
MAX_REQUESTS = 2_000
MAX_SECONDS = 30.0
ANSWER_AFTER_S = 0.15  # slow-ish upstream: requests are in flight when the signal lands
DRAIN_DELAY_S = 0.5
DRAIN_TIMEOUT_S = 5.0
SHOP = {"Host": "shop.test"}
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow"


def slow_answer(request: SeenRequest) -> None:
    asyncio.get_running_loop().call_later(ANSWER_AFTER_S, request.answer, OK)


class Load:
    """Keep-alive clients, each request stamped with when it started."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, str]] = []  # (started, "200" or the error)
        self.closes = 0  # responses that said Connection: close
        self.signalled_at = float("inf")
        self.deadline = time.monotonic() + MAX_SECONDS

    async def client(self, session: aiohttp.ClientSession) -> None:
        while len(self.results) < MAX_REQUESTS and time.monotonic() < self.deadline:
            started = time.monotonic()
            if started > self.signalled_at + DRAIN_DELAY_S + DRAIN_TIMEOUT_S:
                return
            try:
                async with session.get(self.url, headers=SHOP) as resp:
                    await resp.read()
                    outcome = str(resp.status)
                    self.closes += resp.headers.get("Connection", "").lower() == "close"
            except aiohttp.ClientError as exc:
                outcome = type(exc).__name__
                if started > self.signalled_at:
                    return  # the listener has closed: this client is done
            self.results.append((started, outcome))

    def before_signal(self) -> list[str]:
        return [outcome for started, outcome in self.results if started < self.signalled_at]


async def test_sigterm_under_load_loses_no_request_and_exits_0(tmp_path: Path) -> None:
    east = await RawUpstream(slow_answer, "127.0.1.1").start()
    west = await RawUpstream(slow_answer, "127.0.2.1").start()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "fleet.yaml").write_text(policy_text(east=east.address, west=west.address, edit=1))
    run = FleetgateProcess(
        ["run", "-c", str(policies), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
         "--drain-delay", str(DRAIN_DELAY_S), "--drain-timeout", str(DRAIN_TIMEOUT_S)],
        tmp_path / "run.log",
    )  # fmt: skip
    try:
        await run.start()
        load = Load(f"http://{run.listen}/")
        # Keep-alive clients: the delay gives them time to finish before idle connections close.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:
            readiness: list[int] = []

            async def ready_status() -> int:
                # a session of its own: the load's connection limit must not queue this
                async with (
                    aiohttp.ClientSession() as admin,
                    admin.get(f"http://{run.admin}/readyz") as resp,
                ):
                    return resp.status

            async with asyncio.TaskGroup() as tg:
                for _ in range(CLIENTS):
                    tg.create_task(load.client(session))
                await eventually(lambda: len(load.results) >= 4 * CLIENTS, timeout_s=20)
                load.signalled_at = time.monotonic()
                run.send(signal.SIGTERM)

                async def unready() -> bool:
                    readiness.append(await ready_status())
                    return readiness[-1] == 503

                await eventually(unready, timeout_s=DRAIN_DELAY_S * 10)
            # the process ends within the drain delay plus the drain timeout (plus start-up slack)
            exit_code = await run.wait(timeout_s=DRAIN_DELAY_S + DRAIN_TIMEOUT_S + 5)
    finally:
        await run.close()
        await east.close()
        await west.close()
    before = load.before_signal()
    assert len(before) >= 4 * CLIENTS
    assert [o for o in before if o != "200"] == []
    assert exit_code == 0  # and within the bound given to run.wait
    assert load.closes >= 1  # responses in flight when the listener closed said so
    assert readiness[-1] == 503
