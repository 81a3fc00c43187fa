"""Snapshot publishing: the latest snapshot, the gateway registry and rollouts. No HTTP here.

The `Publisher` holds what the snapshot API (`controller.snapshot_api`, which documents the wire
protocol) serves: the latest snapshot and the last few as delta bases, long-poll waiting for a
newer one, and the registry of gateways that poll — id, zone, the version and content checksum
they apply, their metrics URL — from which `rollout` says whether every live gateway applies a
version (what a release step waits for). In Kubernetes mode replicas share their gateways by
checksum (`shared_entries`, `controller.gateway_registry`) and the leader counts the others' in
its rollouts and lists them with its own (`feed_remote`).

In embedded mode (`fleetgate run`) the gateway is in the same process: `Publisher.attach` hands
each new table to its sink directly and records the applied version like any other gateway.

Versions are assigned by `controller.reconcile`; the publisher only insists that they increase.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Collection

from controller.published import GatewayView, Rollout, Snapshot
from controller.remote_gateways import RemoteGateway, RemoteGateways
from policies import delta
from policies import snapshot as wire
from policies.table import RoutingTable

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class PublishSettings:
    """Snapshot API settings (controller process settings)."""

    max_wait_s: float = 30.0  # longest long-poll a gateway may ask for; longer asks are capped
    default_wait_s: float = 25.0  # long-poll length when the request has no `wait`
    stale_after_s: float = 60.0  # a gateway not seen for this long stops counting as live
    forget_after_s: float = 3600.0  # ... and is dropped from the registry after this long
    max_gateways: int = 10_000  # registry cap; polls from further new ids are served unrecorded
    history: int = 256  # published versions remembered to compute each gateway's lag
    delta_bases: int = 16  # recent snapshots a delta can start from (their digests are kept)
    token: str | None = None  # when set, gateways must send `Authorization: Bearer <token>`


@dataclasses.dataclass(slots=True)
class _Gateway:
    id: str
    zone: str | None
    applied: int = 0
    checksum: str | None = None  # of the table it serves, as it reported it (None: not sent)
    last_seen: float = 0.0  # monotonic
    polls: int = 0  # open long-polls
    local: bool = False
    metrics_url: str | None = None


LocalApply = Callable[[RoutingTable], object]


class Publisher:
    """Holds the latest snapshot, wakes long-polls, and tracks which gateway applied what.

    All methods run on the controller's event loop; `publish` is synchronous so the reconciler
    can call it without yielding between "compiled" and "visible".
    """

    def __init__(
        self,
        settings: PublishSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or PublishSettings()
        self._clock = clock
        self._latest: Snapshot | None = None
        # checksum -> digests of the recent snapshots a delta may start from, oldest first
        self._bases: collections.OrderedDict[str, wire.Digests] = collections.OrderedDict()
        self._deltas: dict[str, bytes | None] = {}  # base checksum -> delta to the latest
        self.served: collections.Counter[str] = collections.Counter()  # "full" / "delta" answers
        self._published_at: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=max(1, self.settings.history)
        )
        # (version, checksum) of the same published versions: maps other replicas' checksums
        # onto our versions, and our versions onto checksums for them
        self._published: collections.deque[tuple[int, str]] = collections.deque(
            maxlen=max(1, self.settings.history)
        )
        self._remote = RemoteGateways()
        self._gateways: dict[str, _Gateway] = {}
        self._locals: dict[str, LocalApply] = {}
        self._new_version = asyncio.Event()
        self._applied_changed = asyncio.Event()
        self._closing = False

    @property
    def latest(self) -> Snapshot | None:
        return self._latest

    @property
    def closing(self) -> bool:
        return self._closing

    def publish(self, snapshot: Snapshot | RoutingTable) -> Snapshot:
        """Make `snapshot` the one every gateway gets next; versions must strictly increase."""
        if isinstance(snapshot, RoutingTable):
            snapshot = Snapshot.encode(snapshot)
        live = self._latest
        if live is not None and snapshot.version <= live.version:
            raise ValueError(
                f"snapshot version must increase, got v{snapshot.version} after v{live.version}"
            )
        self._latest = snapshot
        self._bases[snapshot.checksum] = snapshot.parts.digests
        self._bases.move_to_end(snapshot.checksum)
        while len(self._bases) > max(1, self.settings.delta_bases):
            self._bases.popitem(last=False)
        self._deltas.clear()
        self._published_at.append((snapshot.version, self._clock()))
        self._published.append((snapshot.version, snapshot.checksum))
        log.info(
            "published snapshot version=%d checksum=%s bytes=%d",
            snapshot.version,
            snapshot.checksum[:12],
            len(snapshot.body),
        )
        woken, self._new_version = self._new_version, asyncio.Event()
        woken.set()
        for gateway_id, apply in list(self._locals.items()):
            self._apply_local(gateway_id, apply, snapshot.table)
        return snapshot

    def attach(self, gateway_id: str, zone: str | None, apply: LocalApply) -> None:
        """Register an in-process gateway: `apply(table)` is called with every new table.

        It gets the latest table at once if there is one (level-triggered). A raise from `apply`
        means "refused": logged, and the version is not recorded as applied.
        """
        self._locals[gateway_id] = apply
        self._gateways[gateway_id] = _Gateway(gateway_id, zone, last_seen=self._clock(), local=True)
        if self._latest is not None:
            self._apply_local(gateway_id, apply, self._latest.table)

    def detach(self, gateway_id: str) -> None:
        self._locals.pop(gateway_id, None)
        self._gateways.pop(gateway_id, None)

    def _apply_local(self, gateway_id: str, apply: LocalApply, table: RoutingTable) -> None:
        try:
            apply(table)
        # The sink belongs to the data plane; whatever it raises must not stop publishing to
        # the rest of the fleet (the gateway keeps its last good table).
        except Exception:
            log.exception(
                "local gateway refused table gateway=%s version=%d", gateway_id, table.version
            )
            return
        self.record(gateway_id, None, applied=table.version, local=True, checksum=table.checksum)

    def record(
        self,
        gateway_id: str,
        zone: str | None,
        *,
        applied: int | None,
        local: bool = False,
        metrics_url: str | None = None,
        checksum: str | None = None,
    ) -> None:
        """Note that `gateway_id` was seen now, and what it applied (None = not reported)."""
        now = self._clock()
        gateway = self._gateways.get(gateway_id)
        if gateway is None:
            self._forget_stale(now)
            if len(self._gateways) >= self.settings.max_gateways:
                return
            gateway = self._gateways[gateway_id] = _Gateway(gateway_id, zone, local=local)
            log.info("gateway joined id=%s zone=%s", gateway_id, zone)
        gateway.last_seen = now
        if zone is not None:
            gateway.zone = zone
        if metrics_url is not None:
            gateway.metrics_url = metrics_url
        if applied is not None:  # a poll sends the checksum exactly when it holds a table
            gateway.checksum = checksum
        if applied is not None and applied != gateway.applied:
            gateway.applied = applied
            woken, self._applied_changed = self._applied_changed, asyncio.Event()
            woken.set()

    def _forget_stale(self, now: float) -> None:
        limit = self.settings.forget_after_s
        for gateway in list(self._gateways.values()):
            if not gateway.local and gateway.polls == 0 and now - gateway.last_seen > limit:
                del self._gateways[gateway.id]
                log.info("gateway forgotten id=%s", gateway.id)

    def _is_live(self, gateway: _Gateway, now: float) -> bool:
        return (
            gateway.local
            or gateway.polls > 0
            or now - gateway.last_seen <= self.settings.stale_after_s
        )

    def gateways(self) -> tuple[GatewayView, ...]:
        """Every gateway in the registry and, on the leader, every other replica's gateway its
        rollouts count (`feed_remote`), sorted by id. A gateway known both here and there is
        listed once, where it was seen last (as `rollout` counts it)."""
        now = self._clock()
        self._forget_stale(now)
        remote = self._remote.sightings(now, self.settings.stale_after_s, self._seen_here)
        views = [self._view(g, now) for g in self._gateways.values() if g.id not in remote]
        views += [self._remote_view(entry, seen, now) for entry, seen in remote.values()]
        return tuple(sorted(views, key=lambda view: view.id))

    def _view(self, gateway: _Gateway, now: float) -> GatewayView:
        behind, lag_s = self._lag(gateway.applied, now)
        return GatewayView(
            id=gateway.id,
            zone=gateway.zone,
            applied=gateway.applied,
            behind=behind,
            lag_s=lag_s,
            last_seen_s=round(now - gateway.last_seen, 3),
            polling=gateway.polls > 0,
            live=self._is_live(gateway, now),
            local=gateway.local,
            metrics_url=gateway.metrics_url,
            checksum=gateway.checksum,
        )

    def _remote_view(self, entry: RemoteGateway, seen: float, now: float) -> GatewayView:
        """Another replica's gateway, by the version `rollout` counts it at; `polling` as of
        that replica's last write, and live because it is listed only while it counts."""
        applied = self._version_of(entry.checksum)
        behind, lag_s = self._lag(applied, now)
        return GatewayView(
            id=entry.id,
            zone=entry.zone,
            applied=applied,
            behind=behind,
            lag_s=lag_s,
            last_seen_s=round(now - seen, 3),
            polling=entry.seen_ago_s == 0.0,
            live=True,
            local=False,
            checksum=entry.checksum,
            replica=entry.replica,
        )

    def _lag(self, applied: int, now: float) -> tuple[int, float]:
        """(published versions newer than `applied`, seconds since the first was published)."""
        missing = [at for version, at in self._published_at if version > applied]
        return len(missing), round(now - missing[0], 3) if missing else 0.0

    def metrics_urls(self) -> tuple[str, ...]:
        """The metrics URLs live gateways reported, sorted (built-in analysis scrapes these)."""
        now = self._clock()
        return tuple(
            sorted(
                g.metrics_url
                for g in self._gateways.values()
                if g.metrics_url and self._is_live(g, now)
            )
        )

    def rollout(self, version: int, gateways: Collection[str] | None = None) -> Rollout:
        """Which of `gateways` (default: every live one, other replicas' included) serve
        `version` or newer.

        A gateway another replica reported (`feed_remote`) counts by checksum: applied when the
        newest version we published with that content is `version` or newer. Content we never
        published (or no longer remember) is pending. Where a gateway is known here and there,
        the fresher sighting counts: it moved."""
        now = self._clock()
        remote = self._remote.live(now, self.settings.stale_after_s, self._seen_here)
        if gateways is None:
            gateways = {g.id for g in self._gateways.values() if self._is_live(g, now)}
            gateways |= remote.keys()
        applied: list[str] = []
        pending: list[str] = []
        for gateway_id in sorted(gateways):
            there = remote.get(gateway_id)
            if there is not None:
                done = self._version_of(there.checksum) >= version
            else:
                gateway = self._gateways.get(gateway_id)
                done = gateway is not None and gateway.applied >= version
            (applied if done else pending).append(gateway_id)
        return Rollout(version, tuple(applied), tuple(pending), self._remote.unread)

    # -- the registry shared between replicas (controller.gateway_registry) -------------------

    def shared_entries(self, replica: str) -> tuple[RemoteGateway, ...]:
        """The live gateways polling this replica, as other replicas read them: by checksum (the
        one the gateway reported, else the one we published as the version it applied)."""
        now = self._clock()
        checksums = {version: checksum for version, checksum in self._published}
        return tuple(
            RemoteGateway(
                id=g.id,
                zone=g.zone,
                checksum=g.checksum or checksums.get(g.applied),
                replica=replica,
                seen_ago_s=0.0 if g.polls > 0 else round(now - g.last_seen, 3),
            )
            for g in sorted(self._gateways.values(), key=lambda g: g.id)
            if self._is_live(g, now)
        )

    def forget_remote(self) -> None:
        """Drop the other replicas' gateways; no rollout is done until `feed_remote` brings
        them again (see `RemoteGateways.unread`)."""
        self._remote.forget()

    def feed_remote(self, entries: Collection[RemoteGateway]) -> None:
        """Replace the gateways other replicas reported (the leader's rollouts count them)."""
        if self._remote.feed(entries, self._clock()):
            woken, self._applied_changed = self._applied_changed, asyncio.Event()
            woken.set()

    def _seen_here(self, gateway_id: str) -> float | None:
        gateway = self._gateways.get(gateway_id)
        if gateway is None:
            return None
        return self._clock() if gateway.polls > 0 else gateway.last_seen

    def _version_of(self, checksum: str | None) -> int:
        """The newest version we published with this content; 0 when none we remember."""
        for version, published in reversed(self._published):
            if published == checksum:
                return version
        return 0

    async def wait_applied(
        self, version: int, gateways: Collection[str] | None = None, *, timeout_s: float
    ) -> Rollout:
        """Wait until every gateway in `gateways` (default: every live one) applied `version`.

        Returns the rollout either way; on timeout `.done` is False and `.pending` says who is
        behind. A release step calls this before it starts measuring.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not (rollout := self.rollout(version, gateways)).done:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # Re-check at least every second: gateways also leave the live set by going quiet,
            # which no event announces.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 1.0)):
                    await self._applied_changed.wait()
        return rollout

    async def wait_newer(
        self, after: int, *, timeout_s: float, checksum: str | None = None
    ) -> Snapshot | None:
        """The latest snapshot once it is newer than what a gateway holds; None on timeout or
        shutdown. Newer: a version above `after`, or (with the `checksum` of the gateway's table)
        other content that is not version `after` itself (see "Replicas are interchangeable")."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    latest = self._latest
                    if latest is not None and (
                        latest.version > after
                        or (
                            checksum is not None
                            and latest.checksum != checksum
                            and latest.version != after
                        )
                    ):
                        return latest
                    if self._closing:
                        return None
                    await self._new_version.wait()
        except TimeoutError:
            return None

    def delta(self, snapshot: Snapshot, base: str) -> bytes | None:
        """`snapshot` as a delta from the table with checksum `base`, when the publisher still
        knows that table's digests and a delta can express the change; else None."""
        if snapshot is not self._latest:
            return None
        if base not in self._deltas:
            digests = self._bases.get(base)
            self._deltas[base] = (
                None
                if digests is None or base == snapshot.checksum
                else delta.encode_delta(digests, snapshot.parts, version=snapshot.version)
            )
        return self._deltas[base]

    def close(self) -> None:
        """Release every open long-poll (304, `Connection: close`) so the server drains quickly."""
        self._closing = True
        woken, self._new_version = self._new_version, asyncio.Event()
        woken.set()

    def begin_poll(
        self,
        gateway_id: str,
        zone: str | None,
        applied: int | None,
        metrics_url: str | None = None,
        checksum: str | None = None,
    ) -> None:
        self.record(gateway_id, zone, applied=applied, metrics_url=metrics_url, checksum=checksum)
        gateway = self._gateways.get(gateway_id)
        if gateway is not None:
            gateway.polls += 1

    def end_poll(self, gateway_id: str) -> None:
        gateway = self._gateways.get(gateway_id)
        if gateway is not None:
            gateway.polls = max(0, gateway.polls - 1)
            gateway.last_seen = self._clock()
