"""Releases end to end, with real processes (tests/e2e/release_fleet.py): a `fleetgate controller`
with the operator API and a state file, two `fleetgate gateway` replicas, stable (v1) and canary
(v2) demo backends in two member clusters on loopback.

* a healthy canary walks its steps (with analysis gates) to 100 % and completes, and each step's
  canary share matches its weight within ±5 percentage points;
* a canary answering 10 % errors is aborted by analysis on its second failed measurement
  (`failureLimit: 1`: within two analysis intervals), after which no request reaches it;
* blue-green preview, promote and instant rollback; a header canary; a mirror;
* a sticky user never flips between versions while the weight grows;
* SIGKILLing the controller mid-release changes no weight (both gateways' tables keep the same
  checksum throughout), and the restarted controller resumes the release where it was;
* a developer token cannot see or touch another namespace's release.

Share tolerance: the Gateway API weight conformance test allows ±5 points over 500 requests. A
correct 50 % split misses that band by chance 2.5 % of the time at 500 requests, so each step here
sends 2000 (1000 per gateway): the same band is then 4.5 standard deviations wide.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import eventually
from tests.e2e.release_fleet import (
    ReleaseFleet,
    Split,
    free_port,
    release_fleet,
    run_cli,
    split_through,
)
from tests.running import FleetgateProcess

# The test only drives real processes (which run uvloop themselves): one loop for the driver is
# enough, and both would double the file's time.
pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_factories=["uvloop"])]

SHARE_REQUESTS = 2000
TOLERANCE_PP = 5.0
ANALYSIS = """\
  analysis:
    interval: 1s
    count: {count}
    failureLimit: 1
    minRequests: 20
    successRate: {{min: 0.99}}
"""


def canary(
    name: str,
    steps: str,
    *,
    namespace: str = "shop",
    target: str = "storefront",
    sticky: bool = False,
    extra: str = "",
) -> str:
    """A canary Release of <namespace>/<target> from web to web-v2."""
    return f"""\
