"""Load balancing decisions: priority tiers, cluster weights, locality, endpoint choice. Pure.

A request that matched a backend is placed in three steps, each driven by a `roll` in [0, 1)
that the gateway draws:

1. **Tier.** Clusters form tiers by `ClusterTarget.priority`; `policies.failover.tier_loads`
   (Envoy's priority load: overprovisioning 1.4, panic below 50 %) says how much each takes and
   which tiers panic, i.e. offer all their endpoints, healthy or not.
2. **Cluster.** Within the tier, clusters share traffic by `ClusterTarget.weight` scaled by their
   availability (Envoy's locality weighting: `weight * min(100, 1.4 * healthy %)`), so a fully
   healthy tier splits exactly by the configured weights. With `local_clusters` set, the tier's
   local clusters are a sub-tier of their own: they keep `min(100, 1.4 * healthy %)` of the tier's
   traffic and the rest goes to the tier's other clusters. Locality is ignored in panic.
3. **Endpoint.** Among the chosen cluster's candidates (its healthy endpoints, or all of them in
   panic) by the route's `model.Algorithm`: power of two choices on active requests (default),
   round robin, or a consistent-hash ring (`policies.hashring`) for affinity.

Steps 1 and 2 depend on health, not on the request, so the gateway builds a `BackendView` when
health or the table changes and calls `BackendView.pick` per request: an index and a bisection, no
allocation. Health comes in as a predicate; an endpoint whose EndpointSlice says not ready is
never healthy (it is used in panic only). Degraded endpoints (Envoy) do not exist here.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import NamedTuple, Protocol, TypeVar

from policies.failover import (
    DEFAULT_OVERPROVISIONING,
    DEFAULT_PANIC_THRESHOLD,
    TierLoads,
    distribute,
    factor_percent,
    health_percent,
    tier_loads,
)
from policies.hashring import HashRing
from policies.model import Algorithm
from policies.table import Backend, ClusterTarget, Endpoint

HealthFn = Callable[[Endpoint], bool]  # the gateway's view: active checks and outlier ejection
T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# Weighted choice


def pick_weighted(weights: Sequence[int], roll: float) -> int | None:
    """Index chosen with probability proportional to its weight; None when all weights are 0.

    Entries of weight 0 are never chosen. The roll is cut into integer slices in order, so the
    rolls `(k + 0.5) / total` for k in range(total) hit each index exactly `weight` times.
    """
    bounds = tuple(itertools.accumulate(max(0, weight) for weight in weights))
    if not bounds or bounds[-1] == 0:
        return None
    return _slice(bounds, roll)


def _slice(bounds: Sequence[int], roll: float) -> int:
    total = bounds[-1]
    return bisect.bisect_right(bounds, min(int(roll * total), total - 1))


# ---------------------------------------------------------------------------------------------
# Cluster choice over a backend's tiers


@dataclasses.dataclass(frozen=True, slots=True)
class Pick:
    """Where one attempt may go: a cluster of the backend and its candidate endpoints."""

    target: ClusterTarget
    tier: int  # position of the tier (0 = most preferred), not the priority value
    panic: bool  # candidates include unhealthy endpoints
    candidates: tuple[Endpoint, ...]  # never empty
    usable: tuple[bool, ...]  # parallel to target.endpoints: is it a candidate (ring lookups)

    def without(self, tried: AbstractSet[str]) -> Pick | None:
        """This pick minus the endpoints whose id is in `tried`; None when none remain."""
        keep = tuple(
            ok and endpoint.id not in tried
            for endpoint, ok in zip(self.target.endpoints, self.usable, strict=True)
        )
        if not any(keep):
            return None
        candidates = tuple(e for e, ok in zip(self.target.endpoints, keep, strict=True) if ok)
        return dataclasses.replace(self, candidates=candidates, usable=keep)


@dataclasses.dataclass(frozen=True, slots=True)
class Spread:
    """Clusters of one (sub-)tier with their effective weights."""

    picks: tuple[Pick, ...]
    weights: tuple[int, ...]  # configured weight * availability %, or configured in panic
    bounds: tuple[int, ...]  # cumulative weights

    @classmethod
    def of(cls, weighted: Sequence[tuple[Pick, int]]) -> Spread:
        weights = tuple(weight for _, weight in weighted)
        return cls(tuple(p for p, _ in weighted), weights, tuple(itertools.accumulate(weights)))


@dataclasses.dataclass(frozen=True, slots=True)
class TierChoice:
    """How one tier's traffic splits between its local and other clusters."""

    priority: int
    local_share: int  # percent of the tier's traffic kept on `local`
    local: Spread
    remote: Spread
    # Derived: local then remote picks, and the cumulative share of the tier each one ends at,
    # so that one bisection on the cluster roll places a request.
    picks: tuple[Pick, ...] = dataclasses.field(init=False, repr=False, compare=False)
    cuts: tuple[float, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        picks: list[Pick] = []
        cuts: list[float] = []
        share = self.local_share / 100
        for spread, start, width in ((self.local, 0.0, share), (self.remote, share, 1 - share)):
            if width > 0 and spread.picks:
                total = spread.bounds[-1]
                picks.extend(spread.picks)
                cuts.extend(start + width * bound / total for bound in spread.bounds)
        if cuts:
            cuts[-1] = math.inf  # no float rounding can push a roll below 1 past the end
        object.__setattr__(self, "picks", tuple(picks))
        object.__setattr__(self, "cuts", tuple(cuts))


@dataclasses.dataclass(frozen=True, slots=True)
class TargetHealth:
    """One cluster target with the health of each of its endpoints, as seen when viewed."""

    target: ClusterTarget
    flags: tuple[bool, ...]  # parallel to target.endpoints
    healthy: int


@dataclasses.dataclass(frozen=True, slots=True)
class BackendView:
    """A backend as the balancer sees it under one health snapshot. Build with `view_backend`."""

    backend: Backend
    loads: TierLoads
    tiers: tuple[TierChoice, ...]  # parallel to loads.loads
    by_percent: tuple[TierChoice, ...]  # 100 entries, tier per percent of load; () if unavailable
    targets: tuple[TargetHealth, ...]  # weight > 0 only, in tier order
    local_clusters: AbstractSet[str]
    overprovisioning: float
    panic_threshold: float

    def pick(self, *, tier_roll: float, cluster_roll: float) -> Pick | None:
        """The cluster and candidates for one attempt; None means 503 no_healthy_backend."""
        by_percent = self.by_percent
        if not by_percent:
            return None
        tier = by_percent[int(tier_roll * 100)]
        return tier.picks[bisect.bisect_right(tier.cuts, cluster_roll)]

    def excluding(self, clusters: AbstractSet[str]) -> BackendView:
        """The same view without some clusters (retries: Envoy's previous_priorities, per cluster).

        Tier loads are recomputed over what remains, so a retry spills to the next tier when the
        tried clusters were all of the first.
        """
        return _assemble(
            self.backend,
            [state for state in self.targets if state.target.cluster not in clusters],
            local_clusters=self.local_clusters,
            overprovisioning=self.overprovisioning,
            panic_threshold=self.panic_threshold,
        )


def view_backend(
    backend: Backend,
    healthy: HealthFn,
    *,
    local_clusters: AbstractSet[str] = frozenset(),
    overprovisioning: float = DEFAULT_OVERPROVISIONING,
    panic_threshold: float = DEFAULT_PANIC_THRESHOLD,
) -> BackendView:
    """Snapshot `backend` under the gateway's health predicate (O(endpoints); cache the result).

    `local_clusters` names the clusters in the gateway's own zone or region (see
    `clusters_in_zone`); empty disables locality. Targets of weight 0 take no traffic and do not
    count towards their tier's health.
    """
    states = []
    for target in backend.targets:
        if target.weight <= 0:
            continue
        flags = tuple(endpoint.ready and healthy(endpoint) for endpoint in target.endpoints)
        states.append(TargetHealth(target, flags, sum(flags)))
    return _assemble(
        backend,
        states,
        local_clusters=local_clusters,
        overprovisioning=overprovisioning,
        panic_threshold=panic_threshold,
    )


def pick_target(
    backend: Backend,
    healthy: HealthFn,
    *,
    tier_roll: float,
    cluster_roll: float,
    local_clusters: AbstractSet[str] = frozenset(),
    overprovisioning: float = DEFAULT_OVERPROVISIONING,
    panic_threshold: float = DEFAULT_PANIC_THRESHOLD,
) -> Pick | None:
    """One-shot `view_backend(...).pick(...)`, for callers that do not cache views."""
    view = view_backend(
        backend,
        healthy,
        local_clusters=local_clusters,
        overprovisioning=overprovisioning,
        panic_threshold=panic_threshold,
    )
    return view.pick(tier_roll=tier_roll, cluster_roll=cluster_roll)


def clusters_in_zone(backend: Backend, zone: str | None) -> frozenset[str]:
    """Clusters of `backend` with at least one endpoint in `zone` (the gateway's own)."""
    if zone is None:
        return frozenset()
    return frozenset(
        target.cluster
        for target in backend.targets
        if any(endpoint.zone == zone for endpoint in target.endpoints)
    )


def _assemble(
    backend: Backend,
    states: Sequence[TargetHealth],
    *,
    local_clusters: AbstractSet[str],
    overprovisioning: float,
    panic_threshold: float,
) -> BackendView:
    groups = [
        list(group)
        for _, group in itertools.groupby(
            sorted(states, key=lambda s: s.target.priority), key=lambda s: s.target.priority
        )
    ]
    loads = tier_loads(
        [(sum(s.healthy for s in g), sum(len(s.flags) for s in g)) for g in groups],
        overprovisioning=overprovisioning,
        panic_threshold=panic_threshold,
    )
    factor = factor_percent(overprovisioning)
    tiers = tuple(
        _tier(group, index, panic, factor, local_clusters)
        for index, (group, panic) in enumerate(zip(groups, loads.panic, strict=True))
    )
    return BackendView(
        backend=backend,
        loads=loads,
        tiers=tiers,
        by_percent=tuple(
            tier for tier, load in zip(tiers, loads.loads, strict=True) for _ in range(load)
        )
        if loads.available
        else (),
        targets=tuple(s for g in groups for s in g),
        local_clusters=local_clusters,
        overprovisioning=overprovisioning,
        panic_threshold=panic_threshold,
    )


def _tier(
    states: Sequence[TargetHealth],
    index: int,
    panic: bool,
    factor: int,
    local_clusters: AbstractSet[str],
) -> TierChoice:
    priority = states[0].target.priority
    if panic:
        every = [
            (
                Pick(s.target, index, True, s.target.endpoints, (True,) * len(s.flags)),
                s.target.weight,
            )
            for s in states
            if s.flags
        ]
        return TierChoice(priority, 0, Spread.of(()), Spread.of(every))
    local: list[tuple[Pick, int]] = []
    remote: list[tuple[Pick, int]] = []
    local_counts = [0, 0]  # healthy, total
    remote_counts = [0, 0]
    for s in states:
        is_local = s.target.cluster in local_clusters
        counts = local_counts if is_local else remote_counts
        counts[0] += s.healthy
        counts[1] += len(s.flags)
        availability = health_percent(s.healthy, len(s.flags), factor)
        if availability == 0:
            continue
        healthy = tuple(e for e, ok in zip(s.target.endpoints, s.flags, strict=True) if ok)
        pick = Pick(s.target, index, False, healthy, s.flags)
        (local if is_local else remote).append((pick, s.target.weight * availability))
    share = _local_share(local_counts, remote_counts, factor)
    return TierChoice(priority, share, Spread.of(local), Spread.of(remote))


def _local_share(local: Sequence[int], remote: Sequence[int], factor: int) -> int:
    """Local clusters as a priority within the tier: Envoy's load split over [local, others]."""
    levels = [health_percent(h, t, factor) for h, t in (local, remote)]
    normalized = min(100, sum(levels))
    if levels[0] == 0:
        return 0
    return distribute(levels, normalized)[0]


# ---------------------------------------------------------------------------------------------
# Endpoint choice


def sample_two(count: int, roll_a: float, roll_b: float) -> tuple[int, int]:
    """Two distinct indexes below `count`, each ordered pair equally likely (count >= 2).

    With a single candidate both are 0. Rolls must be in [0, 1): `int(roll * n) < n` holds for
    every such float, so no clamping is needed.
    """
    first = int(roll_a * count)
    if count == 1:
        return first, first
    second = int(roll_b * (count - 1))
    if second >= first:
        second += 1
    return first, second


def least_request(
    candidates: Sequence[T], active: Callable[[T], int], *, roll_a: float, roll_b: float
) -> T:
    """Power of two choices: of two distinct sampled candidates, the one with fewer active
    requests; the first sampled on a tie. Needs at least one candidate."""
    # `sample_two`, inlined: this runs on every request.
    count = len(candidates)
    first = int(roll_a * count)
    a = candidates[first]
    if count == 1:
        return a
    second = int(roll_b * (count - 1))
    if second >= first:
        second += 1
    b = candidates[second]
    return b if active(b) < active(a) else a


def round_robin(candidates: Sequence[T], counter: int) -> T:
    """The candidate for turn `counter` (the gateway keeps one counter per cluster target)."""
    return candidates[counter % len(candidates)]


def _idle(endpoint: Endpoint) -> int:
    return 0


class Draw(NamedTuple):
    """Per-request inputs of an endpoint choice; each algorithm reads what it needs."""

    roll_a: float
    roll_b: float
    counter: int = 0  # round robin
    active: Callable[[Endpoint], int] = _idle  # least request: in-flight requests per endpoint
    key: str | int | None = None  # ring hash: the affinity key, None when the request has none
    ring: HashRing | None = None  # ring hash: built over pick.target.endpoints ids, in order


class EndpointPicker(Protocol):
    def __call__(self, pick: Pick, draw: Draw) -> Endpoint: ...


def _least_request(pick: Pick, draw: Draw) -> Endpoint:
    return least_request(pick.candidates, draw.active, roll_a=draw.roll_a, roll_b=draw.roll_b)


def _round_robin(pick: Pick, draw: Draw) -> Endpoint:
    return round_robin(pick.candidates, draw.counter)


def _ring_hash(pick: Pick, draw: Draw) -> Endpoint:
    # Without a key (a first visit, before the affinity cookie exists) there is nothing to be
    # consistent with: fall back to least request, as Envoy falls back to a random host.
    if draw.key is None or draw.ring is None:
        return _least_request(pick, draw)
    index = draw.ring.lookup(draw.key, pick.usable)
    assert index is not None, "a pick always has a usable endpoint"
    return pick.target.endpoints[index]


PICKERS: Mapping[Algorithm, EndpointPicker] = {
    Algorithm.LEAST_REQUEST: _least_request,
    Algorithm.ROUND_ROBIN: _round_robin,
    Algorithm.RING_HASH: _ring_hash,
}


def choose_endpoint(algorithm: Algorithm, pick: Pick, draw: Draw) -> Endpoint:
    """The endpoint for one attempt, by the route's algorithm.

    On the hot path, look the picker up once per route (`PICKERS[settings.algorithm]`) and call
    it directly: hashing an enum member costs about as much as the pick itself.
    """
    return PICKERS[algorithm](pick, draw)
