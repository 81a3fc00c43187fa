"""controller.health's state machine: down after N failures, withdrawn after the grace. Pure."""

from __future__ import annotations

import pytest

from controller.health import ClusterHealth, HealthSettings, observe

SETTINGS = HealthSettings(interval_s=1.0, failure_threshold=3, success_threshold=2, grace_s=10.0)


def run(outcomes: str, *, start: ClusterHealth | None = None) -> ClusterHealth:
    """Feed probes one second apart: "+" a good one, "-" a failed one."""
    state = start or ClusterHealth()
    for second, outcome in enumerate(outcomes):
        state = observe(state, ok=outcome == "+", now=float(second), settings=SETTINGS)
    return state


@pytest.mark.parametrize(
    ("outcomes", "up"),
    [
        pytest.param("", True, id="trusted-until-probed"),
        pytest.param("--", True, id="below-threshold"),
        pytest.param("---", False, id="threshold-reached"),
        pytest.param("--+--", True, id="failures-must-be-consecutive"),
        pytest.param("---+", False, id="one-success-is-not-enough"),
        pytest.param("---++", True, id="back-after-two-successes"),
        pytest.param("---+-+", False, id="successes-must-be-consecutive"),
    ],
)
def test_up_and_down(outcomes: str, up: bool) -> None:
    assert run(outcomes).up is up


def test_withdrawn_only_after_the_grace_period() -> None:
    state = run("---")  # down at t=2
    assert state.down_since == 2.0
    assert not state.withdrawn(11.9, SETTINGS)
    assert state.withdrawn(12.0, SETTINGS)
    more = observe(state, ok=False, now=20.0, settings=SETTINGS)
    assert more.down_since == 2.0  # further failures do not restart the grace
    recovered = run("++", start=more)
    assert recovered.up
    assert not recovered.withdrawn(100.0, SETTINGS)
