"""Glue between a parsed request and the pure decision: request head, decide, endpoint pick.

No I/O; this is the one place the data plane draws randomness (`roll`) for the pure functions in
`policies`. The endpoint choice goes through an `EndpointPicker`, the seam where balancing,
health and outlier state plug in: the protocols never choose endpoints themselves.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from gateway.headers import pairs
from gateway.table import TableHolder
from policies import balancing, hashring, matching, retries
from policies.matching import Decision, RequestHead
from policies.model import Algorithm, TrafficSettings
from policies.table import Backend, Endpoint


class HeaderView(Mapping[str, str]):
    """The request headers as `RequestHead.headers` promises them (lower-cased names, repeated
    values comma-joined), built only if a rule actually looks at a header.

    Most rules match on host and path alone, so the dict is usually never built.
    """

    __slots__ = ("_host", "_map", "_raw")

    def __init__(self, lines: list[bytes], host: bytes | None) -> None:
        self._raw = lines
        self._host = host
        self._map: dict[str, str] | None = None

    def _build(self) -> dict[str, str]:
        built: dict[str, str] = {}
        if self._host is not None:
            built["host"] = self._host.decode("latin-1")
        for name, value in pairs(self._raw):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            seen = built.get(key)
            built[key] = text if seen is None else f"{seen},{text}"
        self._map = built
        return built

    def __getitem__(self, key: str) -> str:
        return (self._map if self._map is not None else self._build())[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._map if self._map is not None else self._build())

    def __len__(self) -> int:
        return len(self._map if self._map is not None else self._build())

    def __contains__(self, key: object) -> bool:
        return key in (self._map if self._map is not None else self._build())


class EndpointPicker(Protocol):
    """Chooses the endpoint for one forwarded request (tiers, weights, health, affinity)."""

    def pick(
        self, backend: Backend, settings: TrafficSettings, key: str | None = None
    ) -> Endpoint | None:
        """An endpoint of `backend`, or None when nothing can take the request (503).

        `key` is the client's affinity key (`gateway.affinity`): the same key gets the same
        cluster and endpoint for as long as they stay in rotation. The request itself is not
        an argument: most requests are decided without building a `RequestHead`
        (`policies.matching.decide_path`); what a pick needs from it comes as `key`.
        """

    def repick(
        self, backend: Backend, settings: TrafficSettings, tried: Sequence[Endpoint]
    ) -> Endpoint | None:
        """The endpoint for a retry after `tried` (the last one failed): see `policies.retries`."""

    def forget(self) -> None:
        """Drop cached per-backend state (the table was swapped)."""


class HealthView(Protocol):
    """The gateway's opinion of endpoint health (active checks, outlier ejection).

    `version` changes whenever any endpoint's health does, so pickers can cache per-backend
    views between changes.
    """

    @property
    def version(self) -> int: ...

    def healthy(self, endpoint: Endpoint) -> bool: ...


class AllHealthy:
    """Health before health checking exists: every endpoint the table says is ready is healthy."""

    version = 0

    def healthy(self, endpoint: Endpoint) -> bool:
        return True


def _idle(endpoint: Endpoint) -> int:
    return 0


class BalancingPicker:
    """`policies.balancing` on live traffic: tier (priority load, panic), cluster by weight,
    endpoint by the rule's algorithm (least request by default, using in-flight counts).

    A `BackendView` is built once per backend object and health version, so a request costs two
    bisections and the endpoint choice. Ring hash has no affinity key until session affinity
    lands, so it falls back to least request, as `policies.balancing` documents.
    """

    __slots__ = ("_rings", "_turns", "_version", "_views", "active", "health", "zone")

    def __init__(
        self,
        health: HealthView,
        active: Callable[[Endpoint], int] = _idle,
        *,
        zone: str | None = None,
    ) -> None:
        self.health = health
        self.active = active
        # The gateway's own zone: clusters with endpoints there keep a tier's traffic while
        # healthy enough (Envoy's locality-weighted failover; `policies.balancing`).
        self.zone = zone
        # id(backend) -> (backend, its view, the only endpoint it can pick or None)
        self._views: dict[int, tuple[Backend, balancing.BackendView, Endpoint | None]] = {}
        self._turns: dict[int, int] = {}
        self._rings: dict[int, tuple[object, hashring.HashRing]] = {}  # id(target) -> ring
        self._version = health.version

    def pick(
        self, backend: Backend, settings: TrafficSettings, key: str | None = None
    ) -> Endpoint | None:
        entry = self._entry(backend)
        only = entry[2]
        if only is not None:
            return only  # one reachable endpoint: no rolls, nothing to compare
        view = entry[1]
        if key is not None:
            return self._sticky(view, key)
        roll = random.random
        pick = view.pick(tier_roll=roll(), cluster_roll=roll())
        if pick is None:
            return None
        algorithm = settings.algorithm
        if algorithm is Algorithm.LEAST_REQUEST:
            return balancing.least_request(
                pick.candidates, self.active, roll_a=roll(), roll_b=roll()
            )
        target = id(pick.target)
        turn = self._turns.get(target, 0)
        self._turns[target] = turn + 1
        draw = balancing.Draw(roll(), roll(), counter=turn, active=self.active)
        return balancing.choose_endpoint(algorithm, pick, draw)

    def repick(
        self, backend: Backend, settings: TrafficSettings, tried: Sequence[Endpoint]
    ) -> Endpoint | None:
        """Another endpoint of the same cluster first, then another cluster (next tier when the
        tried ones were all of the first), then anything again (`policies.retries.next_pick`)."""
        _, view, only = self._entry(backend)
        if only is not None:
            return only
        roll = random.random
        failed = tried[-1].cluster
        last = next(
            (p for tier in view.tiers for p in tier.picks if p.target.cluster == failed), None
        )
        if last is None:
            clusters = frozenset(endpoint.cluster for endpoint in tried)
            pick = view.excluding(clusters).pick(tier_roll=roll(), cluster_roll=roll())
            if pick is None:
                pick = view.pick(tier_roll=roll(), cluster_roll=roll())
        else:
            pick = retries.next_pick(view, last, tried, tier_roll=roll(), cluster_roll=roll())
        if pick is None:
            return None
        return balancing.least_request(pick.candidates, self.active, roll_a=roll(), roll_b=roll())

    def _sticky(self, view: balancing.BackendView, key: str) -> Endpoint | None:
        """Tier and cluster by the key's fixed roll, endpoint on the cluster's hash ring."""
        roll = hashring.key_roll(key)
        pick = view.pick(tier_roll=roll, cluster_roll=roll)
        if pick is None:
            return None
        target = pick.target
        cached = self._rings.get(id(target))
        if cached is None or cached[0] is not target:
            ring = hashring.HashRing.build([endpoint.id for endpoint in target.endpoints])
            if len(self._rings) >= _MAX_VIEWS:
                self._rings.clear()
            cached = self._rings[id(target)] = (target, ring)
        index = cached[1].lookup(key, pick.usable)
        return target.endpoints[index] if index is not None else pick.candidates[0]

    def _entry(self, backend: Backend) -> tuple[Backend, balancing.BackendView, Endpoint | None]:
        health = self.health
        if health.version != self._version:
            self.forget()
            self._version = health.version
        entry = self._views.get(id(backend))
        if entry is None or entry[0] is not backend:
            entry = self._view(backend)
        return entry

    def _view(self, backend: Backend) -> tuple[Backend, balancing.BackendView, Endpoint | None]:
        if len(self._views) >= _MAX_VIEWS:
            self.forget()
        local = balancing.clusters_in_zone(backend, self.zone) if self.zone else frozenset()
        view = balancing.view_backend(backend, self.health.healthy, local_clusters=local)
        only = None
        if sum(len(target.endpoints) for target in backend.targets) == 1:
            # One endpoint in the whole backend: whatever the rolls, a pick is that endpoint.
            pick = view.pick(tier_roll=0.0, cluster_roll=0.0)
            only = pick.candidates[0] if pick is not None else None
        entry = (backend, view, only)
        self._views[id(backend)] = entry
        return entry

    def forget(self) -> None:
        self._views.clear()
        self._turns.clear()
        self._rings.clear()


_MAX_VIEWS = 4096  # cached backend views; a table swap or health change also clears them


class Router:
    """Decides a request against the live table and picks its endpoint."""

    __slots__ = ("holder", "picker")

    def __init__(self, holder: TableHolder, picker: EndpointPicker) -> None:
        self.holder = holder
        self.picker = picker

    def decide_path(self, host: str, path: str) -> Decision | None:
        """The decision when host and path settle it (`policies.matching.decide_path`)."""
        return matching.decide_path(self.holder.current, host, path)

    def decide(self, head: RequestHead) -> Decision:
        return matching.decide(self.holder.current, head, roll=random.random())

    def pick(
        self, backend: Backend, settings: TrafficSettings, key: str | None = None
    ) -> Endpoint | None:
        return self.picker.pick(backend, settings, key)

    def repick(
        self, backend: Backend, settings: TrafficSettings, tried: Sequence[Endpoint]
    ) -> Endpoint | None:
        return self.picker.repick(backend, settings, tried)
