"""Hot-path counters: plain integers the protocols bump and the admin port reads. No I/O.

Incrementing an attribute costs a few tens of nanoseconds; a prometheus-client call per request
costs microseconds (DESIGN.md §2). The metrics exporter reads these at scrape time and is the only
place that knows about label names and metric types.
"""

from __future__ import annotations

from gateway.errors import REASONS


class Counters:
    """Monotonic totals since the process started, plus a few gauges (marked)."""

    __slots__ = (
        "circuit_open",
        "downstream_connections",
        "downstream_open",
        "downstream_refused",
        "health_transitions",
        "local_replies",
        "mirror_dropped",
        "mirror_failed",
        "mirror_sent",
        "outlier_ejections",
        "quota_rejections",
        "requests",
        "responses",
        "retries",
        "retries_exhausted",
        "upgrades",
        "upstream_connect_failed",
        "upstream_connects",
        "upstream_open",
        "upstream_pool_hits",
        "upstream_reset",
        "upstream_stale_retries",
        "upstream_timeouts",
    )

    def __init__(self) -> None:
        self.requests = 0  # requests parsed (including ones answered locally)
        self.responses = [0, 0, 0, 0, 0, 0]  # by status class: index 1..5 = 1xx..5xx (final only)
        self.local_replies: dict[str, int] = dict.fromkeys(REASONS, 0)  # by reason code
        self.downstream_connections = 0  # accepted client connections
        self.downstream_open = 0  # gauge: client connections open now
        self.downstream_refused = 0  # closed at accept: over max_downstream_connections
        self.upstream_connects = 0  # new upstream connections established
        self.upstream_open = 0  # gauge: upstream connections open now (idle + busy)
        self.upstream_pool_hits = 0  # requests sent on a reused idle connection
        self.upstream_connect_failed = 0
        self.upstream_timeouts = 0
        self.upstream_reset = 0
        self.upstream_stale_retries = 0  # requests re-sent after a reused connection closed
        self.upgrades = 0  # 101 Switching Protocols spliced
        self.mirror_sent = 0
        self.mirror_dropped = 0  # skipped: body over the cap, or too many mirrors in flight
        self.mirror_failed = 0  # mirror upstream failed (never affects the real request)
        self.health_transitions = 0  # an active check moved an endpoint in or out of rotation
        self.outlier_ejections = 0  # endpoints ejected by consecutive gateway errors
        self.retries = 0  # upstream attempts after the first (gateway.retrying)
        self.retries_exhausted = 0  # a retriable failure that the budget or body size refused
        self.quota_rejections = 0  # 429s from tenant rate or concurrency quotas
        self.circuit_open = 0  # 503s from a backend's circuit breaker

    def count_reply(self, reason: str) -> None:
        self.local_replies[reason] = self.local_replies.get(reason, 0) + 1
