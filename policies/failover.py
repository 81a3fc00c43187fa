"""Priority failover arithmetic: Envoy's priority load with overprovisioning and panic. Pure.

Tiers are given as `(healthy, total)` endpoint counts, most preferred first. Each tier's health
is `min(100, 1.4 * healthy %)`; while the tiers' health adds up to 100 or more, each keeps its
health of the traffic and spills the rest to the next. Below that ("normalised health" under
100) the healths are scaled up to 100 and each tier whose plain healthy share is under the panic
threshold (50 %) routes to all of its endpoints; when every tier panics, traffic spreads by
endpoint count ("total panic"). `policies.balancing` applies the result to a backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

DEFAULT_OVERPROVISIONING = 1.4
DEFAULT_PANIC_THRESHOLD = 50.0  # percent; 0 disables panic


@dataclasses.dataclass(frozen=True, slots=True)
class TierLoads:
    """How traffic splits over priority tiers, most preferred first."""

    loads: tuple[int, ...]  # percent per tier; sums to 100 whenever there is a tier
    panic: tuple[bool, ...]  # tier routes to all of its endpoints, healthy or not
    health: tuple[int, ...]  # min(100, overprovisioning * healthy %), integer as in Envoy
    normalized_health: int  # min(100, sum(health))
    available: bool  # False: nothing may be sent anywhere (503 no_healthy_backend)

    @property
    def total_panic(self) -> bool:
        return bool(self.panic) and all(self.panic)


def factor_percent(overprovisioning: float) -> int:
    """The factor as Envoy carries it: an integer percent (1.4 -> 140)."""
    return round(overprovisioning * 100)


def health_percent(healthy: int, total: int, factor: int) -> int:
    """`min(100, factor * healthy / total)` in integers, 0 for no endpoints.

    Integer division as in Envoy, which is why 71 % healthy gives 99 and not 99.4.
    """
    return min(100, factor * healthy // total) if total > 0 else 0


def distribute(health: Sequence[int], normalized: int) -> tuple[int, ...]:
    """Envoy's `distributeLoad`: greedy shares of 100, rounding leftovers to the first available."""
    remaining = 100
    loads = []
    for value in health:
        load = min(remaining, value * 100 // normalized)
        loads.append(load)
        remaining -= load
    if remaining:
        first = next(i for i, value in enumerate(health) if value > 0)
        loads[first] += remaining
    return tuple(loads)


def tier_loads(
    health: Sequence[tuple[int, int]],
    *,
    overprovisioning: float = DEFAULT_OVERPROVISIONING,
    panic_threshold: float = DEFAULT_PANIC_THRESHOLD,
) -> TierLoads:
    """Envoy's priority load for tiers given as `(healthy, total)` endpoint counts.

    Follows Envoy's source (`LoadBalancerBase::recalculatePerPriorityState`,
    `recalculatePerPriorityPanic`, `recalculateLoadInTotalPanic`). Where Envoy's docs and source
    disagree, the source wins: with every endpoint unhealthy and panic enabled, the docs say "all
    traffic to P=0" but Envoy spreads it by endpoint count like any total panic (its own unit
    test `PrioritySelection` expects 50/50 for one dead host per tier). Both agree when P0 is
    the only tier with endpoints. With panic disabled and nothing healthy, P0 nominally gets 100
    (Envoy keeps the sum at 100) and `available` is False.
    """
    count = len(health)
    if count == 0:
        return TierLoads((), (), (), 0, available=False)
    factor = factor_percent(overprovisioning)
    levels = tuple(health_percent(healthy, total, factor) for healthy, total in health)
    normalized = min(100, sum(levels))
    threshold = min(100.0, panic_threshold)
    all_to_first = (100,) + (0,) * (count - 1)
    if normalized == 0 and threshold <= 0:
        return TierLoads(all_to_first, (False,) * count, levels, 0, available=False)
    # Panic is ignored while normalised health is 100: the lower tiers can absorb the load.
    panic = tuple(
        normalized < 100 and (100.0 * healthy / total if total > 0 else 0.0) < threshold
        for healthy, total in health
    )
    if not all(panic):
        if normalized == 0:
            # Only reachable with a threshold below 1/1.4 %: too few healthy endpoints to carry
            # any load, yet not in panic. Envoy leaves the loads undefined here; serve nothing.
            return TierLoads(all_to_first, panic, levels, 0, available=False)
        return TierLoads(distribute(levels, normalized), panic, levels, normalized, True)
    hosts = [total for _, total in health]
    total_hosts = sum(hosts)
    if total_hosts == 0:
        return TierLoads(all_to_first, panic, levels, normalized, available=False)
    return TierLoads(_distribute_by_hosts(hosts, total_hosts), panic, levels, normalized, True)


def _distribute_by_hosts(hosts: Sequence[int], total_hosts: int) -> tuple[int, ...]:
    loads = [100 * count // total_hosts for count in hosts]
    first = next(i for i, count in enumerate(hosts) if count > 0)
    loads[first] += 100 - sum(loads)
    return tuple(loads)
