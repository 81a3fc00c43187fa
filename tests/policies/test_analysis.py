"""Analysis verdicts and Prometheus-compatible quantiles: pure inputs, no clock, no I/O."""

from __future__ import annotations

import math

import pytest

from policies import analysis
from policies.analysis import Observation, Sample, Verdict
from policies.model import Analysis

INF = math.inf
BUCKETS = ((0.1, 50.0), (0.2, 90.0), (0.5, 99.0), (1.0, 100.0), (INF, 100.0))


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        pytest.param(0.5, BUCKETS, 0.1, id="top-of-first-bucket"),
        pytest.param(0.75, BUCKETS, 0.1625, id="interpolated-inside-a-bucket"),
        pytest.param(0.99, BUCKETS, 0.5, id="p99"),
        pytest.param(0.25, BUCKETS, 0.05, id="first-bucket-starts-at-zero"),
        # promql/testdata/histograms.test, {start="positive"} at 10m: 0.15
        pytest.param(0.5, ((0.1, 50.0), (0.2, 70.0), (INF, 120.0)), 0.15, id="prometheus-suite"),
        pytest.param(0.99, ((0.1, 10.0), (INF, 100.0)), 0.1, id="rank-in-inf-bucket"),
        pytest.param(0.1, ((0.0, 5.0), (INF, 10.0)), 0.0, id="non-positive-first-bound"),
        pytest.param(
            0.5, ((0.1, 60.0), (0.2, 50.0), (INF, 100.0)), 0.5 * 0.1 / 0.6, id="flattened"
        ),
        pytest.param(
            0.5, ((0.1, 30.0), (0.1, 30.0), (INF, 100.0)), 0.5 * 0.1 / 0.6, id="same-le-summed"
        ),
        pytest.param(0.99, ((0.1, 10.0), (1.0, 20.0)), None, id="no-inf-bucket"),
        pytest.param(0.99, ((INF, 20.0),), None, id="only-inf-bucket"),
        pytest.param(0.99, ((0.1, 0.0), (INF, 0.0)), None, id="no-observations"),
        pytest.param(0.99, (), None, id="empty"),
    ],
)
def test_quantile_follows_prometheus(
    q: float, buckets: analysis.Buckets, expected: float | None
) -> None:
    result = analysis.quantile(q, buckets)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5])
def test_quantile_outside_unit_interval_is_a_programming_error(q: float) -> None:
    with pytest.raises(ValueError, match="quantile must be in"):
        analysis.quantile(q, BUCKETS)


CONFIG = Analysis(min_requests=100, min_success_rate=0.99)
LATENCY = Analysis(min_requests=100, min_success_rate=0.99, max_latency_p99_s=0.3)
DROP = Analysis(min_requests=100, min_success_rate=None, max_success_rate_drop=0.02)
FAST = ((0.05, 900.0), (0.1, 1000.0), (INF, 1000.0))
SLOW = ((0.1, 100.0), (1.0, 1000.0), (INF, 1000.0))


