"""What the controller publishes, as values: a snapshot, a gateway's view, a rollout.

Apart from `controller.publishing`'s `Publisher` (the mutable registry, long-polls and their
bookkeeping) because the reconciler, the release records, the benchmarks and the tests build or
read these without needing a publisher: a `Snapshot` is encoded off the event loop before it is
published, and a `Rollout` is the answer a release step waits for.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from policies import snapshot as wire
from policies.table import RoutingTable


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """One published table and its wire form, encoded once and served to every gateway."""

    table: RoutingTable
    body: bytes  # `policies.snapshot.encode(table)`: the JSON of `dump(table)`
    parts: wire.Parts  # the per-part JSON and digests `body` was joined from (for deltas)

    @property
    def version(self) -> int:
        return self.table.version

    @property
    def checksum(self) -> str:
        return self.table.checksum

    @classmethod
    def encode(cls, table: RoutingTable) -> Snapshot:
        """Dump and serialise `table`. CPU-bound and thread-safe: callers may run it off-loop.

        Right after `compile_table` this reuses the canonical JSON its checksum was computed from.
        """
        return cls.from_parts(table, wire.parts_of(table))

    @classmethod
    def from_parts(cls, table: RoutingTable, parts: wire.Parts) -> Snapshot:
        """`table` whose wire parts are known (`policies.incremental.Compiled`)."""
        return cls(table, wire.encode(table, parts), parts)

    def data(self) -> dict[str, Any]:
        """The wire dict, decoded again (for callers that want `publish(dict)`-style access)."""
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayView:
    """One gateway as `/v1/gateways` and `fleetgate status` show it."""

    id: str
    zone: str | None
    applied: int  # version the gateway serves; 0 = nothing yet
    behind: int  # published versions newer than `applied` (capped by the history length)
    lag_s: float  # seconds since the oldest version it lacks was published; 0 when current
    last_seen_s: float  # seconds since its last request began or ended
    polling: bool  # a long-poll from it is open right now
    live: bool  # polling, or seen within `stale_after_s`
    local: bool  # in-process (embedded) gateway
    metrics_url: str | None = None  # its admin /metrics, as it reported it
    checksum: str | None = None  # of what it serves, as reported (None: not sent, or nothing)
    # The other replica it polls (leader only). `applied` is then our newest version with its
    # content, 0 when we have none.
    replica: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rollout:
    """How far one version has spread: the "3/3 gateways on v42" answer."""

    version: int
    applied: tuple[str, ...]  # gateway ids serving `version` or newer
    pending: tuple[str, ...]  # gateway ids still on something older (or never seen)
    others_unread: bool = False  # a new leader has not read the other replicas' gateways yet

    @property
    def done(self) -> bool:
        """True when no gateway is pending (vacuously so with no gateways: check `total`)."""
        return not self.pending and not self.others_unread

    @property
    def total(self) -> int:
        return len(self.applied) + len(self.pending)

    def __str__(self) -> str:
        summary = f"{len(self.applied)}/{self.total} gateways on v{self.version}"
        return summary + (" (other replicas' not read yet)" if self.others_unread else "")
