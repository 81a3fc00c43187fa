"""Analysis verdicts: canary (and stable) observations over one interval → a measurement. Pure.

One function judges every source, so built-in and Prometheus analysis agree on the same traffic:

* the controller's built-in analysis sums the gateways' counters per backend (`combine`) and
  subtracts the sums taken at the start of the interval (`increase`, which treats a counter that
  went down as a gateway restart, as Prometheus's `increase()` does);
* Prometheus analysis fills a `Sample` straight from query results: request and 5xx counts
  (`increase(...[interval])`), and either the `_bucket` series by `le` or a p99 already computed by
  `histogram_quantile`.

Latency quantiles come from Prometheus-style cumulative buckets (`le` upper bounds, the last one
`+Inf`) with Prometheus's own interpolation (promql `bucketQuantile`), so both paths give the same
number for the same buckets.

Too little traffic is INCONCLUSIVE, never a pass (Flagger's "no values found" and Argo Rollouts'
inconclusive runs): the release engine pauses on it and waits for a person.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import math
from collections.abc import Iterable

from policies.model import Analysis

P99 = 0.99

Buckets = tuple[tuple[float, float], ...]  # (le upper bound in seconds, cumulative count)


class Verdict(enum.Enum):
    PASS = "Pass"
    FAIL = "Fail"
    INCONCLUSIVE = "Inconclusive"


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """What one backend served during one interval (or, for counters, since a process started).

    Counts are floats because Prometheus's `increase()` extrapolates. `latency_p99_s`, when set,
    wins over `latency_buckets` (a query that already returned the quantile).
    """

    requests: float = 0.0
    errors: float = 0.0  # responses with a 5xx status, local replies included
    latency_buckets: Buckets = ()  # sorted by le; cumulative
    latency_p99_s: float | None = None

    @property
    def success_rate(self) -> float | None:
        if self.requests <= 0:
            return None
        return (self.requests - self.errors) / self.requests

    @property
    def p99_s(self) -> float | None:
        if self.latency_p99_s is not None:
            return self.latency_p99_s
        return quantile(P99, self.latency_buckets)


@dataclasses.dataclass(frozen=True, slots=True)
class Observation:
    """Canary and stable over the same interval. Stable is needed only for the drop check."""

    canary: Sample
    stable: Sample | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Measurement:
    """One judged interval: the verdict, a stable snake_case reason code, and the numbers."""

    verdict: Verdict
    reason: str  # "ok", "not_enough_traffic", "success_rate_below_min", ...
    message: str  # one sentence for people: every finding, with numbers
    canary_requests: float
    canary_success_rate: float | None
    canary_p99_s: float | None
    stable_success_rate: float | None


def judge(analysis: Analysis, observation: Observation) -> Measurement:
    """Apply every configured threshold. A definite failure outranks missing data elsewhere.

    Checks (each only when configured): canary success rate ≥ `min_success_rate`; canary p99 ≤
    `max_latency_p99_s`; stable success rate minus canary success rate ≤ `max_success_rate_drop`.
    Fewer than `min_requests` canary requests (or stable requests, when the drop is checked) make
    the whole measurement inconclusive: a handful of requests proves nothing either way.
    """
    canary, stable = observation.canary, observation.stable
    canary_rate, canary_p99 = canary.success_rate, canary.p99_s
    stable_rate = stable.success_rate if stable is not None else None

    def result(verdict: Verdict, findings: list[tuple[str, str]]) -> Measurement:
        return Measurement(
            verdict=verdict,
            reason=findings[0][0],
            message="; ".join(text for _, text in findings),
            canary_requests=canary.requests,
            canary_success_rate=canary_rate,
            canary_p99_s=canary_p99,
            stable_success_rate=stable_rate,
        )

    if canary.requests < analysis.min_requests or canary_rate is None:
        return result(
            Verdict.INCONCLUSIVE,
            [
                (
                    "not_enough_traffic",
                    f"canary served {canary.requests:g} requests, "
                    f"fewer than the {analysis.min_requests} needed",
                )
            ],
        )
    failures: list[tuple[str, str]] = []
    missing: list[tuple[str, str]] = []
    if analysis.min_success_rate is not None and canary_rate < analysis.min_success_rate:
        failures.append(
            (
                "success_rate_below_min",
                f"canary success rate {canary_rate:.4f} is below {analysis.min_success_rate:g}",
            )
        )
    if analysis.max_latency_p99_s is not None:
        if canary_p99 is None:
            missing.append(("no_latency_data", "canary latency histogram is empty"))
        elif canary_p99 > analysis.max_latency_p99_s:
            failures.append(
                (
                    "latency_p99_above_max",
                    f"canary p99 {canary_p99:.3f}s is above {analysis.max_latency_p99_s:g}s",
                )
            )
    if analysis.max_success_rate_drop is not None:
        if stable is None or stable_rate is None or stable.requests < analysis.min_requests:
            seen = 0.0 if stable is None else stable.requests
            missing.append(
                (
                    "not_enough_stable_traffic",
                    f"stable served {seen:g} requests, fewer than the {analysis.min_requests} "
                    "needed to compare",
                )
            )
        elif stable_rate - canary_rate > analysis.max_success_rate_drop:
            failures.append(
                (
                    "success_rate_drop_above_max",
                    f"canary success rate {canary_rate:.4f} is {stable_rate - canary_rate:.4f} "
                    f"below stable's {stable_rate:.4f}, "
                    f"more than {analysis.max_success_rate_drop:g}",
                )
            )
    if failures:
        return result(Verdict.FAIL, failures + missing)
    if missing:
        return result(Verdict.INCONCLUSIVE, missing)
    return result(
        Verdict.PASS,
        [("ok", f"canary success rate {canary_rate:.4f} over {canary.requests:g} requests")],
    )


def quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus's `histogram_quantile(q, ...)` over cumulative buckets; None where it gives NaN.

    Linear interpolation inside the bucket holding rank q·total; the first bucket starts at 0;
    a rank in the `+Inf` bucket answers the highest finite bound. Non-monotonic counts (a scrape
    racing a gateway restart) are flattened as Prometheus does.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {q}")
    merged = _cumulative(buckets)
    if len(merged) < 2 or not math.isinf(merged[-1][0]):
        return None
    total = merged[-1][1]
    if total <= 0:
        return None
    rank = q * total
    counts = [count for _, count in merged]
    index = bisect.bisect_left(counts, rank, hi=len(merged) - 1)
    if index == len(merged) - 1:
        return merged[-2][0]
    upper, count = merged[index]
    if index == 0 and upper <= 0:
        return upper
    lower = 0.0
    if index > 0:
        lower = merged[index - 1][0]
        count -= merged[index - 1][1]
        rank -= merged[index - 1][1]
    return lower + (upper - lower) * (rank / count)


def combine(samples: Iterable[Sample]) -> Sample:
    """Sum samples of one backend from several gateways (or workers).

    Buckets are summed bound by bound; a sample without some bound contributes its count at the
    largest bound below it (cumulative counts are a step function), so unequal layouts still sum
    to a valid histogram. Precomputed quantiles cannot be summed and are dropped.
    """
    items = tuple(samples)
    bounds = sorted({le for sample in items for le, _ in sample.latency_buckets})
    buckets = tuple(
        (le, sum(_count_at(sample.latency_buckets, le) for sample in items)) for le in bounds
    )
    return Sample(
        requests=sum(sample.requests for sample in items),
        errors=sum(sample.errors for sample in items),
        latency_buckets=buckets,
    )


def increase(later: Sample, earlier: Sample) -> Sample:
    """Counter increase over an interval. A counter that went down was reset (a restart): its
    whole later value is the increase, as in Prometheus's `increase()`."""
    bounds = sorted({le for le, _ in later.latency_buckets})
    return Sample(
        requests=_delta(later.requests, earlier.requests),
        errors=_delta(later.errors, earlier.errors),
        latency_buckets=tuple(
            (
                le,
                _delta(
                    _count_at(later.latency_buckets, le), _count_at(earlier.latency_buckets, le)
                ),
            )
            for le in bounds
        ),
    )


def _delta(later: float, earlier: float) -> float:
    return later - earlier if later >= earlier else later


def _count_at(buckets: Buckets, le: float) -> float:
    best = 0.0
    for bound, count in sorted(buckets):
        if bound > le:
            break
        best = count
    return best


def _cumulative(buckets: Buckets) -> list[tuple[float, float]]:
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[le] = merged.get(le, 0.0) + count
    ordered = sorted(merged.items())
    monotonic: list[tuple[float, float]] = []
    highest = 0.0
    for le, count in ordered:
        highest = max(highest, count)
        monotonic.append((le, highest))
    return monotonic
