"""Passive outlier detection: Envoy's consecutive-error ejection, cap and back-off. Pure."""

from __future__ import annotations

import pytest

from policies import outliers
from policies.model import OutlierDetection
from policies.outliers import OutlierState

CONFIG = OutlierDetection()  # 5 errors, 10 s interval, 30 s base, 300 s max, 10 %


def fail(
    state: OutlierState,
    times: int,
    *,
    now: float = 0.0,
    ejected: int = 0,
    total: int = 10,
    config: OutlierDetection = CONFIG,
) -> tuple[OutlierState, list[bool]]:
    flags = []
    for _ in range(times):
        state, flag = outliers.record(
            config, state, error=True, now=now, ejected=ejected, total=total
        )
        flags.append(flag)
    return state, flags


def test_fifth_consecutive_error_ejects_for_the_base_time() -> None:
    state, flags = fail(OutlierState(), 5, now=100.0)
    assert flags == [False, False, False, False, True]
    assert state == OutlierState(
        consecutive_errors=0, multiplier=1, ejected_until=130.0, ejections=1
    )
    assert state.is_ejected(129.999)
    assert not state.is_ejected(130.0)  # ends at the time, without waiting for a sweep


def test_a_success_resets_the_run() -> None:
    state, _ = fail(OutlierState(), 4)
    state, flag = outliers.record(CONFIG, state, error=False, now=0.0, ejected=0, total=10)
    assert (state.consecutive_errors, flag) == (0, False)
    same, _ = outliers.record(CONFIG, state, error=False, now=0.0, ejected=0, total=10)
    assert same is state
    state, flags = fail(state, 4)
    assert not any(flags)


def test_errors_while_ejected_do_not_count() -> None:
    state, _ = fail(OutlierState(), 5, now=0.0)
    again, flags = fail(state, 10, now=10.0)  # panic traffic to the ejected endpoint
    assert again == state
    assert not any(flags)


@pytest.mark.parametrize(
    ("ejected", "total", "allowed"),
    [
        pytest.param(0, 10, True, id="first-of-10"),
        pytest.param(1, 10, False, id="second-of-10-is-20pct"),
        pytest.param(1, 20, True, id="second-of-20-is-10pct"),
        pytest.param(2, 20, False, id="third-of-20"),
        pytest.param(0, 1, True, id="always-at-least-one"),
        pytest.param(0, 9, True, id="first-of-9-despite-11pct"),
    ],
)
def test_ejection_cap(ejected: int, total: int, allowed: bool) -> None:
    assert outliers.may_eject(CONFIG, ejected=ejected, total=total) is allowed
    state, flags = fail(OutlierState(), 5, ejected=ejected, total=total)
    assert flags[-1] is allowed
    assert state.consecutive_errors == 0  # the run restarts either way, as in Envoy


def test_ejection_time_grows_caps_and_decays() -> None:
    # Envoy OutlierDetectorImplTest.EjectTimeBackoff, with our defaults: 30, 60, 90 ... 300 s.
    state = OutlierState()
    now = 0.0
    durations = []
    for _ in range(12):
        state, _ = fail(state, 5, now=now)
        assert state.ejected_until is not None
        durations.append(state.ejected_until - now)
        now = state.ejected_until
        state, ended = outliers.sweep(state, now)
        assert ended
    assert durations == [30.0 * n for n in range(1, 11)] + [300.0, 300.0]
    assert state.multiplier == 11  # stops growing once base * multiplier >= max + base
    # Each sweep in rotation takes one off; the next ejection is shorter again.
    for _ in range(9):
        state, ended = outliers.sweep(state, now)
        assert not ended
    assert state.multiplier == 2
    state, _ = fail(state, 5, now=now)
    assert state.ejected_until == now + 90.0
    for _ in range(5):
        state, _ = outliers.sweep(state, now + 1000.0)
    assert state.multiplier == 0
    unchanged, _ = outliers.sweep(state, now + 2000.0)
    assert unchanged is state


def test_sweep_leaves_a_running_ejection_alone() -> None:
    state, _ = fail(OutlierState(), 5, now=0.0)
    assert outliers.sweep(state, 10.0) == (state, False)


def test_base_longer_than_max_is_the_cap() -> None:
    config = OutlierDetection(base_ejection_s=600.0, max_ejection_s=300.0)
    assert outliers.ejection_s(config, 1) == 600.0
    assert outliers.ejection_s(config, 3) == 600.0


def test_passing_probe_unejects_and_clears() -> None:
    state, _ = fail(OutlierState(), 5, now=0.0)
    state, unejected = outliers.probe_passed(state)
    assert unejected
    assert (state.ejected_until, state.consecutive_errors, state.multiplier) == (None, 0, 1)
    assert outliers.probe_passed(state) == (state, False)
    counting, _ = fail(state, 2)
    cleared, unejected = outliers.probe_passed(counting)
    assert (cleared.consecutive_errors, unejected) == (0, False)


def test_count_ejected() -> None:
    ejected, _ = fail(OutlierState(), 5, now=0.0)
    states = [ejected, OutlierState(), ejected]
    assert outliers.count_ejected(states, 10.0) == 2
    assert outliers.count_ejected(states, 30.0) == 0
