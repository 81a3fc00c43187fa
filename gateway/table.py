"""The live routing table. Swapped whole; readers take one reference per request and never lock.

No I/O. A request reads `holder.current` once when it is routed and keeps that table's objects
(rules, backends, endpoints) until it finishes, so a swap never changes a request in flight
(DESIGN.md §7).
"""

from __future__ import annotations

from gateway.errors import StaleTableError
from policies.table import RoutingTable


class TableHolder:
    __slots__ = ("current", "previous")

    def __init__(self, initial: RoutingTable) -> None:
        self.current = initial  # read once per request; only `swap` assigns it
        self.previous: RoutingTable | None = None  # last-known-good before the live one

    def swap(self, candidate: RoutingTable) -> RoutingTable:
        """Install `candidate`; return the table it replaced (kept as last-known-good)."""
        live = self.current
        if candidate.version <= live.version:
            raise StaleTableError(
                f"table v{candidate.version} is not newer than live v{live.version}"
            )
        self.current = candidate
        self.previous = live
        return live
