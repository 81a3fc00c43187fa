"""Where a new routing table enters the data plane: the `TableSink` capability. No I/O.

Two producers feed a sink, and the gateway does not care which:

* `gateway.subscriber.Subscriber` (a gateway replica): long-polls the controller's snapshot API,
  verifies the JSON with `policies.snapshot` (a full snapshot) or applies a verified delta to the
  table it holds with `policies.delta` (only changed spreads: the table handed over is still a
  whole new table, sharing the unchanged objects with the live one), and calls `apply`.
* The embedded mode (`fleetgate run`): the controller's `Publisher` calls `apply` directly with the
  table it just compiled, in the same process and event loop, with no JSON round trip. The
  composition root wires it (`publisher.attach(gateway_id, zone, sink.apply)`), because neither
  plane may import the other; the controller only sees a `Callable[[RoutingTable], object]`.

`apply` is synchronous and cheap (a whole-table swap): it runs on the event loop. It raises when it
refuses the table (for example a version that is not newer than the live one); the producer logs
that and does not count the version as applied.
"""

from __future__ import annotations

from typing import Protocol

from policies.table import RoutingTable


class TableSink(Protocol):
    """Something that installs a whole routing table (the gateway's table holder)."""

    def apply(self, table: RoutingTable) -> None:
        """Install `table` whole; raise to refuse it (the live table then stays)."""
