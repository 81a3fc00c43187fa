"""Reload under load (DESIGN.md §7): a real `fleetgate run` process serves a load generator while
its policy directory is rewritten 100 times; not one request fails, and a broken edit in the
middle changes nothing that is served. Loopback only; the load is bounded in count and time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import eventually
from tests.fakes.upstream import RawUpstream, ok
from tests.running import BROKEN, BROKEN_PROBLEM, FleetgateProcess, policy_text, write_atomically

pytestmark = pytest.mark.e2e

EDITS = 100
BROKEN_AT = EDITS // 2
CLIENTS = 4  # concurrent keep-alive clients of the load generator
MAX_REQUESTS = 200_000
MAX_SECONDS = 50.0
SHOP = {"Host": "shop.test"}
# Alternating weights move traffic between the clusters on every edit.
WEIGHTS = ((1, 0), (1, 1), (0, 1), (3, 1))


class Load:
    """Keep-alive clients sending GET / and GET /always until told to stop (or a bound)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.failures: list[str] = []
        self.edits_seen: set[str] = set()
        self.stop = asyncio.Event()
        self.deadline = time.monotonic() + MAX_SECONDS

    async def client(self, session: aiohttp.ClientSession, n: int) -> None:
        paths = ("/", "/always")
        timeout = aiohttp.ClientTimeout(total=10)
        while not self.stop.is_set() and self.sent < MAX_REQUESTS:
            if time.monotonic() > self.deadline:
                self.failures.append("load generator hit its time bound")
                return
            path = paths[self.sent % 2]
            self.sent += 1
            try:
                async with session.get(self.url + path, headers=SHOP, timeout=timeout) as resp:
                    await resp.read()
                    if resp.status != 200:
                        self.failures.append(f"{path}: {resp.status} {resp.headers}")
                    self.edits_seen.add(resp.headers.get("x-edit", "?"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failures.append(f"{path}: {type(exc).__name__}: {exc}")

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=CLIENTS)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            asyncio.TaskGroup() as tg,
        ):
            for n in range(CLIENTS):
                tg.create_task(self.client(session, n))


async def test_100_reloads_under_load_fail_no_request(tmp_path: Path) -> None:
    east = await RawUpstream(ok(b"east"), "127.0.1.1").start()
    west = await RawUpstream(ok(b"west"), "127.0.2.1").start()
    policies = tmp_path / "policies"
    policies.mkdir()
    fleet = policies / "fleet.yaml"

    def edit(n: int) -> str:
        return policy_text(
            east=east.address, west=west.address, edit=n, weights=WEIGHTS[n % len(WEIGHTS)]
        )

    fleet.write_text(edit(0))
    run = FleetgateProcess(
        ["run", "-c", str(policies), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
         "--poll-interval", "0.01", "--debounce", "0.01", "--log-level", "warning"],
        tmp_path / "run.log",
    )  # fmt: skip
    try:
        await run.start()
        gw, admin = f"http://{run.listen}", f"http://{run.admin}"
        load = Load(gw)
        async with aiohttp.ClientSession() as probe, asyncio.TaskGroup() as tg:
            generator = tg.create_task(load.run())

            async def served_edit() -> str:
                async with probe.get(f"{gw}/", headers=SHOP) as resp:
                    assert resp.status == 200
                    return resp.headers["x-edit"]

            async def policy_status() -> dict[str, Any]:
                async with probe.get(f"{admin}/status") as resp:
                    status: dict[str, Any] = (await resp.json())["policy"]
                    return status

            try:
                for n in range(1, EDITS + 1):
                    if n == BROKEN_AT:
                        before = await served_edit()
                        write_atomically(policies / "broken.yaml", BROKEN)

                        async def rejected() -> bool:
                            return (await policy_status())["ok"] is False

                        await eventually(rejected, timeout_s=10)
                        status = await policy_status()
                        last_error = status["last_error"]
                        assert isinstance(last_error, dict)
                        assert any(BROKEN_PROBLEM.search(p) for p in last_error["problems"])
                        assert await served_edit() == before  # nothing served changed
                        async with probe.get(f"{gw}/edit-{before}", headers=SHOP) as resp:
                            assert resp.status == 200
                        (policies / "broken.yaml").unlink()
                    write_atomically(fleet, edit(n))

                    async def applied(wanted: str = str(n)) -> bool:
                        return await served_edit() == wanted

                    await eventually(applied, timeout_s=10)
            finally:
                load.stop.set()
            await generator
        status = await policy_status_once(admin)
        assert status["rejected"] == 1
        assert status["accepted"] >= EDITS + 1  # every edit was its own reload
    finally:
        await run.close()
        await east.close()
        await west.close()
    assert load.failures == []
    assert load.sent >= EDITS  # the load really ran alongside the edits
    assert len(load.edits_seen) > 10  # ... and saw many of the tables
    print(f"load: {load.sent} requests, {len(load.edits_seen)} tables seen, 0 failed")
    assert await run.wait() == 0


async def policy_status_once(admin: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(f"{admin}/status") as resp:
        policy: dict[str, int] = (await resp.json())["policy"]
        return policy
