"""Active health checks: first probe decides, then rise/fall thresholds. Pure."""

from __future__ import annotations

import pytest

from policies import health
from policies.health import UNPROBED, HealthState, ProbeResult
from policies.model import HealthCheck

CHECK = HealthCheck()  # rise 2, fall 3, expects 200, 5 s interval, 10 % jitter
P, F, R = ProbeResult.PASSED, ProbeResult.FAILED, ProbeResult.REJECTED


def run(state: HealthState, results: list[ProbeResult]) -> list[bool]:
    trail = []
    for result in results:
        state, _ = health.observe(CHECK, state, result)
        trail.append(state.healthy)
    return trail


@pytest.mark.parametrize(
    ("status", "result"),
    [
        pytest.param(200, P, id="expected"),
        pytest.param(503, R, id="draining"),
        pytest.param(204, R, id="not-in-the-set"),
        pytest.param(None, F, id="no-answer"),
    ],
)
def test_classify(status: int | None, result: ProbeResult) -> None:
    assert health.classify(CHECK, status) is result


def test_expected_statuses_replace_200() -> None:
    check = HealthCheck(expected_statuses=(200, 204))
    assert health.classify(check, 204) is P


@pytest.mark.parametrize(
    ("start", "results", "trail"),
    [
        pytest.param(UNPROBED, [P], [True], id="first-success-is-enough"),
        pytest.param(UNPROBED, [F, P, P], [False, False, True], id="then-rise-2"),
        pytest.param(UNPROBED, [P, F, F, F], [True, True, True, False], id="fall-3"),
        pytest.param(UNPROBED, [P, F, F, P, F, F], [True] * 6, id="a-pass-resets-the-fall"),
        pytest.param(UNPROBED, [P, R], [True, False], id="rejected-is-out-at-once"),
        pytest.param(UNPROBED, [P, F, R, P, P], [True, True, False, False, True], id="mixed"),
        pytest.param(HealthState(healthy=True), [F], [False], id="assumed-healthy-first-fails"),
        pytest.param(HealthState(healthy=True), [P], [True], id="assumed-healthy-confirmed"),
        pytest.param(UNPROBED, [F, F, F, F, P, P], [False] * 5 + [True], id="counters-cap"),
    ],
)
def test_rise_and_fall(start: HealthState, results: list[ProbeResult], trail: list[bool]) -> None:
    assert run(start, results) == trail


def test_changed_flag_marks_transitions_only() -> None:
    state, changed = health.observe(CHECK, UNPROBED, P)
    assert changed
    state, changed = health.observe(CHECK, state, P)
    assert not changed
    state, changed = health.observe(CHECK, state, R)
    assert changed
    assert state == HealthState(healthy=False, probed=True, successes=0, failures=1)


def test_counters_stay_bounded() -> None:
    state = UNPROBED
    for _ in range(50):
        state, _ = health.observe(CHECK, state, F)
    assert state.failures == CHECK.unhealthy_threshold


@pytest.mark.parametrize(("roll", "delay"), [(0.0, 5.0), (0.5, 5.25), (0.999, 5.4995)])
def test_probe_delay_adds_up_to_the_jitter(roll: float, delay: float) -> None:
    assert health.probe_delay_s(CHECK, roll) == pytest.approx(delay)


@pytest.mark.parametrize(
    ("unhealthy_interval_s", "healthy", "delay"),
    [
        pytest.param(None, False, 5.0, id="out-without-the-option-waits-the-interval"),
        pytest.param(1.0, False, 1.0, id="out-waits-the-unhealthy-interval"),
        pytest.param(30.0, False, 30.0, id="longer-is-allowed"),
        pytest.param(1.0, True, 5.0, id="in-waits-the-interval"),
    ],
)
def test_unhealthy_endpoints_wait_the_unhealthy_interval(
    unhealthy_interval_s: float | None, healthy: bool, delay: float
) -> None:
    check = HealthCheck(unhealthy_interval_s=unhealthy_interval_s)
    assert health.probe_delay_s(check, 0.0, healthy=healthy) == pytest.approx(delay)
