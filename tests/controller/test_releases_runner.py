"""The release runner against a real Publisher, Reconciler and polling gateways on loopback."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from controller.notify import NotifySettings
from controller.observations import ObservationSettings
from controller.releases import ReleaseRunner
from policies.release_state import PauseReason, Phase, Refused, Transition
from tests.conftest import eventually
from tests.controller.release_rig import (
    CLUSTERS,
    canary_weight,
    fast_settings,
    fleet,
    load,
    release_yaml,
    ticks_pass,
)

CANARY = "shop/web-v2:80"
STABLE = "shop/web:80"


def paused_at(runner: ReleaseRunner, step: int) -> bool:
    state = runner.state("shop/web-v2")
    return state is not None and state.phase is Phase.PAUSED and state.step_index == step


async def act(runner: ReleaseRunner, action: str, actor: str = "alice", **kw: object) -> Transition:
    result = await runner.act("shop/web-v2", action, actor=actor, **kw)  # type: ignore[arg-type]
    assert isinstance(result, Transition), result
    return result


async def test_a_healthy_canary_advances_only_when_every_gateway_applied_its_step() -> None:
    policies = load(CLUSTERS, release_yaml("[{setWeight: 20}, {setWeight: 50}, {pause: {}}]"))
    async with fleet(policies, fast_settings()) as rig:
        runner, (fast, slow) = rig.runner, rig.gateways
        await eventually(lambda: fast.applied > 0 and slow.applied > 0)
        slow.gate.clear()  # the slow gateway receives snapshots but does not apply them yet

        await act(runner, "start")
        await eventually(lambda: fast.applied > 0 and fast.weight() == 20)
        await eventually(lambda: slow.received == fast.applied)
        await ticks_pass(runner)
        state = runner.state("shop/web-v2")
        assert state is not None
        assert (state.step_index, state.canary_weight) == (0, 20)  # waiting for the slow one
        assert rig.live_weight() == 20

        slow.gate.set()
        await eventually(lambda: slow.weight() == 50 and fast.weight() == 50)
        await eventually(lambda: paused_at(runner, 2))
        state = runner.state("shop/web-v2")
        assert state is not None
        assert state.pause_reason is PauseReason.PAUSE_STEP

        await act(runner, "promote", actor="bob")
        await eventually(lambda: fast.weight() == 100 and slow.weight() == 100)
        state = runner.state("shop/web-v2")
        assert state is not None
        assert state.phase is Phase.COMPLETED

        history = runner.history("shop/web-v2").revisions
        assert [r.content.canary_weight for r in history] == [20, 50, 100]
        assert [r.actor for r in history] == ["alice", "controller", "bob"]
        # A gateway reports what it applied on its next poll, so the registry may lag a moment.
        await eventually(lambda: runner.view("shop/web-v2")["applied_revision"] == 3)
        view = runner.view("shop/web-v2")
        assert view["rollout"]["pending"] == []
        assert sorted(g["id"] for g in view["gateways"]) == ["gw-0", "gw-1"]


def metrics_app(rates: dict[str, tuple[int, int]]) -> web.Application:
    """Gateway /metrics whose counters grow by (requests, 5xx) per backend on every scrape."""
    scrapes = itertools.count(1)

    async def metrics(request: web.Request) -> web.Response:
        n = next(scrapes)
        lines = [
            "# TYPE fleetgate_backend_requests_total counter",
            "# TYPE fleetgate_backend_request_duration_seconds histogram",
        ]
        for backend, (requests, errors) in rates.items():
            ok, bad = n * (requests - errors), n * errors
            for code_class, value in (("2xx", ok), ("5xx", bad)):
                lines.append(
                    f'fleetgate_backend_requests_total{{backend="{backend}",cluster="east",'
                    f'code_class="{code_class}"}} {value}'
                )
            for le, share in (("0.05", 0.9), ("0.25", 1.0), ("+Inf", 1.0)):
                lines.append(
                    f'fleetgate_backend_request_duration_seconds_bucket{{backend="{backend}",'
                    f'cluster="east",le="{le}"}} {n * requests * share:g}'
                )
        return web.Response(text="\n".join(lines) + "\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@pytest.fixture
async def metrics_url() -> AsyncIterator[str]:
    app = metrics_app({CANARY: (100, 10), STABLE: (400, 0)})
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/metrics"
    await runner.cleanup()


ANALYSIS = """
  analysis:
    interval: 100ms
    count: 3
    failureLimit: 1
    minRequests: 50
    successRate: {min: 0.99}
