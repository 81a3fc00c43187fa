"""Properties of the balancer: Envoy's tier formula, exact weighted shares, p2c. Hypothesis."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import balancing
from policies.failover import tier_loads
from policies.model import ServiceRef
from policies.table import Backend, ClusterTarget, Endpoint

PROPERTY = settings(deadline=None, database=None, max_examples=300)


@st.composite
def tiers(draw: st.DrawFn) -> list[tuple[int, int]]:
    """(healthy, total) per tier; a tier may be empty."""
    totals = draw(st.lists(st.integers(0, 40), min_size=1, max_size=5))
    return [(draw(st.integers(0, total)), total) for total in totals]


def health_of(healthy: int, total: int) -> int:
    return min(100, 140 * healthy // total) if total else 0


def grid(n: int) -> list[float]:
    return [(k + 0.5) / n for k in range(n)]


@PROPERTY
@given(tiers(), st.sampled_from([0.0, 25.0, 50.0, 100.0]))
def test_loads_sum_to_100(health: list[tuple[int, int]], panic_threshold: float) -> None:
    result = tier_loads(health, panic_threshold=panic_threshold)
    assert sum(result.loads) == 100
    assert all(0 <= load <= 100 for load in result.loads)
    assert len(result.loads) == len(result.panic) == len(health)


@PROPERTY
@given(tiers())
def test_tier_split_follows_envoys_formula(health: list[tuple[int, int]]) -> None:
    result = tier_loads(health)
    levels = [health_of(h, t) for h, t in health]
    normalized = min(100, sum(levels))
    assert result.health == tuple(levels)
    assert result.normalized_health == normalized
    # Panic only below 100 % normalised health, per tier, by its plain healthy share.
    assert result.panic == tuple(
        normalized < 100 and (100 * h / t if t else 0) < 50 for h, t in health
    )
    if normalized == 100:
        # Spill-over: each tier keeps its health, the next takes what is left.
        left = 100
        for level, load in zip(levels, result.loads, strict=True):
            assert load == min(level, left)
            left -= load
    elif all(result.panic):
        # Total panic: by endpoint count; the first tier with endpoints takes the rounding.
        total = sum(t for _, t in health)
        shares = [100 * t // total if total else 0 for _, t in health]
        first = next((i for i, (_, t) in enumerate(health) if t), 0)
        shares[first] += 100 - sum(shares)
        assert result.loads == tuple(shares)
    else:
        # Normalised: health scaled to 100, the rounding to the first tier with health.
        scaled = [level * 100 // normalized for level in levels]
        first = next(i for i, level in enumerate(levels) if level)
        scaled[first] += 100 - sum(scaled)
        assert result.loads == tuple(scaled)


@PROPERTY
@given(st.lists(st.integers(0, 30), min_size=1, max_size=8).filter(any))
def test_weighted_picks_hit_their_shares_exactly(weights: list[int]) -> None:
    total = sum(weights)
    counts = Counter(balancing.pick_weighted(weights, roll) for roll in grid(total))
    assert counts == {i: w for i, w in enumerate(weights) if w}


@st.composite
def backends_with_health(draw: st.DrawFn) -> tuple[Backend, frozenset[str]]:
    targets = []
    down: set[str] = set()
    for n in range(draw(st.integers(1, 4))):
        endpoints = tuple(
            Endpoint(f"127.0.{n + 1}.{i + 1}", 8080, f"c{n}")
            for i in range(draw(st.integers(0, 6)))
        )
        down |= {e.id for e in endpoints if draw(st.booleans())}
        priority = draw(st.integers(0, 2))
        targets.append(ClusterTarget(f"c{n}", priority, draw(st.integers(1, 5)), endpoints))
    targets.sort(key=lambda t: (t.priority, t.cluster))
    service = ServiceRef("shop", "web", 80)
    return Backend(str(service), service, 1, tuple(targets)), frozenset(down)


@PROPERTY
@given(backends_with_health(), st.floats(0, 1, exclude_max=True))
def test_view_splits_tiers_exactly_and_offers_only_what_it_may(
    case: tuple[Backend, frozenset[str]], cluster_roll: float
) -> None:
    backend, down = case
    view = balancing.view_backend(backend, lambda e: e.id not in down)
    picks = [view.pick(tier_roll=r, cluster_roll=cluster_roll) for r in grid(100)]
    if not view.loads.available:
        assert picks == [None] * 100
        return
    assert all(p is not None for p in picks)
    counts = Counter(p.tier for p in picks if p is not None)
    assert counts == {i: load for i, load in enumerate(view.loads.loads) if load}
    for pick in picks:
        assert pick is not None
        assert pick.candidates
        assert pick.panic == view.loads.panic[pick.tier]
        if pick.panic:
            assert pick.candidates == pick.target.endpoints
        else:
            assert all(e.id not in down for e in pick.candidates)


@PROPERTY
@given(
    st.lists(st.integers(0, 5), min_size=1, max_size=10),
    st.floats(0, 1, exclude_max=True),
    st.floats(0, 1, exclude_max=True),
)
def test_p2c_never_picks_the_busier_of_its_two_samples(
    active: list[int], roll_a: float, roll_b: float
) -> None:
    candidates = list(range(len(active)))
    first, second = balancing.sample_two(len(candidates), roll_a, roll_b)
    chosen = balancing.least_request(candidates, active.__getitem__, roll_a=roll_a, roll_b=roll_b)
    assert chosen in (first, second)
    assert active[chosen] == min(active[first], active[second])
    if len(candidates) > 1:
        assert first != second
    if active[first] == active[second]:
        assert chosen == first