@pytest.mark.parametrize(
    ("config", "observation", "verdict", "reason"),
    [
        pytest.param(CONFIG, Observation(Sample(1000, 5)), Verdict.PASS, "ok", id="healthy"),
        pytest.param(
            CONFIG, Observation(Sample(1000, 10)), Verdict.PASS, "ok", id="exactly-at-min"
        ),
        pytest.param(
            CONFIG,
            Observation(Sample(1000, 100)),
            Verdict.FAIL,
            "success_rate_below_min",
            id="ten-percent-errors",
        ),
        pytest.param(
            CONFIG,
            Observation(Sample(99, 0)),
            Verdict.INCONCLUSIVE,
            "not_enough_traffic",
            id="too-few-requests-is-never-a-pass",
        ),
        pytest.param(
            CONFIG,
            Observation(Sample(99, 99)),
            Verdict.INCONCLUSIVE,
            "not_enough_traffic",
            id="too-few-requests-is-not-a-failure-either",
        ),
        pytest.param(
            Analysis(min_requests=0),
            Observation(Sample(0, 0)),
            Verdict.INCONCLUSIVE,
            "not_enough_traffic",
            id="no-requests-at-all",
        ),
        pytest.param(
            LATENCY, Observation(Sample(1000, 0, FAST)), Verdict.PASS, "ok", id="fast-canary"
        ),
        pytest.param(
            LATENCY,
            Observation(Sample(1000, 0, SLOW)),
            Verdict.FAIL,
            "latency_p99_above_max",
            id="slow-canary",
        ),
        pytest.param(
            LATENCY,
            Observation(Sample(1000, 0, SLOW, latency_p99_s=0.2)),
            Verdict.PASS,
            "ok",
            id="precomputed-p99-wins-over-buckets",
        ),
        pytest.param(
            LATENCY,
            Observation(Sample(1000, 0)),
            Verdict.INCONCLUSIVE,
            "no_latency_data",
            id="no-histogram",
        ),
        pytest.param(
            LATENCY,
            Observation(Sample(1000, 100)),
            Verdict.FAIL,
            "success_rate_below_min",
            id="failure-outranks-missing-data",
        ),
        pytest.param(
            DROP,
            Observation(Sample(1000, 20), Sample(5000, 50)),
            Verdict.PASS,
            "ok",
            id="small-drop-vs-stable",
        ),
        pytest.param(
            DROP,
            Observation(Sample(1000, 50), Sample(5000, 50)),
            Verdict.FAIL,
            "success_rate_drop_above_max",
            id="large-drop-vs-stable",
        ),
        pytest.param(
            DROP,
            Observation(Sample(1000, 50)),
            Verdict.INCONCLUSIVE,
            "not_enough_stable_traffic",
            id="no-stable-to-compare",
        ),
        pytest.param(
            DROP,
            Observation(Sample(1000, 0), Sample(10, 0)),
            Verdict.INCONCLUSIVE,
            "not_enough_stable_traffic",
            id="too-little-stable",
        ),
    ],
)
def test_judge(config: Analysis, observation: Observation, verdict: Verdict, reason: str) -> None:
    measured = analysis.judge(config, observation)
    assert (measured.verdict, measured.reason) == (verdict, reason)
    assert measured.canary_requests == observation.canary.requests
    assert measured.message


def test_every_finding_is_in_the_message() -> None:
    config = Analysis(min_requests=10, min_success_rate=0.99, max_latency_p99_s=0.3)
    measured = analysis.judge(config, Observation(Sample(1000, 100, SLOW)))
    assert measured.verdict is Verdict.FAIL
    assert "success rate 0.9000 is below 0.99" in measured.message
    assert "p99" in measured.message
    assert measured.canary_success_rate == pytest.approx(0.9)
    assert measured.canary_p99_s == pytest.approx(0.1 + 0.9 * (990 - 100) / 900)


def test_sample_without_requests_has_no_success_rate() -> None:
    assert Sample().success_rate is None
    assert Sample().p99_s is None


def _gateway_counters(requests: float, errors: float, fast: float, slow: float) -> Sample:
    """What one gateway's /metrics says for a backend: totals since it started."""
    return Sample(requests, errors, ((0.1, fast), (0.5, fast + slow), (INF, requests)))


def test_built_in_counters_and_prometheus_numbers_give_the_same_verdict() -> None:
    config = Analysis(min_requests=100, min_success_rate=0.95, max_latency_p99_s=0.4)
    # Two gateways, counters read at the start and at the end of the interval.
    start = [_gateway_counters(1000, 10, 900, 90), _gateway_counters(500, 0, 500, 0)]
    end = [_gateway_counters(1600, 70, 1400, 180), _gateway_counters(900, 40, 800, 90)]
    built_in = analysis.increase(analysis.combine(end), analysis.combine(start))
    # What `sum(increase(...[interval]))` and `sum by (le) (increase(..._bucket[...]))` return.
    prometheus = Sample(
        requests=1000.0,
        errors=100.0,
        latency_buckets=((0.1, 800.0), (0.5, 980.0), (INF, 1000.0)),
    )
    assert built_in == prometheus
    assert analysis.judge(config, Observation(built_in)) == analysis.judge(
        config, Observation(prometheus)
    )
    assert analysis.judge(config, Observation(built_in)).reason == "success_rate_below_min"


def test_increase_treats_a_counter_that_went_down_as_a_restart() -> None:
    before = Sample(5000, 50, ((0.1, 4000.0), (INF, 5000.0)))
    after_restart = Sample(300, 3, ((0.1, 250.0), (INF, 300.0)))
    assert analysis.increase(after_restart, before) == after_restart


def test_combine_sums_unequal_bucket_layouts_as_step_functions() -> None:
    a = Sample(10, 1, ((0.1, 4.0), (INF, 10.0)), latency_p99_s=0.9)
    b = Sample(20, 2, ((0.2, 15.0), (INF, 20.0)))
    combined = analysis.combine([a, b])
    assert combined == Sample(30, 3, ((0.1, 4.0), (0.2, 19.0), (INF, 30.0)))
    assert combined.latency_p99_s is None  # quantiles do not add up