"""


async def test_a_failing_analysis_rolls_back_and_the_fleet_returns_to_stable(
    metrics_url: str,
) -> None:
    policies = load(
        CLUSTERS,
        release_yaml("[{setWeight: 30}, {analysis: {}}, {setWeight: 60}]", analysis=ANALYSIS),
    )
    settings = fast_settings(observations=ObservationSettings(metrics_urls=(metrics_url,)))
    async with fleet(policies, settings) as rig:
        runner = rig.runner
        await act(runner, "start")
        await eventually(lambda: all(g.applied and g.weight() == 30 for g in rig.gateways))

        def aborted() -> bool:
            state = runner.state("shop/web-v2")
            return state is not None and state.phase is Phase.ABORTED

        await eventually(aborted)
        state = runner.state("shop/web-v2")
        assert state is not None
        assert state.abort_reason == "analysis_failed"
        assert state.tally.failures == 2  # failureLimit 1: the second failed interval aborts
        assert state.tally.last is not None
        assert state.tally.last.reason == "success_rate_below_min"
        assert state.tally.last.canary_success_rate == pytest.approx(0.9)
        assert state.step_index == 1  # it never reached setWeight 60
        await eventually(lambda: all(g.weight() == 0 for g in rig.gateways))
        for gateway in rig.gateways:
            assert gateway.table is not None
            entry = gateway.table.lookup("shop.example")
            assert entry is not None
            assert {b.service.name for b in entry.rules[0].backends} == {"web"}
        reasons = [r.reason for r in runner.history("shop/web-v2").revisions]
        assert reasons[-1] == "abort (analysis_failed)"
        events = runner.view("shop/web-v2")["events"]
        assert events[-1]["actor"] == "controller"
        assert events[-1]["message"].startswith("analysis failed: canary success rate 0.9000")


async def test_a_restarted_runner_resumes_at_the_same_step_without_moving_any_weight(
    tmp_path: Path,
) -> None:
    state_file = tmp_path / "state" / "releases.json"
    policies = load(
        CLUSTERS, release_yaml("[{setWeight: 25}, {pause: {}}, {setWeight: 75}, {pause: {}}]")
    )
    async with fleet(policies, fast_settings(state_file)) as rig:
        runner = rig.runner
        await act(runner, "start")
        await eventually(lambda: paused_at(runner, 1))
        await act(runner, "set_weight", weight=35)
        await eventually(lambda: all(g.applied and g.weight() == 35 for g in rig.gateways))
        await ticks_pass(runner)
        before = runner.state("shop/web-v2")
        assert before is not None
        assert before.pause_reason is PauseReason.MANUAL_WEIGHT
        assert before.step_applied_at is not None
    assert state_file.exists()

    published: list[int] = []
    async with fleet(policies, fast_settings(state_file), gateways=0) as rig:
        runner = rig.runner
        rig.publisher.attach("recorder", None, lambda table: published.append(canary_weight(table)))
        await runner.wait_ready()
        assert runner.state("shop/web-v2") == before
        for gateway_id in ("gw-a", "gw-b"):
            rig.add_gateway(gateway_id)
        await eventually(lambda: all(g.applied and g.weight() == 35 for g in rig.gateways))
        await ticks_pass(runner)
        assert runner.state("shop/web-v2") == before  # nothing moved on its own
        assert published
        assert set(published) == {35}
        weights = [r.content.canary_weight for r in runner.history("shop/web-v2").revisions]
        assert weights == [25, 35]

        await act(runner, "resume")  # back to the pause step, which waits for promote
        await act(runner, "promote")
        await eventually(lambda: all(g.weight() == 75 for g in rig.gateways))
        await eventually(lambda: paused_at(runner, 3))


async def test_operator_actions_that_do_not_apply_are_refused_with_a_reason() -> None:
    policies = load(CLUSTERS, release_yaml("[{setWeight: 10}]"))
    async with fleet(policies, fast_settings(), gateways=1) as rig:
        runner = rig.runner
        result = await runner.act("shop/web-v2", "resume", actor="alice")
        assert isinstance(result, Refused)
        assert result.reason == "not_started"
        await act(runner, "start")
        again = await runner.act("shop/web-v2", "start", actor="alice")
        assert isinstance(again, Refused)
        assert again.reason == "already_started"
        retry = await runner.act("shop/web-v2", "retry", actor="alice")
        assert isinstance(retry, Refused)
        assert retry.reason == "not_aborted"


@pytest.fixture
async def webhook() -> AsyncIterator[tuple[str, list[dict[str, object]], asyncio.Event]]:
    """A webhook receiver; requests to /slow hang until the returned event is set."""
    received: list[dict[str, object]] = []
    release = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}", received, release
    release.set()
    await runner.cleanup()


async def test_every_phase_change_is_posted_to_the_webhook(
    webhook: tuple[str, list[dict[str, object]], asyncio.Event],
) -> None:
    url, received, _ = webhook
    policies = load(CLUSTERS, release_yaml("[{setWeight: 10}, {pause: {}}]"))
    settings = fast_settings(notify=NotifySettings(url=url + "/hook", timeout_s=2.0))
    async with fleet(policies, settings, gateways=1) as rig:
        await act(rig.runner, "start")
        await eventually(lambda: paused_at(rig.runner, 1))
        await act(rig.runner, "abort", actor="carol")
        await eventually(lambda: len(received) == 3)
    assert [(m["phase"], m["previous"], m["reason"]) for m in received] == [
        ("Progressing", None, "progressing"),
        ("Paused", "Progressing", "pause_step"),
        ("Aborted", "Paused", "operator_abort"),
    ]
    assert received[2]["release"] == "shop/web-v2"
    assert received[2]["message"] == "aborted by carol"


async def test_a_hanging_webhook_never_holds_up_the_release(
    webhook: tuple[str, list[dict[str, object]], asyncio.Event],
) -> None:
    url, _, _ = webhook
    policies = load(CLUSTERS, release_yaml("[{setWeight: 10}, {setWeight: 30}, {setWeight: 60}]"))
    settings = fast_settings(notify=NotifySettings(url=url + "/slow", timeout_s=0.2))
    async with fleet(policies, settings, gateways=1) as rig:
        await act(rig.runner, "start")
        await eventually(lambda: rig.runner.view("shop/web-v2")["phase"] == "Completed")
        await eventually(lambda: rig.gateways[0].weight() == 100)
        await eventually(lambda: rig.runner.notifier.failed >= 1)


async def test_removing_the_release_document_serves_the_route_as_written() -> None:
    release = release_yaml("[{setWeight: 40}, {pause: {}}]")
    async with fleet(load(CLUSTERS, release), fast_settings(auto_start=True)) as rig:
        await eventually(lambda: all(g.applied and g.weight() == 40 for g in rig.gateways))
        assert rig.runner.history("shop/web-v2").revisions[0].actor == "controller"
        rig.runner.update_policies(load(CLUSTERS))
        await eventually(lambda: all(g.weight() == 0 for g in rig.gateways))
        assert rig.runner.release_ids() == ()
        assert rig.runner.state("shop/web-v2") is None
