"""Balancing decisions against Envoy's published vectors and its unit tests. Pure inputs only."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from policies import balancing
from policies.balancing import Draw, Pick
from policies.failover import TierLoads, tier_loads
from policies.hashring import HashRing
from policies.model import Algorithm, ServiceRef
from policies.table import Backend, ClusterTarget, Endpoint

SERVICE = ServiceRef("shop", "web", 80)


def target(
    cluster: str,
    priority: int,
    count: int,
    *,
    weight: int = 1,
    subnet: int = 1,
    zone: str | None = None,
    ready: bool = True,
) -> ClusterTarget:
    endpoints = tuple(
        Endpoint(f"127.0.{subnet}.{i + 1}", 8080, cluster, zone=zone, ready=ready)
        for i in range(count)
    )
    return ClusterTarget(cluster, priority, weight, endpoints)


def backend(*targets: ClusterTarget) -> Backend:
    ordered = tuple(sorted(targets, key=lambda t: (t.priority, t.cluster)))
    return Backend(id=str(SERVICE), service=SERVICE, weight=1, targets=ordered)


def unhealthy(*ids: str) -> balancing.HealthFn:
    down = frozenset(ids)
    return lambda endpoint: endpoint.id not in down


def healthy_first(per_cluster: dict[str, int]) -> balancing.HealthFn:
    """The first n endpoints (by last octet) of each named cluster are healthy, the rest not."""
    return lambda e: int(e.host.rsplit(".", 1)[1]) <= per_cluster.get(e.cluster, 10**6)


def grid(n: int) -> list[float]:
    """Rolls at the middle of n equal slices: each slice of [0, 1) exactly once."""
    return [(k + 0.5) / n for k in range(n)]


# ---------------------------------------------------------------------------------------------
# tier_loads


@pytest.mark.parametrize(
    ("health", "loads", "panic"),
    [
        # Envoy panic_threshold.rst, first table: P=1 fully healthy.
        pytest.param([(72, 100), (100, 100)], (100, 0), (False, False), id="p0-72pct"),
        pytest.param([(71, 100), (100, 100)], (99, 1), (False, False), id="p0-71pct"),
        pytest.param([(50, 100), (100, 100)], (70, 30), (False, False), id="p0-50pct"),
        pytest.param([(25, 100), (100, 100)], (35, 65), (False, False), id="p0-25pct"),
        pytest.param([(0, 100), (100, 100)], (0, 100), (False, False), id="p0-dead"),
        # Second table: both tiers degrade; normalised health below 100 turns panic checks on.
        pytest.param([(72, 100), (72, 100)], (100, 0), (False, False), id="both-72pct"),
        pytest.param([(71, 100), (71, 100)], (99, 1), (False, False), id="both-71pct"),
        pytest.param([(25, 100), (25, 100)], (50, 50), (True, True), id="both-25pct-panic"),
        # 5 % / 65 %: health 7 and 91 normalise to 7 and 92; the leftover 1 goes to the first
        # available tier (Envoy's integer maths; the docs' table rounds to 7/93 by hand).
        pytest.param([(1, 20), (13, 20)], (8, 92), (True, False), id="5-65pct-one-panics"),
        # Envoy LoadBalancerBaseTest.GentleFailover / GentleFailoverWithExtraLevels.
        pytest.param([(1, 1), (1, 1)], (100, 0), (False, False), id="envoy-all-healthy"),
        pytest.param([(1, 2), (1, 2)], (70, 30), (False, False), id="envoy-half-healthy"),
        pytest.param([(1, 4), (2, 2)], (35, 65), (False, False), id="envoy-p0-panic-ignored"),
        pytest.param([(1, 4), (1, 4)], (50, 50), (True, True), id="envoy-both-panic"),
        pytest.param([(0, 4), (1, 6)], (40, 60), (True, True), id="envoy-total-panic-by-hosts"),
        pytest.param(
            [(1, 5), (1, 5), (1, 5)], (34, 33, 33), (True, True, True), id="envoy-three-panic"
        ),
        pytest.param(
            [(0, 5), (0, 5), (5, 5)], (0, 0, 100), (False, False, False), id="envoy-p2-only"
        ),
        pytest.param(
            [(1, 4), (1, 4), (1, 4)], (35, 35, 30), (False, False, False), id="envoy-three-35s"
        ),
        # Envoy LoadBalancerBaseTest.PrioritySelection: every endpoint down, panic on.
        pytest.param([(0, 1), (0, 1)], (50, 50), (True, True), id="all-down-by-hosts"),
        pytest.param([(0, 1), (0, 2)], (34, 66), (True, True), id="all-down-rounding-to-p0"),
        pytest.param([(0, 3), (0, 0)], (100, 0), (True, True), id="all-down-p0-only-endpoints"),
        pytest.param([(0, 0), (0, 3)], (0, 100), (True, True), id="all-down-p1-only-endpoints"),
        pytest.param([(3, 3)], (100,), (False,), id="single-tier"),
    ],
)
def test_tier_loads_follow_envoy(
    health: list[tuple[int, int]], loads: tuple[int, ...], panic: tuple[bool, ...]
) -> None:
    result = tier_loads(health)
    assert (result.loads, result.panic, result.available) == (loads, panic, True)


def test_health_levels_normalise_below_100() -> None:
    # Envoy priority.rst: healths {20, 30} give loads {40, 60}. 1/7 and 3/14 healthy give
    # exactly 20 and 30 after overprovisioning; panic is off so that only normalising shows.
    result = tier_loads([(1, 7), (3, 14)], panic_threshold=0)
    assert result == TierLoads((40, 60), (False, False), (20, 30), 50, available=True)


def test_overprovisioning_factor_one_splits_by_healthy_ratio() -> None:
    assert tier_loads([(2, 4), (2, 4)], overprovisioning=1.0).loads == (50, 50)


@pytest.mark.parametrize(
    ("health", "panic_threshold", "loads"),
    [
        pytest.param([(0, 4), (0, 4)], 0.0, (100, 0), id="panic-disabled-all-down"),
        pytest.param([(0, 0), (0, 0)], 50.0, (100, 0), id="no-endpoints-at-all"),
        pytest.param([(1, 200)], 0.1, (100,), id="too-few-healthy-yet-not-panicking"),
    ],
)
def test_nothing_available(
    health: list[tuple[int, int]], panic_threshold: float, loads: tuple[int, ...]
) -> None:
    # Envoy keeps the loads summing to 100 (all on P0) even when nothing can be served.
    result = tier_loads(health, panic_threshold=panic_threshold)
    assert (result.loads, result.available) == (loads, False)


def test_no_tiers() -> None:
    result = tier_loads([])
    assert (result.loads, result.available, result.total_panic) == ((), False, False)


def test_total_panic_flag() -> None:
    assert tier_loads([(1, 4), (1, 4)]).total_panic
    assert not tier_loads([(1, 20), (13, 20)]).total_panic


# ---------------------------------------------------------------------------------------------
# pick_weighted


def test_weighted_pick_hits_each_slice_exactly() -> None:
    counts = Counter(balancing.pick_weighted([3, 0, 1], roll) for roll in grid(4))
    assert counts == {0: 3, 2: 1}


@pytest.mark.parametrize(
    "weights", [pytest.param([], id="empty"), pytest.param([0, 0], id="all-zero")]
)
def test_weighted_pick_without_weight(weights: list[int]) -> None:
    assert balancing.pick_weighted(weights, 0.5) is None


def test_weighted_pick_edges() -> None:
    assert balancing.pick_weighted([0, 5, 0], 0.0) == 1
    assert balancing.pick_weighted([0, 5, 0], 0.9999999999999999) == 1
    assert balancing.pick_weighted([-3, 2], 0.1) == 1  # negative counts as 0


# ---------------------------------------------------------------------------------------------
# Backend views: tier, cluster, locality


def tier_counts(view: balancing.BackendView, roll: float = 0.5) -> Counter[str]:
    picks = [view.pick(tier_roll=r, cluster_roll=roll) for r in grid(100)]
    return Counter(p.target.cluster for p in picks if p is not None)


def test_healthy_first_tier_takes_everything() -> None:
    b = backend(target("east", 0, 4), target("west", 1, 4, subnet=2))
    view = balancing.view_backend(b, lambda e: True)
    assert tier_counts(view) == {"east": 100}


def test_half_healthy_first_tier_spills_thirty_percent() -> None:
    b = backend(target("east", 0, 4), target("west", 1, 4, subnet=2))
    view = balancing.view_backend(b, healthy_first({"east": 2}))
    assert view.loads.loads == (70, 30)
    assert tier_counts(view) == {"east": 70, "west": 30}
    east = view.pick(tier_roll=0.1, cluster_roll=0.5)
    assert east is not None
    assert [e.host for e in east.candidates] == ["127.0.1.1", "127.0.1.2"]
    assert east.usable == (True, True, False, False)
    assert not east.panic


def test_panic_tier_offers_every_endpoint() -> None:
    b = backend(target("east", 0, 4), target("west", 1, 4, subnet=2))
    view = balancing.view_backend(b, healthy_first({"east": 1, "west": 1}))
    pick = view.pick(tier_roll=0.1, cluster_roll=0.5)
    assert pick is not None
    assert (pick.panic, len(pick.candidates), pick.usable) == (True, 4, (True,) * 4)


def test_unready_endpoints_are_never_healthy() -> None:
    ready = target("east", 0, 2)
    not_ready = target("west", 0, 2, subnet=2, ready=False)
    view = balancing.view_backend(backend(ready, not_ready), lambda e: True)
    assert cluster_counts(view) == {"east": 100}


def test_weights_split_a_healthy_tier_exactly() -> None:
    b = backend(target("east", 0, 2, weight=3), target("west", 0, 2, weight=1, subnet=2))
    view = balancing.view_backend(b, lambda e: True)
    picks = [view.pick(tier_roll=0.5, cluster_roll=r) for r in grid(400)]
    assert Counter(p.target.cluster for p in picks if p is not None) == {"east": 300, "west": 100}


def test_cluster_weight_scales_with_availability() -> None:
    # Envoy's locality weighting: 1 of 2 healthy → availability 70 %, so 70:100 against a
    # fully healthy cluster of the same weight.
    b = backend(target("east", 0, 2), target("west", 0, 2, subnet=2))
    view = balancing.view_backend(b, unhealthy("127.0.1.2:8080@east"))
    assert view.tiers[0].remote.weights == (70, 100)
    picks = [view.pick(tier_roll=0.5, cluster_roll=r) for r in grid(170)]
    assert Counter(p.target.cluster for p in picks if p is not None) == {"east": 70, "west": 100}


def test_weight_zero_cluster_takes_nothing_and_does_not_count() -> None:
    dead_weight = target("spare", 0, 8, weight=0, subnet=3)
    b = backend(target("east", 0, 2), dead_weight, target("west", 1, 2, subnet=2))
    view = balancing.view_backend(b, unhealthy("127.0.1.1:8080@east"))
    # east alone decides tier 0's health: 1/2 → 70 %, whatever "spare" holds.
    assert view.loads.loads == (70, 30)
    assert "spare" not in tier_counts(view)


def test_no_healthy_endpoint_without_panic_is_none() -> None:
    b = backend(target("east", 0, 2))
    view = balancing.view_backend(b, lambda e: False, panic_threshold=0)
    assert view.pick(tier_roll=0.5, cluster_roll=0.5) is None


def test_backend_without_targets_is_none() -> None:
    view = balancing.view_backend(backend(), lambda e: True)
    assert view.pick(tier_roll=0.5, cluster_roll=0.5) is None


def test_tier_without_endpoints_is_skipped_in_total_panic() -> None:
    b = backend(target("east", 0, 0), target("west", 1, 2, subnet=2))
    view = balancing.view_backend(b, lambda e: False)
    assert tier_counts(view) == {"west": 100}


def test_pick_target_is_the_view_pick() -> None:
    b = backend(target("east", 0, 2), target("west", 1, 2, subnet=2))
    health = healthy_first({"east": 1})
    one_shot = balancing.pick_target(b, health, tier_roll=0.9, cluster_roll=0.2)
    assert one_shot == balancing.view_backend(b, health).pick(tier_roll=0.9, cluster_roll=0.2)


def test_priorities_are_tiers_in_order_whatever_their_values() -> None:
    b = backend(target("west", 7, 2, subnet=2), target("east", 3, 2))
    view = balancing.view_backend(b, lambda e: True)
    assert [t.priority for t in view.tiers] == [3, 7]
    assert tier_counts(view) == {"east": 100}


# Locality: the tier's local clusters first, by Envoy's rule, inside the tier.


def locality_backend() -> Backend:
    return backend(
        target("east-a", 0, 4, zone="a"),
        target("east-b", 0, 4, subnet=2, zone="b"),
        target("west", 1, 4, subnet=3, zone="c"),
    )


def cluster_counts(view: balancing.BackendView) -> Counter[str]:
    picks = [view.pick(tier_roll=0.1, cluster_roll=r) for r in grid(100)]
    return Counter(p.target.cluster for p in picks if p is not None)


def test_clusters_in_zone() -> None:
    assert balancing.clusters_in_zone(locality_backend(), "a") == {"east-a"}
    assert balancing.clusters_in_zone(locality_backend(), "z") == frozenset()
    assert balancing.clusters_in_zone(locality_backend(), None) == frozenset()


def test_locality_keeps_tier_traffic_local_while_healthy() -> None:
    view = balancing.view_backend(locality_backend(), lambda e: True, local_clusters={"east-a"})
    assert cluster_counts(view) == {"east-a": 100}
    # without locality the tier splits by weight
    plain = balancing.view_backend(locality_backend(), lambda e: True)
    assert cluster_counts(plain) == {"east-a": 50, "east-b": 50}


def test_locality_spills_inside_the_tier_by_envoys_rule() -> None:
    health = healthy_first({"east-a": 2})  # local cluster at 50 % → keeps 70 %
    view = balancing.view_backend(locality_backend(), health, local_clusters={"east-a"})
    assert view.tiers[0].local_share == 70
    assert cluster_counts(view) == {"east-a": 70, "east-b": 30}


def test_dead_local_cluster_sends_the_tier_elsewhere() -> None:
    health = healthy_first({"east-a": 0})
    view = balancing.view_backend(locality_backend(), health, local_clusters={"east-a"})
    assert view.tiers[0].local_share == 0
    assert cluster_counts(view) == {"east-b": 100}


def test_locality_without_remote_capacity_keeps_all() -> None:
    health = healthy_first({"east-a": 1, "east-b": 0})
    view = balancing.view_backend(locality_backend(), health, local_clusters={"east-a"})
    assert cluster_counts(view) == {"east-a": 100}


def test_locality_is_ignored_in_panic() -> None:
    health = healthy_first({"east-a": 1, "east-b": 0, "west": 0})
    view = balancing.view_backend(locality_backend(), health, local_clusters={"east-a"})
    assert view.loads.panic[0]
    assert cluster_counts(view) == {"east-a": 50, "east-b": 50}


# Pick.without and BackendView.excluding


def test_pick_without_tried_endpoints() -> None:
    view = balancing.view_backend(backend(target("east", 0, 3)), lambda e: True)
    pick = view.pick(tier_roll=0.5, cluster_roll=0.5)
    assert pick is not None
    rest = pick.without({"127.0.1.1:8080@east"})
    assert rest is not None
    assert [e.host for e in rest.candidates] == ["127.0.1.2", "127.0.1.3"]
    assert rest.usable == (False, True, True)
    assert rest.without({"127.0.1.2:8080@east", "127.0.1.3:8080@east"}) is None


def test_excluding_a_cluster_spills_to_the_next_tier() -> None:
    b = backend(target("east", 0, 2), target("west", 1, 2, subnet=2))
    view = balancing.view_backend(b, lambda e: True)
    assert tier_counts(view.excluding({"east"})) == {"west": 100}
    assert view.excluding({"east", "west"}).pick(tier_roll=0.5, cluster_roll=0.5) is None


# ---------------------------------------------------------------------------------------------
# Endpoint choice


def loads_of(active: dict[str, int]) -> Callable[[str], int]:
    return lambda name: active.get(name, 0)


@pytest.mark.parametrize(
    ("rolls", "active", "expected"),
    [
        pytest.param((0.0, 0.0), {"a": 5, "b": 1}, "b", id="second-less-busy"),
        pytest.param((0.0, 0.0), {"a": 1, "b": 5}, "a", id="first-less-busy"),
        pytest.param((0.0, 0.0), {"a": 2, "b": 2}, "a", id="tie-goes-to-first-sampled"),
        pytest.param((0.99, 0.0), {"a": 2, "c": 2}, "c", id="tie-first-sampled-is-c"),
        pytest.param((0.5, 0.99), {"b": 9, "c": 0}, "c", id="samples-skip-the-first"),
    ],
)
def test_least_request(rolls: tuple[float, float], active: dict[str, int], expected: str) -> None:
    chosen = balancing.least_request(
        ["a", "b", "c"], loads_of(active), roll_a=rolls[0], roll_b=rolls[1]
    )
    assert chosen == expected


def test_sampling_two_never_repeats_and_is_uniform() -> None:
    pairs = Counter(balancing.sample_two(3, a, b) for a in grid(3) for b in grid(2))
    assert pairs == {(i, j): 1 for i in range(3) for j in range(3) if i != j}
    assert balancing.sample_two(1, 0.7, 0.7) == (0, 0)


def test_least_request_with_one_candidate() -> None:
    assert balancing.least_request(["only"], loads_of({}), roll_a=0.9, roll_b=0.9) == "only"


def test_round_robin_cycles() -> None:
    assert [balancing.round_robin("abc", n) for n in range(5)] == ["a", "b", "c", "a", "b"]


def ring_pick() -> tuple[Pick, HashRing]:
    b = backend(target("east", 0, 4))
    pick = balancing.view_backend(b, unhealthy("127.0.1.3:8080@east")).pick(
        tier_roll=0.5, cluster_roll=0.5
    )
    assert pick is not None
    return pick, HashRing.build([e.id for e in pick.target.endpoints])


def test_choose_endpoint_by_algorithm() -> None:
    pick, _ = ring_pick()
    busy = {pick.candidates[0]: 10}
    draw = Draw(roll_a=0.0, roll_b=0.0, counter=4, active=lambda e: busy.get(e, 0))
    assert balancing.choose_endpoint(Algorithm.LEAST_REQUEST, pick, draw) == pick.candidates[1]
    assert balancing.choose_endpoint(Algorithm.ROUND_ROBIN, pick, draw) == pick.candidates[1]
    # ring hash without a key falls back to least request
    assert balancing.choose_endpoint(Algorithm.RING_HASH, pick, draw) == pick.candidates[1]
    assert set(balancing.PICKERS) == set(Algorithm)


def test_ring_hash_is_sticky_and_skips_unusable_endpoints() -> None:
    pick, ring = ring_pick()
    chosen: Counter[str] = Counter()
    for n in range(400):
        draw = Draw(roll_a=0.0, roll_b=0.0, key=f"user-{n}", ring=ring)
        endpoint = balancing.choose_endpoint(Algorithm.RING_HASH, pick, draw)
        again = balancing.choose_endpoint(Algorithm.RING_HASH, pick, draw._replace(roll_a=0.7))
        assert endpoint == again
        chosen[endpoint.host] += 1
    assert set(chosen) == {"127.0.1.1", "127.0.1.2", "127.0.1.4"}  # .3 is unhealthy
    assert min(chosen.values()) > 60


def test_least_request_without_load_counts_takes_the_first_sample() -> None:
    pick, _ = ring_pick()
    draw = Draw(roll_a=0.99, roll_b=0.0)
    assert balancing.choose_endpoint(Algorithm.LEAST_REQUEST, pick, draw) == pick.candidates[2]
