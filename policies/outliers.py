"""Passive outlier detection: eject an endpoint after consecutive gateway errors. Pure.

Envoy's consecutive-error detector (outlier.rst, `outlier_detection_impl.cc`) as a state machine
per endpoint, driven by the gateway:

* `record` after every attempt. The caller classifies: an error is a 5xx answer or a failure
  of our own making (connect failure, reset, timeout); anything else is a success. Reaching
  `consecutive_errors` ejects the endpoint inline, for `base * multiplier` seconds capped at
  `max(max_ejection_s, base)`, where the multiplier grows by one per ejection.
* Never more than `max_ejection_percent` of a cluster's endpoints are ejected, but the first
  ejection is always allowed, however small the cluster (Envoy: "will eject at least one host
  regardless of the value").
* An ejection ends when `now` reaches `ejected_until` (`is_ejected` is time-based, so no sweep
  is needed for that) or when an active probe passes (`probe_passed`, Envoy's
  `successful_active_health_check_uneject_host`, on by default).
* `sweep` once per `interval_s`: it closes ended ejections (to report them) and decays the
  multiplier by one for each interval an endpoint spends in rotation.

Ejected endpoints still serve in panic (`policies.balancing`); errors seen meanwhile are not
counted, so panic traffic never stretches an ejection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from policies.model import OutlierDetection


@dataclasses.dataclass(frozen=True, slots=True)
class OutlierState:
    """One endpoint's detector state. A new endpoint starts at `OutlierState()`."""

    consecutive_errors: int = 0
    multiplier: int = 0  # Envoy's eject-time backoff: +1 per ejection, -1 per clean interval
    ejected_until: float | None = None  # `now` when the current ejection ends; None: in rotation
    ejections: int = 0  # times ejected since the endpoint appeared (for metrics)

    def is_ejected(self, now: float) -> bool:
        return self.ejected_until is not None and now < self.ejected_until


def count_ejected(states: Iterable[OutlierState], now: float) -> int:
    """How many of a cluster's endpoints are ejected at `now` (the `ejected` input of `record`)."""
    return sum(1 for state in states if state.is_ejected(now))


def ejection_s(config: OutlierDetection, multiplier: int) -> float:
    """How long an ejection with this multiplier lasts."""
    return min(config.base_ejection_s * multiplier, _longest_s(config))


def _longest_s(config: OutlierDetection) -> float:
    # Envoy: max_ejection_time defaults to 300 s "or base_ejection_time if larger".
    return max(config.max_ejection_s, config.base_ejection_s)


def may_eject(config: OutlierDetection, *, ejected: int, total: int) -> bool:
    """Envoy's cap: `100 * (ejected + 1) / total <= max_ejection_percent`, or none ejected yet."""
    return ejected == 0 or 100.0 * (ejected + 1) / total <= config.max_ejection_percent


def record(
    config: OutlierDetection,
    state: OutlierState,
    *,
    error: bool,
    now: float,
    ejected: int,
    total: int,
) -> tuple[OutlierState, bool]:
    """Account one attempt's outcome; the flag says whether this call ejected the endpoint.

    `ejected` and `total` count the endpoints of the endpoint's cluster (see `count_ejected`).
    """
    if not error:
        if state.consecutive_errors == 0:
            return state, False
        return dataclasses.replace(state, consecutive_errors=0), False
    if state.is_ejected(now):
        return state, False
    errors = state.consecutive_errors + 1
    if errors < config.consecutive_errors:
        return dataclasses.replace(state, consecutive_errors=errors), False
    # The counter restarts at the threshold whether or not the cap lets the ejection happen, so
    # a capped endpoint needs a fresh run of errors (Envoy resets it in both cases).
    if not may_eject(config, ejected=ejected, total=total):
        return dataclasses.replace(state, consecutive_errors=0), False
    multiplier = state.multiplier
    if config.base_ejection_s * multiplier < _longest_s(config) + config.base_ejection_s:
        multiplier += 1
    ejected_state = OutlierState(
        consecutive_errors=0,
        multiplier=multiplier,
        ejected_until=now + ejection_s(config, multiplier),
        ejections=state.ejections + 1,
    )
    return ejected_state, True


def sweep(state: OutlierState, now: float) -> tuple[OutlierState, bool]:
    """The per-interval pass; the flag says an ejection ended (by time) since the last sweep.

    An endpoint in rotation at the sweep has its multiplier decayed by one, as in Envoy, where
    the same pass that unejects a host does not decay it.
    """
    if state.ejected_until is not None:
        if state.is_ejected(now):
            return state, False
        return dataclasses.replace(state, ejected_until=None, consecutive_errors=0), True
    if state.multiplier == 0:
        return state, False
    return dataclasses.replace(state, multiplier=state.multiplier - 1), False


def probe_passed(state: OutlierState) -> tuple[OutlierState, bool]:
    """A passing active health check ends the ejection and clears the error count.

    The flag says an ejection was open (even one already over by time but not yet swept).
    """
    if state.ejected_until is None:
        if state.consecutive_errors == 0:
            return state, False
        return dataclasses.replace(state, consecutive_errors=0), False
    return dataclasses.replace(state, ejected_until=None, consecutive_errors=0), True
