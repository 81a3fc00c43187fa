"""`fleetgate run` as a real process: serving, SIGHUP reload, a broken edit that changes nothing
served (but shows in /status and /metrics), graceful SIGTERM; and the embedded pipeline
in-process, reloading on a directory change. Upstreams are real servers on 127.0.1.1/127.0.2.1."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetgate.pipeline import PolicyPipeline
from fleetgate.run import Embedded, RunSettings
from tests.conftest import eventually
from tests.fakes.upstream import RawUpstream, Respond, SeenRequest
from tests.running import (
    BROKEN,
    BROKEN_PROBLEM,
    FleetgateProcess,
    policy_text,
    write_atomically,
)

SHOP = {"Host": "shop.test"}


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[RawUpstream, RawUpstream, list[SeenRequest]]]:
    """east and west: answer with their name, except `/hold`, which waits for the test."""
    held: list[SeenRequest] = []

    def answer(name: bytes) -> Respond:
        def respond(request: SeenRequest) -> bytes | None:
            if request.target == b"/hold":
                held.append(request)
                return None
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(name), name)

        return respond

    east = await RawUpstream(answer(b"east"), "127.0.1.1").start()
    west = await RawUpstream(answer(b"west"), "127.0.2.1").start()
    yield east, west, held
    await east.close()
    await west.close()


async def get(client: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, str, str]:
    """(status, body, x-edit header) of one request through the gateway."""
    async with client.get(url, headers={**SHOP, **headers}) as resp:
        return resp.status, await resp.text(), resp.headers.get("x-edit", "")


async def reload_errors(client: aiohttp.ClientSession, admin: str) -> float:
    async with client.get(f"http://{admin}/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fleetgate_reload_errors_total" and sample.labels == {
                "stage": "validate"
            }:
                return sample.value
    raise AssertionError("fleetgate_reload_errors_total is missing")


async def test_run_reloads_on_sighup_keeps_the_last_good_table_and_drains(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream, list[SeenRequest]]
) -> None:
    east, west, held = upstreams
    policies = tmp_path / "policies"
    policies.mkdir()
    fleet = policies / "fleet.yaml"
    fleet.write_text(policy_text(east=east.address, west=west.address, edit=1, weights=(1, 0)))
    # Polling is off in practice (an hour): only SIGHUP reloads here.
    run = FleetgateProcess(
        ["run", "-c", str(policies), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
         "--poll-interval", "3600", "--debounce", "0.01", "--drain-timeout", "10"],
        tmp_path / "run.log",
    )  # fmt: skip
    try:
        await run.start()
        gw, admin = f"http://{run.listen}", run.admin
        async with aiohttp.ClientSession() as client:
            assert await get(client, f"{gw}/") == (200, "east", "1")

            write_atomically(
                fleet, policy_text(east=east.address, west=west.address, edit=2, weights=(0, 1))
            )
            run.send(signal.SIGHUP)

            async def second_edit_served() -> bool:
                return await get(client, f"{gw}/") == (200, "west", "2")

            await eventually(second_edit_served, timeout_s=10)

            (policies / "broken.yaml").write_text(BROKEN)
            run.send(signal.SIGHUP)

            async def rejected() -> bool:
                async with client.get(f"http://{admin}/status") as resp:
                    policy = (await resp.json())["policy"]
                return policy["last_error"] is not None and not policy["ok"]

            await eventually(rejected, timeout_s=10)
            async with client.get(f"http://{admin}/status") as resp:
                status = await resp.json()
            problems = status["policy"]["last_error"]["problems"]
            assert any(BROKEN_PROBLEM.search(p) for p in problems), problems
            assert await reload_errors(client, admin) == 1
            # Nothing served changed: same table, same answers, the old extra path still there.
            assert status["policy"]["published_version"] == status["table"]["version"]
            assert await get(client, f"{gw}/") == (200, "west", "2")
            assert (await get(client, f"{gw}/edit-2"))[0] == 200
            assert BROKEN_PROBLEM.search(run.text())  # logged as `fleetgate validate` prints it

            # SIGTERM with a request in flight: readiness fails, the request still completes.
            async with asyncio.TaskGroup() as tg:
                in_flight = tg.create_task(get(client, f"{gw}/hold"))
                await eventually(lambda: bool(held))
                run.send(signal.SIGTERM)

                async def unready() -> bool:
                    async with client.get(f"http://{admin}/readyz") as resp:
                        return resp.status == 503

                await eventually(unready)
                held[0].answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
            assert in_flight.result() == (200, "late", "2")
        assert await run.wait() == 0
    finally:
        await run.close()


def test_run_refuses_to_start_on_invalid_policies(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN)
    done = subprocess.run(
        [sys.executable, "-m", "fleetgate", "run", "-c", str(tmp_path),
         "--listen", "127.0.0.1:0", "--admin", "none"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert BROKEN_PROBLEM.search(done.stderr), done.stderr


async def test_embedded_pipeline_reloads_a_changed_directory(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream, list[SeenRequest]]
) -> None:
    east, west, _ = upstreams
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(policy_text(east=east.address, west=west.address, edit=1, weights=(1, 0)))
    settings = RunSettings(
        directory=tmp_path,
        listen=("127.0.0.1", 0),
        admin=None,
        poll_interval_s=0.01,
        debounce_s=0.01,
    )
    pipeline = PolicyPipeline(tmp_path, poll_interval_s=0.01, debounce_s=0.01)
    assert await pipeline.load_first() == ()
    embedded = Embedded(settings, pipeline)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg, aiohttp.ClientSession() as client:
        tg.create_task(embedded.serve(stop))
        try:
            await embedded.process.listening.wait()
            gw = f"http://{embedded.listen}"
            assert await get(client, f"{gw}/") == (200, "east", "1")
            write_atomically(
                fleet, policy_text(east=east.address, west=west.address, edit=2, weights=(0, 1))
            )

            async def changed() -> bool:
                return await get(client, f"{gw}/") == (200, "west", "2")

            await eventually(changed)
            assert pipeline.reload_stats().loads == 2
        finally:
            stop.set()


async def test_controller_and_gateway_processes_with_static_stability(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream, list[SeenRequest]]
) -> None:
    """`fleetgate controller` publishes; `fleetgate gateway` follows it, caches the snapshot, and
    serves the cached table when started again while the controller is down."""
    east, west, _ = upstreams
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "fleet.yaml").write_text(
        policy_text(east=east.address, west=west.address, edit=7, weights=(1, 0))
    )
    controller = FleetgateProcess(
        ["controller", "-c", str(policies), "--listen", "127.0.0.1:0"], tmp_path / "controller.log"
    )
    banner = re.compile(r"serving snapshots on (http://\S+)")
    cache = tmp_path / "cache"
    gateways: list[FleetgateProcess] = []

    def gateway(name: str) -> FleetgateProcess:
        process = FleetgateProcess(
            ["gateway", "--controller", url, "--listen", "127.0.0.1:0",
             "--admin", "127.0.0.1:0", "--cache-dir", str(cache), "--id", name],
            tmp_path / f"{name}.log",
        )  # fmt: skip
        gateways.append(process)
        return process

    try:
        await controller.start(banner=banner)
        url = controller.listen
        first = await gateway("gw-1").start()
        async with aiohttp.ClientSession() as client:
            assert await get(client, f"http://{first.listen}/") == (200, "east", "7")
            # `fleetgate status` reads the file-mode controller as it reads Kubernetes mode.
            status = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fleetgate", "status", "--controller", url,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with asyncio.timeout(30):
                out, err = await status.communicate()
            shown = out.decode()
            assert status.returncode == 0, shown + err.decode()
            assert re.search(r"^east\s+static\s+0\s+shop/web:80 1/1", shown, re.M), shown
            assert re.search(r"^gw-1\s+-\s+\d+\s+0\s", shown, re.M), shown
            assert re.search(r"^TrafficPolicy shop/\S+\s+yes", shown, re.M), shown
            await first.close()
            await controller.close()
            second = await gateway("gw-2").start()  # the controller is down now
            assert await get(client, f"http://{second.listen}/") == (200, "east", "7")
            async with client.get(f"http://{second.admin}/status") as resp:
                status = await resp.json()
            assert status["subscription"]["source"] == "cache"
            assert status["subscription"]["connected"] is False
    finally:
        for process in (*gateways, controller):
            await process.close()


async def test_run_with_two_workers_shares_the_port_and_reloads_both(
    tmp_path: Path, upstreams: tuple[RawUpstream, RawUpstream, list[SeenRequest]]
) -> None:
    east, west, _ = upstreams
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(policy_text(east=east.address, west=west.address, edit=1, weights=(1, 0)))
    run = FleetgateProcess(
        ["run", "-c", str(tmp_path), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
         "--workers", "2", "--poll-interval", "3600"],
        tmp_path / "run.log",
    )  # fmt: skip
    try:
        await run.start()
        gw = f"http://{run.listen}"
        # A new connection per request: SO_REUSEPORT spreads connections over the workers.
        fresh = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=fresh) as client:
            answers = [await get(client, f"{gw}/") for _ in range(40)]
            assert set(answers) == {(200, "east", "1")}
            async with client.get(f"http://{run.admin}/metrics") as resp:
                text = await resp.text()
            shares = {
                s.labels["worker"]: s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "fleetgate_requests_total"
            }
            assert sorted(shares) == ["0", "1"]
            assert sum(shares.values()) == 40
            assert min(shares.values()) > 0  # both workers served a share

            write_atomically(
                fleet, policy_text(east=east.address, west=west.address, edit=2, weights=(0, 1))
            )
            run.send(signal.SIGHUP)

            async def both_reloaded() -> bool:
                seen = {await get(client, f"{gw}/") for _ in range(20)}
                return seen == {(200, "west", "2")}

            await eventually(both_reloaded, timeout_s=15)
            async with client.get(f"http://{run.admin}/status") as resp:
                status = await resp.json()
            versions = {w["table"]["version"] for w in status["workers"]}
            assert versions == {status["policy"]["published_version"]}
            assert status["policy"]["rollout"].startswith("2/2 gateways on v")
        run.send(signal.SIGTERM)
        assert await run.wait() == 0
    finally:
        await run.close()