apiVersion: fleetgate.io/v1alpha1
kind: Release
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  target: {target}
  stable: {{backendRef: {{name: web, port: 80}}}}
  canary: {{backendRef: {{name: web-v2, port: 80}}}}
  strategy:
    canary:
      stickiness: {str(sticky).lower()}
      steps: {steps}
{extra}---
"""


def paused_at(weight: int, step: int) -> Callable[[dict[str, Any]], bool]:
    """Held by a pause step at `step` with this canary weight."""

    def check(status: dict[str, Any]) -> bool:
        return (
            status.get("phase") == "Paused"
            and status.get("pause_reason") == "pause_step"
            and status.get("canary_weight") == weight
            and status.get("step") == step
        )

    return check


def past_or_stopped(step: int) -> Callable[[dict[str, Any]], bool]:
    """At `step` or beyond, or held (aborted, paused) before it."""
    return lambda status: status["step"] >= step or status["phase"] != "Progressing"


async def assert_share(fleet: ReleaseFleet, weight: int) -> None:
    split = await fleet.split(SHARE_REQUESTS)
    assert split.failed == 0, split
    assert abs(split.share("v2") - weight) <= TOLERANCE_PP, (weight, split)


WALK = canary(
    "web-v2",
    "[{setWeight: 20}, {pause: {}}, {analysis: {}}, {setWeight: 50}, {pause: {}}, "
    "{analysis: {}}, {setWeight: 80}, {pause: {}}, {setWeight: 100}]",
    extra=ANALYSIS.format(count=2),
)


async def test_a_healthy_canary_walks_its_steps_to_100_percent(tmp_path: Path) -> None:
    async with release_fleet(tmp_path, WALK) as fleet:
        code, _, err = await fleet.cli("release", "start", "shop/web-v2")
        assert code == 0, err
        stops = [(20, 1), (50, 4), (80, 7)]  # (weight, index of the pause step that holds it)
        verdicts: list[tuple[str, str]] = []
        for n, (weight, step) in enumerate(stops):
            status = await fleet.until("shop/web-v2", paused_at(weight, step))
            assert status["rollout"]["pending"] == [], status
            await assert_share(fleet, weight)
            async with fleet.load() as load:  # the analysis gate after each pause needs traffic
                await fleet.act("shop/web-v2", "promote")
                if n + 1 < len(stops):
                    after = await fleet.until(
                        "shop/web-v2",
                        past_or_stopped(stops[n + 1][1]),
                        settled=False,
                        verdicts=verdicts,
                    )
                    assert after["step"] == stops[n + 1][1], after  # the gate passed
            assert load.split.failed == 0, load.split
        done = await fleet.until("shop/web-v2", lambda s: s["phase"] == "Completed")
        assert done["canary_weight"] == 100
        # Two gates of two measurements; each gate's last one clears the tally as it passes.
        assert verdicts == [("Pass", "ok")] * 2, verdicts
        split = await fleet.split(500)
        assert split.versions == {"v2": 500}, split

        code, out, _ = await fleet.cli("history", "shop/web-v2", "--release")
        assert code == 0
        for reason in ("setWeight 20", "setWeight 50", "setWeight 80", "setWeight 100"):
            assert reason in out, out


FAILING = canary(
    "web-v2", "[{setWeight: 50}, {analysis: {}}, {setWeight: 100}]", extra=ANALYSIS.format(count=3)
)


async def test_a_canary_answering_10_percent_errors_is_rolled_back(tmp_path: Path) -> None:
    async with release_fleet(tmp_path, FAILING) as fleet:
        for name in ("web-v2-east", "web-v2-west"):
            fleet.backends[name].set_error_rate(0.1)
        verdicts: list[tuple[str, str]] = []
        async with fleet.load() as load:
            await fleet.act("shop/web-v2", "start")
            aborted = await fleet.until(
                "shop/web-v2",
                lambda s: s["phase"] == "Aborted",
                settled=False,
                verdicts=verdicts,
                timeout_s=30,
            )
        assert load.split.versions["v2"] > 0, load.split
        # failureLimit 1: the second failed measurement aborts: two analysis intervals.
        assert aborted["abort_reason"] == "analysis_failed", aborted
        tally = aborted["analysis"]
        assert (tally["successes"], tally["failures"], tally["inconclusive"]) == (0, 2, 0)
        assert verdicts == [("Fail", "success_rate_below_min")] * 2, verdicts
        assert aborted["canary_weight"] == 0  # no abort.rampSteps: back to stable at once

        await fleet.until("shop/web-v2", lambda s: s["phase"] == "Aborted")  # fleet applied it
        before = fleet.requests_to("web-v2")
        split = await fleet.split(500)
        assert split.versions == {"v1": 500}, split
        assert fleet.requests_to("web-v2") == before


BLUE_GREEN = """\
apiVersion: fleetgate.io/v1alpha1
kind: Release
metadata: {name: checkout-v2, namespace: shop}
spec:
  target: checkout
  stable: {backendRef: {name: web, port: 80}}
  canary: {backendRef: {name: web-v2, port: 80}}
  strategy:
    blueGreen:
      previewHeader: {headerName: x-preview, headerValue: {exact: "yes"}}
