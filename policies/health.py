"""Active health checking: probe outcomes → healthy or not, with rise/fall thresholds. Pure.

The gateway probes each endpoint (`model.HealthCheck`) and feeds every outcome to `observe`:

* The first outcome after an endpoint appears decides alone: one success marks it healthy at
  once, one failure unhealthy (Envoy: "at startup one successful check marks a host healthy").
  A new endpoint starts `UNPROBED` (not healthy, so it takes traffic only in panic) unless the
  gateway chooses `HealthState(healthy=True)` to trust EndpointSlice readiness until the first
  probe.
* Afterwards `healthy_threshold` consecutive passes bring an endpoint in and
  `unhealthy_threshold` consecutive failures (no answer: timeout, refused, reset) take it out.
* An answer whose status is outside `expected_statuses` is `REJECTED`: the endpoint is out at
  once, bypassing the threshold, as in Envoy. That is what drains an upstream that answers 503
  on its health path before its listener closes; an `x-…-immediate-health-check-fail` style
  response header on live traffic can be fed in as `REJECTED` too.

`probe_delay_s` spaces probes with jitter so that gateways started together do not probe in step,
and at `unhealthy_interval_s` for an endpoint that is out.
"""

from __future__ import annotations

import dataclasses
import enum

from policies.model import HealthCheck


class ProbeResult(enum.Enum):
    PASSED = "passed"  # answered with an expected status
    FAILED = "failed"  # no answer: timeout, connect failure, reset
    REJECTED = "rejected"  # answered with a status outside `expected_statuses`


def classify(check: HealthCheck, status: int | None) -> ProbeResult:
    """A probe's outcome from its status code, or None when no response arrived."""
    if status is None:
        return ProbeResult.FAILED
    return ProbeResult.PASSED if status in check.expected_statuses else ProbeResult.REJECTED


@dataclasses.dataclass(frozen=True, slots=True)
class HealthState:
    """One endpoint's active-check state. Counters stop at their threshold."""

    healthy: bool = False
    probed: bool = False  # an outcome has been observed since the endpoint appeared
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive


UNPROBED = HealthState()


def observe(
    check: HealthCheck, state: HealthState, result: ProbeResult
) -> tuple[HealthState, bool]:
    """Account one probe outcome; the flag says `healthy` changed."""
    if result is ProbeResult.PASSED:
        successes = min(state.successes + 1, check.healthy_threshold)
        healthy = state.healthy or not state.probed or successes >= check.healthy_threshold
        new = HealthState(healthy=healthy, probed=True, successes=successes, failures=0)
    else:
        failures = min(state.failures + 1, check.unhealthy_threshold)
        healthy = (
            result is ProbeResult.FAILED
            and state.probed
            and state.healthy
            and failures < check.unhealthy_threshold
        )
        new = HealthState(healthy=healthy, probed=True, successes=0, failures=failures)
    return new, new.healthy != state.healthy


def probe_delay_s(check: HealthCheck, roll: float, *, healthy: bool = True) -> float:
    """Seconds until the next probe: the interval plus up to `jitter_percent` of it.

    An endpoint that is out waits `unhealthy_interval_s` instead when it is set (Envoy's
    `unhealthy_interval`): shorter brings a recovered endpoint back sooner, longer spares a
    dead cluster the probes."""
    interval = check.interval_s
    if not healthy and check.unhealthy_interval_s is not None:
        interval = check.unhealthy_interval_s
    return interval * (1.0 + check.jitter_percent / 100.0 * roll)
