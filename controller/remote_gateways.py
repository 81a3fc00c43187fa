"""Gateways polling other controller replicas, as a leader counts them (Kubernetes mode). Pure
bookkeeping: `controller.gateway_registry` reads the entries from the hub, `Publisher` asks.

Each replica numbers versions by its own clock, so what a remote gateway serves travels as the
content checksum, which every replica computes alike. Times are the caller's clock (the
publisher's monotonic one): an entry's age on arrival is turned into a moment on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteGateway:
    """A gateway polling another controller replica, as that replica shares it."""

    id: str
    zone: str | None
    checksum: str | None  # of the table it serves; None = nothing (or nothing known) yet
    replica: str  # identity of the replica it polls
    seen_ago_s: float  # seconds since it was last seen, as of the hand-over (0 while polling)


class RemoteGateways:
    """The entries fed last, each with the moment it was last seen."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[RemoteGateway, float]] = {}
        # Leading, but the others' entries not read yet: no rollout may be done (a replica that
        # just won the lead must not count a step applied before it knows who else serves).
        self.unread = False

    def forget(self) -> None:
        self._entries = {}
        self.unread = True

    def feed(self, entries: Iterable[RemoteGateway], now: float) -> bool:
        """Replace the entries; True when a gateway came, went, or serves other content. A
        gateway two replicas report (it moved) is kept as the one that saw it last."""
        fresh: dict[str, tuple[RemoteGateway, float]] = {}
        for entry in entries:
            seen = now - max(0.0, entry.seen_ago_s)
            if entry.id not in fresh or seen > fresh[entry.id][1]:
                fresh[entry.id] = (entry, seen)
        before, self._entries, self.unread = self._entries, fresh, False
        return _content(before) != _content(fresh)

    def live(
        self, now: float, stale_after_s: float, seen_here: Callable[[str], float | None]
    ) -> dict[str, RemoteGateway]:
        """Entries seen within `stale_after_s`, except those `seen_here` (the moment this
        replica last saw the gateway, None if never) saw at the same time or later."""
        return {k: e for k, (e, _) in self.sightings(now, stale_after_s, seen_here).items()}

    def sightings(
        self, now: float, stale_after_s: float, seen_here: Callable[[str], float | None]
    ) -> dict[str, tuple[RemoteGateway, float]]:
        """`live`'s entries with the moment each was last seen (the gateway list shows it)."""
        out: dict[str, tuple[RemoteGateway, float]] = {}
        for gateway_id, (entry, seen) in self._entries.items():
            if now - seen > stale_after_s:
                continue
            here = seen_here(gateway_id)
            if here is None or here < seen:
                out[gateway_id] = (entry, seen)
        return out


def _content(entries: dict[str, tuple[RemoteGateway, float]]) -> dict[str, tuple[str | None, str]]:
    return {k: (e.checksum, e.replica) for k, (e, _) in entries.items()}