---
""" + canary(
    "labs-v2",
    "[{setHeaderRoute: {match: [{headerName: x-canary, headerValue: {exact: always}}]}}, "
    "{pause: {}}, {setMirror: {percent: 100}}, {pause: {}}]",
    target="labs",
)


async def test_blue_green_header_canary_and_mirror(tmp_path: Path) -> None:
    async with release_fleet(tmp_path, BLUE_GREEN) as fleet:
        # Blue-green: the preview header reaches green, everyone else stays on blue.
        await fleet.act("shop/checkout-v2", "start")
        await fleet.until("shop/checkout-v2", lambda s: s["pause_reason"] == "blue_green_preview")
        assert (await fleet.split(200, "bg.test")).versions == {"v1": 200}
        preview = await fleet.split(200, "bg.test", {"x-preview": "yes"})
        assert preview.versions == {"v2": 200}, preview
        # Promote switches everything at once ...
        await fleet.act("shop/checkout-v2", "promote")
        promoted = await fleet.until("shop/checkout-v2", lambda s: s["phase"] == "Completed")
        assert (await fleet.split(200, "bg.test")).versions == {"v2": 200}
        # ... and abort goes back to the warm blue side in one revision, without a ramp.
        aborted = await fleet.act("shop/checkout-v2", "abort")
        assert aborted["canary_weight"] == 0
        assert aborted["revision"] == promoted["revision"] + 1
        await fleet.until("shop/checkout-v2", lambda s: s["phase"] == "Aborted")
        assert (await fleet.split(200, "bg.test")).versions == {"v1": 200}

        # Header canary: only requests with the header reach the canary.
        await fleet.act("shop/labs-v2", "start")
        await fleet.until("shop/labs-v2", paused_at(0, 1))
        assert (await fleet.split(200, "hdr.test")).versions == {"v1": 200}
        pinned = await fleet.split(200, "hdr.test", {"x-canary": "always"})
        assert pinned.versions == {"v2": 200}, pinned
        # Mirror: every request is answered by stable and shadowed to the canary.
        await fleet.act("shop/labs-v2", "promote")
        await fleet.until("shop/labs-v2", paused_at(0, 3))
        before = fleet.requests_to("web-v2")
        assert (await fleet.split(200, "hdr.test")).versions == {"v1": 200}
        await eventually(lambda: fleet.requests_to("web-v2") >= before + 200, timeout_s=10)
        assert fleet.requests_to("web-v2") == before + 200


STICKY = canary(
    "web-v2",
    "[{setWeight: 10}, {pause: {}}, {setWeight: 30}, {pause: {}}, {setWeight: 60}, {pause: {}}, "
    "{setWeight: 90}, {pause: {}}]",
    sticky=True,
)
USERS = 300
COHORT_COOKIE = "fleetgate-cohort"


async def test_a_sticky_user_never_flips_while_the_weight_grows(tmp_path: Path) -> None:
    async with release_fleet(tmp_path, STICKY) as fleet:
        await fleet.act("shop/web-v2", "start")
        await fleet.until("shop/web-v2", paused_at(10, 1))
        cookies: list[str] = []
        seen: list[list[str]] = []  # per user: the version of each of their requests
        for user in range(USERS):  # first visit: the gateway gives each user a cohort cookie
            version, response = await fleet.one(user % 2, "shop.test")
            assert version is not None
            assert response is not None
            morsel = response.cookies.get(COHORT_COOKIE)
            assert morsel is not None, response.headers
            cookies.append(morsel.value)
            seen.append([version])
        for weight, step in ((10, 1), (30, 3), (60, 5), (90, 7)):
            if weight != 10:
                await fleet.act("shop/web-v2", "promote")
                await fleet.until("shop/web-v2", paused_at(weight, step))
            on_canary = 0
            for user, cookie in enumerate(cookies):
                headers = {"Cookie": f"{COHORT_COOKIE}={cookie}"}
                answers = [(await fleet.one(gw, "shop.test", headers))[0] for gw in (0, 1)]
                assert answers[0] == answers[1], (user, answers)  # both gateways agree
                assert answers[0] is not None
                seen[user].append(answers[0])
                on_canary += answers[0] == "v2"
            assert abs(100 * on_canary / USERS - weight) <= 10, (weight, on_canary)
        for user, versions in enumerate(seen):
            # v1 ... v1 v2 ... v2: a user moves to the canary at most once and never back
            moved = versions.index("v2") if "v2" in versions else len(versions)
            assert versions == ["v1"] * moved + ["v2"] * (len(versions) - moved), (user, versions)


KILL = canary("web-v2", "[{setWeight: 30}, {pause: {}}, {setWeight: 60}, {pause: {}}]")


async def test_killing_the_controller_mid_release_changes_no_weight(tmp_path: Path) -> None:
    async with release_fleet(tmp_path, KILL) as fleet:
        await fleet.act("shop/web-v2", "start")
        before = await fleet.until("shop/web-v2", paused_at(30, 1))
        tables = [(await fleet.gateway_status(i))["table"] for i in (0, 1)]
        assert tables[0]["checksum"] == tables[1]["checksum"]
        checksum = tables[0]["checksum"]
        _, history = await fleet.call("GET", "releases/shop/web-v2/history")
        await assert_share(fleet, 30)

        checksums: set[str] = set()
        watching = asyncio.Event()

        async def watch() -> None:  # what both gateways serve, all through the outage
            while not watching.is_set():
                for i in (0, 1):
                    checksums.add((await fleet.gateway_status(i))["table"]["checksum"])
                await asyncio.sleep(0.05)  # a sampling period, not a wait for a condition

        async with asyncio.TaskGroup() as tg:
            tg.create_task(watch())
            await fleet.kill_controller()
            await assert_share(fleet, 30)  # the gateways serve on without it
            await fleet.start_controller()
            after = await fleet.until(
                "shop/web-v2", lambda s: s["applied_revision"] > 0 and paused_at(30, 1)(s)
            )

            async def both_took_the_new_snapshot() -> bool:
                statuses = [(await fleet.gateway_status(i))["table"] for i in (0, 1)]
                return all(t["version"] > tables[0]["version"] for t in statuses)

            await eventually(both_took_the_new_snapshot, timeout_s=20, interval_s=0.05)
            watching.set()
        assert checksums == {checksum}  # not one table with another weight, at any moment
        assert after["revision"] == before["revision"]
        _, history_after = await fleet.call("GET", "releases/shop/web-v2/history")
        assert history_after == history  # no step repeated, no revision added
        await assert_share(fleet, 30)

        await fleet.act("shop/web-v2", "promote")  # the release goes on from where it was
        await fleet.until("shop/web-v2", paused_at(60, 3))
        await assert_share(fleet, 60)


TENANTS = canary("web-v2", "[{setWeight: 50}, {pause: {}}]") + canary(
    "web-v2", "[{setWeight: 50}, {pause: {}}]", namespace="payments"
)


async def test_a_developer_token_cannot_touch_another_namespace(tmp_path: Path) -> None:
    async with release_fleet(tmp_path, TENANTS, namespaces=("shop", "payments")) as fleet:
        listed = await fleet.call("GET", "releases", token="payments-dev")
        assert [r["release"] for r in listed[1]["releases"]] == ["payments/web-v2"]
        denied = [
            await fleet.call("GET", "releases/shop/web-v2", token="payments-dev"),
            await fleet.call("POST", "releases/shop/web-v2/start", token="payments-dev"),
            await fleet.call("POST", "releases/shop/web-v2/abort", token="payments-dev"),
            await fleet.call(
                "POST", "policies/shop/storefront/rollback", token="payments-dev", revision=1
            ),
        ]
        assert [(code, body["error"]) for code, body in denied] == [(403, "forbidden")] * 4
        code, _, err = await fleet.cli("release", "start", "shop/web-v2", token="payments-dev")
        assert code == 1
        assert "forbidden" in err
        assert (await fleet.status("shop/web-v2"))["started"] is False

        # Each developer drives the releases of their own namespace, as themselves.
        await fleet.act("payments/web-v2", "start", token="payments-dev")
        code, _, err = await fleet.cli("release", "start", "shop/web-v2", token="shop-dev")
        assert code == 0, err
        await fleet.until("shop/web-v2", paused_at(50, 1))
        _, history = await fleet.call("GET", "releases/shop/web-v2/history", token="shop-dev")
        assert {r["actor"] for r in history["revisions"]} == {"shop-ci"}
        _, history = await fleet.call("GET", "releases/payments/web-v2/history")
        assert {r["actor"] for r in history["revisions"]} == {"payments-ci"}


DEMO_API = re.compile(r"export FLEETGATE_SERVER=http://(\S+) FLEETGATE_TOKEN=(\S+)")


async def test_the_release_walkthrough_runs_on_fleetgate_demo(tmp_path: Path) -> None:
    """docs/release-walkthrough.md's commands, against `fleetgate demo --api` (one embedded
    gateway; the demo's own Release, with its one-time admin token)."""
    listen = f"127.0.0.1:{free_port()}"
    demo = FleetgateProcess(
        ["demo", "--listen", listen, "--admin", "127.0.0.1:0", "--api", "127.0.0.1:0",
         "--backend-ports", "any", "--log-level", "warning"],
        tmp_path / "demo.log",
    )  # fmt: skip
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        try:
            await demo.start(banner=DEMO_API)
            env = {"FLEETGATE_SERVER": f"http://{demo.listen}", "FLEETGATE_TOKEN": demo.admin}
            release = "shop/web-v2-rollout"

            async def fleetgate(*args: str) -> str:
                code, out, err = await run_cli(args, env)
                assert code == 0, (args, err)
                return out

            async def versions(count: int) -> Split:
                return await split_through(session, [listen], count, "shop.example.com")

            await fleetgate("release", "start", release)
            status = await fleetgate("release", "status", release)
            assert "setWeight 10" in status
            assert "10% canary" in status
            await fleetgate("release", "set-weight", release, "30")
            split = await versions(400)
            assert 15 <= split.share("v2") <= 45, split  # 30 %; loose: 400 requests, one gateway
            await fleetgate("release", "promote", release, "--full")
            watched = await fleetgate("release", "status", release, "--watch", "--interval", "0.2")
            assert "Completed" in watched
            assert (await versions(100)).versions == {"v2": 100}
            await fleetgate("release", "abort", release, "--now")  # the ramp's 20 s steps skipped
            assert (await versions(100)).versions == {"v1": 100}
            history = await fleetgate("history", release, "--release")
            for reason in (
                "setWeight 10",
                "weight 30 set by hand",
                "promoted fully",
                "abort",
            ):
                assert reason in history, history
        finally:
            await demo.close()
