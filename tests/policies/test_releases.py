"""The release state machine, Playbook-style: (event, now) → expected state and actions.

No loop, no clock, no mocks: time is `now`, the fleet is `applied`, metrics are observations.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from policies import release_state, releases
from policies.analysis import Observation, Sample
from policies.model import Analysis, BackendRef, HeaderRoute, Release, ServiceRef, Step, ValueKind
from policies.release_state import (
    Notify,
    PauseReason,
    Phase,
    Refused,
    ReleaseState,
    RunAnalysis,
    SetOverlay,
    Transition,
)

ALL = -1  # the whole fleet has applied the latest revision

STABLE = BackendRef(ServiceRef("shop", "web-v1", 80))
CANARY = BackendRef(ServiceRef("shop", "web-v2", 80))
ANALYSIS = Analysis(interval_s=30, count=3, failure_limit=1, min_requests=100)
HEALTHY = Observation(Sample(1000, 2), Sample(9000, 9))
ERRORS = Observation(Sample(1000, 100), Sample(9000, 9))  # 10 % errors
QUIET = Observation(Sample(20, 0), Sample(180, 0))  # too little traffic to judge
X_CANARY = HeaderRoute(header="x-canary", value="always")


def canary(*steps: Step, **fields: object) -> Release:
    spec = Release("shop", "web-v2", "web", STABLE, CANARY, steps=steps, analysis=ANALYSIS)
    return dataclasses.replace(spec, **fields)  # type: ignore[arg-type]


BLUE_GREEN = Release(
    "shop",
    "web-v2",
    "web",
    STABLE,
    CANARY,
    strategy="BlueGreen",
    preview_header=HeaderRoute(header="x-preview", value="1"),
    preview_hostname="preview.shop.example.com",
    abort_ramp_steps=(50, 10),  # ignored: blue-green returns at once
)


# ---------------------------------------------------------------------------------------------
# The Playbook


@dataclasses.dataclass(frozen=True)
class Tick:
    now: float
    applied: int = ALL
    observation: Observation | None = None


@dataclasses.dataclass(frozen=True)
class Op:
    name: str  # start, promote, promote_full, pause, resume, abort, retry, set_weight
    now: float
    weight: int = 0
    immediate: bool = False


@dataclasses.dataclass(frozen=True)
class Expect:
    phase: Phase
    step: int | None = None
    weight: int | None = None
    reason: str | None = None  # pause reason or abort reason
    actions: tuple[type, ...] | None = None
    refused: str | None = None


def _run(spec: Release, state: ReleaseState | None, event: Tick | Op) -> Transition | Refused:
    if isinstance(event, Tick):
        assert state is not None
        applied = state.revision if event.applied == ALL else event.applied
        return releases.advance(
            spec, state, now=event.now, applied_revision=applied, observation=event.observation
        )
    if event.name == "start":
        return releases.start(spec, now=event.now, actor="alice")
    assert state is not None
    if event.name == "abort":
        return releases.abort(spec, state, now=event.now, actor="alice", immediate=event.immediate)
    if event.name == "set_weight":
        return releases.set_weight(spec, state, weight=event.weight, now=event.now, actor="alice")
    action = getattr(releases, event.name)
    result: Transition | Refused = action(spec, state, now=event.now, actor="alice")
    return result


def play(spec: Release, script: list[tuple[Tick | Op, Expect]]) -> list[Transition]:
    """Run the script; check each expectation; return every transition for closer looks."""
    state: ReleaseState | None = None
    seen: list[Transition] = []
    for number, (event, expect) in enumerate(script, 1):
        where = f"line {number}: {event}"
        result = _run(spec, state, event)
        if isinstance(result, Refused):
            assert expect.refused == result.reason, f"{where}: refused {result}"
            assert result.message
            assert state is not None
        else:
            assert expect.refused is None, f"{where}: expected refusal {expect.refused}"
            seen.append(result)
            state = result.state
            if expect.actions is not None:
                kinds = tuple(type(a) for a in result.actions)
                assert kinds == expect.actions, f"{where}: actions {result.actions}"
        assert state is not None
        assert state.phase is expect.phase, f"{where}: {state}"
        if expect.step is not None:
            assert state.step_index == expect.step, f"{where}: {state}"
        if expect.weight is not None:
            assert state.canary_weight == expect.weight, f"{where}: {state}"
        if expect.reason is not None:
            assert expect.reason in (state.pause_reason, state.abort_reason), f"{where}: {state}"
    return seen


def overlays_of(transitions: list[Transition]) -> list[SetOverlay]:
    return [a for t in transitions for a in t.actions if isinstance(a, SetOverlay)]


P, R, C, A = Phase.PROGRESSING, Phase.PAUSED, Phase.COMPLETED, Phase.ABORTED
NOTIFY, OVERLAY, MEASURE = Notify, SetOverlay, RunAnalysis


# ---------------------------------------------------------------------------------------------
# Canary walks


def test_a_healthy_canary_walks_its_steps_and_completes() -> None:
    spec = canary(
        Step(set_weight=10),
        Step(analysis=True),
        Step(set_weight=50),
        Step(pause_s=60),
        Step(analysis=True),
    )
    seen = play(
        spec,
        [
            (Op("start", 0), Expect(P, step=0, weight=10, actions=(OVERLAY, NOTIFY))),
            (Tick(1, applied=0), Expect(P, step=0, weight=10, actions=())),
            (Tick(2), Expect(P, step=1, weight=10, actions=(MEASURE,))),
            (Tick(20, observation=HEALTHY), Expect(P, step=1, actions=())),  # window not over
            (Tick(32), Expect(P, step=1, actions=())),  # no measurement yet: wait for it
            (Tick(33, observation=HEALTHY), Expect(P, step=1, actions=(MEASURE,))),
            (Tick(63, observation=HEALTHY), Expect(P, step=1, actions=(MEASURE,))),
            (Tick(93, observation=HEALTHY), Expect(P, step=2, weight=50, actions=(OVERLAY,))),
            (Tick(95), Expect(R, step=3, weight=50, reason="pause_step", actions=(NOTIFY,))),
            (Tick(154), Expect(R, step=3, actions=())),
            (Tick(155), Expect(P, step=4, actions=(MEASURE, NOTIFY))),
            (Tick(185, observation=HEALTHY), Expect(P, step=4)),
            (Tick(215, observation=HEALTHY), Expect(P, step=4)),
            (Tick(245, observation=HEALTHY), Expect(C, step=5, weight=100)),
            (Tick(300), Expect(C, weight=100, actions=())),
        ],
    )
    assert [o.overlay.canary_weight for o in overlays_of(seen)] == [10, 50, 100]
    assert [o.revision.number for o in overlays_of(seen)] == [1, 2, 3]
    assert overlays_of(seen)[0].revision.actor == "alice"  # who started it
    assert overlays_of(seen)[1].revision.actor == "controller"
    assert overlays_of(seen)[1].revision.reason == "step 3/5: setWeight 50"
    assert seen[2].actions == (RunAnalysis("shop/web-v2", since=2, until=32),)
    assert seen[-2].state.tally.successes == 3
    assert isinstance(seen[-2].actions[-1], Notify)
    assert seen[-2].actions[-1].previous is Phase.PROGRESSING


def test_a_canary_with_ten_percent_errors_rolls_back_within_two_intervals() -> None:
    spec = canary(Step(set_weight=10), Step(analysis=True), Step(set_weight=50))
    seen = play(
        spec,
        [
            (Op("start", 0), Expect(P, weight=10)),
            (Tick(5), Expect(P, step=1, actions=(MEASURE,))),
            (Tick(35, observation=ERRORS), Expect(P, step=1, actions=(MEASURE,))),
            (
                Tick(65, observation=ERRORS),
                Expect(A, weight=0, reason="analysis_failed", actions=(OVERLAY, NOTIFY)),
            ),
            (Tick(95, observation=ERRORS), Expect(A, weight=0, actions=())),
        ],
    )
    aborted = seen[3]
    assert aborted.state.tally.failures == ANALYSIS.failure_limit + 1
    overlay = overlays_of(seen)[-1].overlay
    assert not overlay.active  # the route is served as written: canary gets nothing
    first_window, notify = seen[1].actions[0], aborted.actions[-1]
    assert isinstance(first_window, RunAnalysis)
    assert isinstance(notify, Notify)
    assert notify.at - first_window.since == 2 * ANALYSIS.interval_s
    assert notify.reason == "analysis_failed"
    assert "success rate 0.9000 is below 0.99" in notify.message


def test_one_bad_interval_within_the_failure_limit_still_passes() -> None:
    spec = canary(Step(set_weight=10), Step(analysis=True))
    play(
        spec,
        [
            (Op("start", 0), Expect(P)),
            (Tick(0), Expect(P, step=1)),
            (Tick(30, observation=HEALTHY), Expect(P, step=1)),
            (Tick(60, observation=ERRORS), Expect(P, step=1)),
            (Tick(90, observation=HEALTHY), Expect(C, weight=100)),
        ],
    )


def test_too_little_traffic_pauses_and_is_never_a_pass() -> None:
    spec = canary(Step(set_weight=1), Step(analysis=True), Step(set_weight=50))
    seen = play(
        spec,
        [
            (Op("start", 0), Expect(P)),
            (Tick(0), Expect(P, step=1)),
            (
                Tick(30, observation=QUIET),
                Expect(R, step=1, weight=1, reason="inconclusive_analysis", actions=(NOTIFY,)),
            ),
            (Tick(60, observation=HEALTHY), Expect(R, step=1, actions=())),  # not counted
            (Op("resume", 70), Expect(P, step=1, actions=(NOTIFY,))),
            (Tick(71), Expect(P, step=1, actions=(MEASURE,))),
            (Tick(101, observation=HEALTHY), Expect(P, step=1)),
            (Tick(131, observation=HEALTHY), Expect(P, step=1)),
            (Tick(161, observation=HEALTHY), Expect(P, step=2, weight=50)),
        ],
    )
    assert seen[2].state.tally.inconclusive == 1
    assert seen[2].state.tally.last is not None
    assert seen[2].state.tally.last.reason == "not_enough_traffic"


def test_promote_skips_an_inconclusive_analysis() -> None:
    spec = canary(Step(set_weight=1), Step(analysis=True), Step(set_weight=50))
    play(
        spec,
        [
            (Op("start", 0), Expect(P)),
            (Tick(0), Expect(P, step=1)),
            (Tick(30, observation=QUIET), Expect(R, reason="inconclusive_analysis")),
            (Op("promote", 31), Expect(P, step=2, weight=50, actions=(OVERLAY, NOTIFY))),
        ],
    )


def test_a_step_waits_for_every_gateway_before_its_timer_starts() -> None:
    spec = canary(Step(set_weight=20), Step(pause_s=60), Step(set_weight=40))
    seen = play(
        spec,
        [
            (Op("start", 0), Expect(P, step=0, weight=20)),
            (Tick(10, applied=0), Expect(P, step=0)),  # one gateway still on revision 0
            (Tick(30), Expect(R, step=1, reason="pause_step")),  # applied fleet-wide at 30
            (Tick(80), Expect(R, step=1)),  # 80 s after the change, 50 s after it was applied
            (Tick(90), Expect(P, step=2, weight=40, actions=(OVERLAY, NOTIFY))),
            (Tick(95, applied=1), Expect(P, step=2)),  # a stale confirmation is not enough
            (Tick(96, applied=2), Expect(C, weight=100)),
        ],
    )
    assert seen[1].state == seen[0].state  # nothing moves while a gateway is behind
    assert seen[2].state.step_applied_at == 30
    assert seen[2].state.message == "step 2: paused until 1970-01-01T00:01:30Z"


def test_an_analysis_window_starts_only_once_the_weight_is_applied() -> None:
    spec = canary(Step(set_weight=10), Step(analysis=True))
    seen = play(
        spec,
        [
            (Op("start", 0), Expect(P)),
            (Tick(40, applied=0, observation=ERRORS), Expect(P, step=0, actions=())),
            (Tick(41), Expect(P, step=1, actions=(MEASURE,))),
        ],
    )
    assert seen[-1].actions == (RunAnalysis("shop/web-v2", since=41, until=71),)


def test_header_route_and_mirror_steps_and_their_removal() -> None:
    spec = canary(
        Step(set_header_route=X_CANARY),
        Step(set_mirror_percent=20),
        Step(set_weight=10),
        Step(set_header_route=HeaderRoute()),  # an empty header route removes it
        Step(set_mirror_percent=0),
        Step(pause_s=math.inf),
    )
    seen = play(
        spec,
        [
            (Op("start", 0), Expect(P, step=0, weight=0)),
            (Tick(1), Expect(P, step=1)),
            (Tick(2), Expect(P, step=2)),
            (Tick(3), Expect(P, step=3)),
            (Tick(4), Expect(P, step=4)),
            (Tick(5), Expect(R, step=5, reason="pause_step")),
            (Tick(10_000), Expect(R, step=5)),  # until promoted
        ],
    )
    live = [(o.overlay.header_route, o.overlay.mirror_percent) for o in overlays_of(seen)]
    assert live == [(X_CANARY, 0), (X_CANARY, 20), (X_CANARY, 20), (None, 20), (None, 0)]
    assert seen[-2].state.message == "step 6: paused until promoted"
    steps = [n.state.message for n in seen if "setHeaderRoute" in n.state.message]
    assert steps == [
        "step 1/6: setHeaderRoute x-canary=always",
        "step 4/6: setHeaderRoute (removed)",
    ]
    regex = HeaderRoute(cookie="tier", value="beta.*", kind=ValueKind.REGEX)
    assert (
        releases.describe_step(Step(set_header_route=regex)) == "setHeaderRoute cookie tier~beta.*"
    )


def test_steps_that_change_nothing_complete_in_the_same_tick() -> None:
    spec = canary(Step(set_weight=10), Step(pause_s=0), Step(), Step(set_weight=10))
    seen = play(spec, [(Op("start", 0), Expect(P)), (Tick(1), Expect(C, weight=100))])
    assert [o.overlay.canary_weight for o in overlays_of(seen)] == [10, 100]
    assert overlays_of(seen)[-1].revision.reason == "all steps done"


def test_a_canary_without_steps_completes_at_once() -> None:
    seen = play(canary(), [(Op("start", 0), Expect(C, weight=100, actions=(OVERLAY, NOTIFY)))])
    notify = seen[0].actions[-1]
    assert notify == Notify(
        "shop/web-v2",
        Phase.COMPLETED,
        None,
        "completed",
        "completed (all steps done): canary serves all traffic",
        0,
    )


def test_an_analysis_step_without_analysis_waits_for_promote() -> None:
    spec = canary(Step(set_weight=10), Step(analysis=True), analysis=None)
    play(
        spec,
        [
            (Op("start", 0), Expect(P)),
            (Tick(1), Expect(R, step=1, reason="analysis_not_configured")),
            (Op("resume", 2), Expect(R, refused="use_promote")),
            (Op("promote", 3), Expect(C, weight=100)),
        ],
    )


# ---------------------------------------------------------------------------------------------
# Operator actions

PAUSING = canary(Step(set_weight=10), Step(pause_s=100), Step(set_weight=40), Step(analysis=True))


@pytest.mark.parametrize(
    ("spec", "script"),
    [
        pytest.param(
            PAUSING,
            [
                (Op("start", 0), Expect(P)),
                (Op("pause", 1), Expect(R, step=0, reason="operator_pause", actions=(NOTIFY,))),
                (Op("pause", 2), Expect(R, refused="already_paused")),
                (Tick(3), Expect(R, step=0, actions=())),  # the automation holds
                (Op("resume", 4), Expect(P, step=0, actions=(NOTIFY,))),
                (Op("resume", 5), Expect(P, refused="not_paused")),
                (Tick(6), Expect(R, step=1, reason="pause_step")),
            ],
            id="pause-and-resume",
        ),
        pytest.param(
            PAUSING,
            [
                (Op("start", 0), Expect(P)),
                (Tick(0), Expect(R, step=1, reason="pause_step")),
                (Op("resume", 1), Expect(R, refused="use_promote")),
                (Op("pause", 2), Expect(R, reason="operator_pause")),  # hold past the timer
                (Tick(150), Expect(R, step=1, reason="operator_pause")),
                (Op("resume", 151), Expect(R, step=1, reason="pause_step", actions=(NOTIFY,))),
                (Tick(152), Expect(P, step=2, weight=40)),  # its timer ran out at 100
            ],
            id="pause-during-a-timed-pause",
        ),
        pytest.param(
            PAUSING,
            [
                (Op("start", 0), Expect(P)),
                (Tick(0), Expect(R, step=1)),
                (Op("promote", 1), Expect(P, step=2, weight=40, actions=(OVERLAY, NOTIFY))),
                (Op("promote", 2), Expect(P, step=3, actions=())),
                (Op("promote", 3), Expect(C, weight=100)),
                (Op("promote", 4), Expect(C, refused="release_completed")),
                (Op("promote_full", 4), Expect(C, refused="release_completed")),
                (Op("pause", 4), Expect(C, refused="release_completed")),
                (Op("resume", 4), Expect(C, refused="not_paused")),
                (Op("retry", 4), Expect(C, refused="not_aborted")),
                (Op("set_weight", 4, weight=5), Expect(C, refused="release_completed")),
            ],
            id="promote-step-by-step",
        ),
        pytest.param(
            PAUSING,
            [
                (Op("start", 0), Expect(P)),
                (Op("promote_full", 1), Expect(C, weight=100, actions=(OVERLAY, NOTIFY))),
            ],
            id="promote-full",
        ),
        pytest.param(
            PAUSING,
            [
                (Op("start", 0), Expect(P, weight=10)),
                (Tick(1), Expect(R, step=1)),
                (Op("set_weight", 2, weight=101), Expect(R, refused="weight_out_of_range")),
                (Op("set_weight", 2, weight=-1), Expect(R, refused="weight_out_of_range")),
                (
                    Op("set_weight", 3, weight=25),
                    Expect(R, step=1, weight=25, reason="manual_weight", actions=(OVERLAY, NOTIFY)),
                ),
                (Tick(500), Expect(R, weight=25, reason="manual_weight", actions=())),
                (Op("resume", 501), Expect(R, step=1, weight=25, reason="pause_step")),
                (Tick(502), Expect(P, step=2, weight=40)),  # the pause step's timer ran out
            ],
            id="set-weight-by-hand",
        ),
        pytest.param(
            PAUSING,
            [
                (Op("start", 0), Expect(P, weight=10)),
                (Tick(1), Expect(R, step=1)),
                (Op("abort", 2), Expect(A, weight=0, reason="operator_abort")),
                (Op("abort", 3), Expect(A, refused="already_aborted")),
                (Op("promote", 4), Expect(A, refused="release_aborted")),
                (Op("pause", 4), Expect(A, refused="release_aborted")),
                (Tick(5), Expect(A, weight=0, actions=())),
                (Op("retry", 6), Expect(P, step=0, weight=10, actions=(OVERLAY, NOTIFY))),
                (Tick(7), Expect(R, step=1, reason="pause_step")),
            ],
            id="abort-and-retry",
        ),
        pytest.param(
            PAUSING,
            [
                (Op("start", 0), Expect(P)),
                (Op("promote_full", 1), Expect(C, weight=100)),
                (Op("abort", 2), Expect(A, weight=0, actions=(OVERLAY, NOTIFY))),
            ],
            id="abort-after-completion-returns-to-the-warm-stable",
        ),
    ],
)
def test_operator_actions(spec: Release, script: list[tuple[Tick | Op, Expect]]) -> None:
    play(spec, script)


def test_abort_ramps_down_through_the_ramp_weights() -> None:
    spec = canary(
        Step(set_weight=50),
        Step(pause_s=math.inf),
        abort_ramp_steps=(60, 30, 40, 20, 5),
        abort_ramp_interval_s=10,
    )
    seen = play(
        spec,
        [
            (Op("start", 0), Expect(P, weight=50)),
            (Tick(1), Expect(R, step=1)),
            (Op("abort", 2), Expect(A, weight=30, actions=(OVERLAY, NOTIFY))),
            (Tick(5, applied=1), Expect(A, weight=30, actions=())),
            (Tick(6), Expect(A, weight=30, actions=())),  # applied at 6
            (Tick(15), Expect(A, weight=30, actions=())),
            (Tick(16), Expect(A, weight=20, actions=(OVERLAY,))),
            (Tick(16), Expect(A, weight=20, actions=())),
            (Tick(26), Expect(A, weight=5)),
            (Op("abort", 27), Expect(A, refused="already_aborted")),
            (Op("abort", 27, immediate=True), Expect(A, weight=0, actions=(OVERLAY,))),
            (Op("abort", 28, immediate=True), Expect(A, refused="already_aborted")),
            (Tick(100), Expect(A, weight=0, actions=())),
        ],
    )
    assert seen[2].state.abort_ramp == (20, 5, 0)  # 60 and 40 would raise the weight: skipped
    assert [o.overlay.canary_weight for o in overlays_of(seen)] == [50, 30, 20, 5, 0]


def test_a_ramp_that_ends_at_zero_and_an_immediate_abort() -> None:
    spec = canary(Step(set_weight=50), abort_ramp_steps=(25, 0))
    play(
        spec,
        [
            (Op("start", 0), Expect(P, weight=50)),
            (Op("abort", 1), Expect(A, weight=25)),
            (Tick(2), Expect(A, weight=25)),
            (Tick(12), Expect(A, weight=0)),
            (Tick(30), Expect(A, weight=0, actions=())),
        ],
    )
    seen = play(
        spec,
        [
            (Op("start", 0), Expect(P, weight=50)),
            (Op("abort", 1, immediate=True), Expect(A, weight=0)),
        ],
    )
    assert seen[-1].state.abort_ramp == ()


# ---------------------------------------------------------------------------------------------
# Blue-green


def test_blue_green_preview_promote_and_instant_rollback() -> None:
    seen = play(
        BLUE_GREEN,
        [
            (Op("start", 0), Expect(R, weight=0, reason="blue_green_preview")),
            (Tick(1, applied=0), Expect(R, reason="blue_green_preview", actions=())),
            (Tick(2), Expect(R, reason="blue_green_preview", actions=())),
            (Op("pause", 3), Expect(R, refused="already_paused")),
            (Op("resume", 3), Expect(R, refused="use_promote")),
            (Op("set_weight", 3, weight=50), Expect(R, refused="blue_green_has_no_weights")),
            (Op("promote", 4), Expect(C, weight=100, actions=(OVERLAY, NOTIFY))),
            (Op("abort", 5), Expect(A, weight=0, actions=(OVERLAY, NOTIFY))),
            (Op("retry", 6), Expect(R, weight=0, reason="blue_green_preview")),
            (Op("abort", 7), Expect(A, weight=0, actions=(OVERLAY, NOTIFY))),  # preview off
        ],
    )
    preview, promoted, aborted, retried, aborted_again = overlays_of(seen)
    assert preview.overlay.preview_header == BLUE_GREEN.preview_header
    assert preview.overlay.preview_hostname == "preview.shop.example.com"
    assert preview.overlay.canary_weight == 0
    assert promoted.overlay.canary_weight == 100
    assert promoted.overlay.preview_header is None
    assert aborted.overlay.canary_weight == 0  # the ramp does not apply to blue-green
    assert not aborted.overlay.active
    assert retried.overlay.preview_header is not None
    assert aborted_again.overlay.preview_hostname is None
    assert [o.revision.number for o in overlays_of(seen)] == [1, 2, 3, 4, 5]


def test_the_overlay_names_the_release_and_its_route() -> None:
    spec = canary(Step(set_weight=10), sticky=True)
    result = releases.start(spec, now=0, actor="alice")
    overlay = release_state.overlay_for(spec, result.state)
    assert (overlay.release, overlay.route, overlay.revision) == ("shop/web-v2", "shop/web", 1)
    assert (overlay.stable, overlay.canary, overlay.sticky) == (STABLE, CANARY, True)


def test_pause_reasons_resumable_by_resume() -> None:
    assert {
        PauseReason.OPERATOR,
        PauseReason.MANUAL_WEIGHT,
        PauseReason.INCONCLUSIVE,
    } == release_state.RESUMABLE
