"""Gateway metrics: a hot-path recorder of plain integers, and a Prometheus collector that turns
counter snapshots into metric families at scrape time. No I/O.

The hot path never calls prometheus_client (DESIGN.md §2). Per finished exchange `Recorder`
does one dict probe on a key of three cached strings, two list increments, one `perf_counter`
and one bisection (the latency bucket). Everything else is read from `gateway.counters` when
`/metrics` is scraped.

A *snapshot* (`take_snapshot`) is a plain JSON-able dict of one process's counters. One process
scrapes its own; with `--workers N` the parent fetches one per worker (gateway.workers) and the
collector adds them up, so one admin port reports the whole set of workers. Metric names and
labels are a contract with the controller's analysis (controller.observations, docs/metrics.md):

* `fleetgate_requests_total{worker,code_class}`: every response, per worker process;
* `fleetgate_route_requests_total{route,rule,cluster,code_class}`: by policy rule and cluster;
* `fleetgate_backend_requests_total{backend,cluster,code_class}` and the histogram
  `fleetgate_backend_request_duration_seconds{backend,cluster}`: forwarded requests, `backend`
  being the service `namespace/name:port`; the duration runs from the first request byte to
  the last response byte handed to the client;
* upstream errors by reason, local replies by reason, connections, pool sizes, table version,
  policy loads and reload errors.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypedDict

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway.context import ExchangeObserver
from gateway.counters import Counters

if TYPE_CHECKING:
    from gateway.exchange import Exchange

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latency bucket bounds in seconds (Prometheus' defaults with 1 ms and 2.5 ms added: a loopback
# hop takes well under 5 ms, and a canary's p99 gate needs resolution there).
BOUNDS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
CODE_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")

# Row layout: counts by status class (0..5), then the duration sum, then one count per bucket
# (the last one is +Inf). Lists, not objects: `row[i] += 1` is the cheapest update there is.
_SUM = 6
_BUCKET0 = 7
_ROW_LEN = _BUCKET0 + len(BOUNDS) + 1
_MAX_ROWS = 20_000  # label sets kept; beyond that new ones share one overflow row

RowKey = tuple[str, str, str]  # (rule id, cluster, backend id)
Labels = tuple[str, str, str, str]  # (route, rule, cluster, backend service)
_UNROUTED: RowKey = ("", "", "")
_OVERFLOW: RowKey = ("~overflow", "", "")


class Row(TypedDict):
    route: str
    rule: str
    cluster: str
    backend: str  # "" for requests that were not forwarded (redirects, local replies)
    codes: list[int]  # by status class, CODE_CLASSES order
    sum_s: float
    buckets: list[int]  # per bucket, not cumulative; the last is +Inf


class Snapshot(TypedDict):
    """One process's counters, as plain JSON (what a worker hands to the parent)."""

    worker: str
    table_version: int
    counters: dict[str, int]
    responses: list[int]
    replies: dict[str, int]
    rows: list[Row]
    pool_idle: int


@dataclasses.dataclass(frozen=True, slots=True)
class ReloadStats:
    """The policy pipeline as the metrics show it (filled in by whoever runs it)."""

    loads: int = 0  # policy loads or snapshots received
    rejected: int = 0  # loads refused as invalid (the last good table stayed)
    failures: int = 0  # valid policies that did not compile, or tables the gateway refused
    valid: bool = True  # the most recent load was accepted


class Recorder:
    """The `ExchangeObserver` that counts requests by route, rule, cluster and backend.

    `then` is called after counting (the access log), so one observer slot serves both.
    """

    __slots__ = ("_labels", "_rows", "then")

    def __init__(self, then: ExchangeObserver | None = None) -> None:
        self.then = then
        self._rows: dict[RowKey, list[Any]] = {}
        self._labels: dict[RowKey, Labels] = {}

    def exchange_done(self, exchange: Exchange) -> None:
        fwd = exchange.forward
        endpoint = exchange.endpoint
        if fwd is not None and endpoint is not None:
            key: RowKey = (fwd.rule, endpoint.cluster, fwd.backend.id)
        else:
            decided = exchange.decided
            rule = decided.rule if decided is not None else None
            key = (rule, "", "") if rule else _UNROUTED
        row = self._rows.get(key)
        if row is None:
            row = self._new_row(key, exchange)
        status = exchange.status
        row[status // 100 if 100 <= status < 600 else 0] += 1
        if fwd is not None:
            elapsed = perf_counter() - exchange.started
            row[_SUM] += elapsed
            row[_BUCKET0 + bisect_left(BOUNDS, elapsed)] += 1
        then = self.then
        if then is not None:
            then.exchange_done(exchange)

    def _new_row(self, key: RowKey, exchange: Exchange) -> list[Any]:
        if len(self._rows) >= _MAX_ROWS:
            key = _OVERFLOW
            row = self._rows.get(key)
            if row is not None:
                return row
            labels: Labels = ("~overflow", "~overflow", "", "")
        else:
            decided = exchange.decided
            route = (decided.route or "") if decided is not None else ""
            fwd = exchange.forward
            backend = str(fwd.backend.service) if fwd is not None and key[2] else ""
            labels = (route, key[0], key[1], backend)
        row = [0] * _ROW_LEN
        row[_SUM] = 0.0
        self._rows[key] = row
        self._labels[key] = labels
        return row

    def rows(self) -> list[Row]:
        out: list[Row] = []
        for key, row in self._rows.items():
            route, rule, cluster, backend = self._labels[key]
            out.append(
                Row(
                    route=route,
                    rule=rule,
                    cluster=cluster,
                    backend=backend,
                    codes=row[:_SUM],
                    sum_s=row[_SUM],
                    buckets=row[_BUCKET0:],
                )
            )
        return out


def take_snapshot(
    counters: Counters,
    recorder: Recorder | None,
    *,
    worker: str,
    table_version: int,
    pool_idle: int,
) -> Snapshot:
    """Copy one process's counters into a plain dict (cheap: a few hundred values)."""
    scalars: dict[str, int] = {}
    for name in Counters.__slots__:
        value = getattr(counters, name, None)
        if isinstance(value, int):
            scalars[name] = value
    return Snapshot(
        worker=worker,
        table_version=table_version,
        counters=scalars,
        responses=list(counters.responses),
        replies=dict(counters.local_replies),
        rows=recorder.rows() if recorder is not None else [],
        pool_idle=pool_idle,
    )


# ---------------------------------------------------------------------------------------------
# Scrape time


class SnapshotCollector(Collector):
    """Metric families from the snapshots `source` returns at each scrape, summed across them."""

    def __init__(
        self,
        source: Callable[[], Sequence[Snapshot]],
        reload: Callable[[], ReloadStats | None] | None = None,
    ) -> None:
        self._source = source
        self._reload = reload

    def collect(self) -> Iterator[Metric]:
        snapshots = self._source()
        yield from _traffic(snapshots)
        yield from _connections(snapshots)
        reload = self._reload() if self._reload is not None else None
        if reload is not None:
            yield from _reload_families(reload)


def render(snapshots: Sequence[Snapshot], reload: ReloadStats | None = None) -> bytes:
    """The Prometheus text exposition of `snapshots` (and the policy pipeline's stats)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: snapshots, lambda: reload))
    return generate_latest(registry)


def _traffic(snapshots: Sequence[Snapshot]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "fleetgate_requests_total",
        "Responses sent to clients (proxied and local), per worker process.",
        labels=["worker", "code_class"],
    )
    for snap in snapshots:
        for index, count in enumerate(snap["responses"]):
            if count:
                requests.add_metric([snap["worker"], CODE_CLASSES[index]], count)
    yield requests

    by_rule: dict[tuple[str, str, str, str], float] = {}
    by_backend: dict[tuple[str, str, str], float] = {}
    latency: dict[tuple[str, str], tuple[list[int], float]] = {}
    for row in _rows(snapshots):
        for index, count in enumerate(row["codes"]):
            if not count:
                continue
            code = CODE_CLASSES[index]
            key = (row["route"], row["rule"], row["cluster"], code)
            by_rule[key] = by_rule.get(key, 0) + count
            if row["backend"]:
                bkey = (row["backend"], row["cluster"], code)
                by_backend[bkey] = by_backend.get(bkey, 0) + count
        if row["backend"]:
            lkey = (row["backend"], row["cluster"])
            seen = latency.get(lkey)
            if seen is None:
                latency[lkey] = (list(row["buckets"]), row["sum_s"])
            else:
                counts = [a + b for a, b in zip(seen[0], row["buckets"], strict=True)]
                latency[lkey] = (counts, seen[1] + row["sum_s"])

    routes = CounterMetricFamily(
        "fleetgate_route_requests_total",
        "Requests by policy route, rule, member cluster and status class "
        "(route and rule empty when no rule matched).",
        labels=["route", "rule", "cluster", "code_class"],
    )
    for labels, value in sorted(by_rule.items()):
        routes.add_metric(list(labels), value)
    yield routes

    backends = CounterMetricFamily(
        "fleetgate_backend_requests_total",
        "Forwarded requests by backend service, member cluster and status class.",
        labels=["backend", "cluster", "code_class"],
    )
    for blabels, value in sorted(by_backend.items()):
        backends.add_metric(list(blabels), value)
    yield backends

    histogram = HistogramMetricFamily(
        "fleetgate_backend_request_duration_seconds",
        "Time from the first request byte to the last response byte, forwarded requests.",
        labels=["backend", "cluster"],
    )
    for (backend, cluster), (counts, total_s) in sorted(latency.items()):
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*BOUNDS, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        histogram.add_metric([backend, cluster], buckets, sum_value=total_s)
    yield histogram

    replies = CounterMetricFamily(
        "fleetgate_local_replies_total",
        "Requests the gateway answered itself, by reason code.",
        labels=["reason"],
    )
    for reason, value in sorted(_summed_replies(snapshots).items()):
        replies.add_metric([reason], value)
    yield replies


def _rows(snapshots: Iterable[Snapshot]) -> Iterator[Row]:
    for snap in snapshots:
        yield from snap["rows"]


def _summed_replies(snapshots: Iterable[Snapshot]) -> dict[str, int]:
    total: dict[str, int] = {}
    for snap in snapshots:
        for reason, value in snap["replies"].items():
            total[reason] = total.get(reason, 0) + value
    return total


def _sum(snapshots: Iterable[Snapshot], name: str) -> int:
    return sum(snap["counters"].get(name, 0) for snap in snapshots)


# (metric name, help, counter field) for plain totals
_TOTALS = (
    ("fleetgate_downstream_connections", "Client connections accepted.", "downstream_connections"),
    ("fleetgate_upstream_connects", "Upstream connections established.", "upstream_connects"),
    (
        "fleetgate_upstream_pool_hits",
        "Requests sent on a reused idle upstream connection.",
        "upstream_pool_hits",
    ),
    (
        "fleetgate_upstream_stale_retries",
        "Requests re-sent after a reused upstream connection turned out closed.",
        "upstream_stale_retries",
    ),
    ("fleetgate_upgrades", "Upgraded connections (WebSocket) spliced.", "upgrades"),
    ("fleetgate_retries", "Upstream attempts after the first (retry policies).", "retries"),
    (
        "fleetgate_retries_exhausted",
        "Retriable failures not retried: over the retry budget or the replay body limit.",
        "retries_exhausted",
    ),
    (
        "fleetgate_outlier_ejections",
        "Endpoints ejected by consecutive gateway errors.",
        "outlier_ejections",
    ),
    (
        "fleetgate_health_transitions",
        "Active health checks moving an endpoint in or out of rotation.",
        "health_transitions",
    ),
    (
        "fleetgate_quota_rejections",
        "Requests refused with 429 by a tenant rate or concurrency quota.",
        "quota_rejections",
    ),
    (
        "fleetgate_circuit_open",
        "Requests refused with 503 by a backend's circuit breaker.",
        "circuit_open",
    ),
)
_UPSTREAM_ERRORS = (
    ("connect_failed", "upstream_connect_failed"),
    ("timeout", "upstream_timeouts"),
    ("reset", "upstream_reset"),
)
_MIRRORS = (("sent", "mirror_sent"), ("dropped", "mirror_dropped"), ("failed", "mirror_failed"))


def _connections(snapshots: Sequence[Snapshot]) -> Iterator[Metric]:
    for name, doc, field in _TOTALS:
        yield CounterMetricFamily(name, doc, value=_sum(snapshots, field))
    errors = CounterMetricFamily(
        "fleetgate_upstream_errors",
        "Upstream failures by reason: connect_failed, timeout, reset.",
        labels=["reason"],
    )
    for reason, field in _UPSTREAM_ERRORS:
        errors.add_metric([reason], _sum(snapshots, field))
    yield errors
    mirrors = CounterMetricFamily(
        "fleetgate_mirror_requests", "Mirrored request copies by result.", labels=["result"]
    )
    for result, field in _MIRRORS:
        mirrors.add_metric([result], _sum(snapshots, field))
    yield mirrors
    yield GaugeMetricFamily(
        "fleetgate_downstream_connections_open",
        "Client connections open now.",
        value=_sum(snapshots, "downstream_open"),
    )
    yield GaugeMetricFamily(
        "fleetgate_upstream_connections_open",
        "Upstream connections open now (idle and busy).",
        value=_sum(snapshots, "upstream_open"),
    )
    yield GaugeMetricFamily(
        "fleetgate_upstream_pool_idle_connections",
        "Idle keep-alive upstream connections in the pools now.",
        value=sum(snap["pool_idle"] for snap in snapshots),
    )
    version = GaugeMetricFamily(
        "fleetgate_table_version",
        "Version of the routing table each worker serves (0 before the first).",
        labels=["worker"],
    )
    for snap in snapshots:
        version.add_metric([snap["worker"]], snap["table_version"])
    yield version


def _reload_families(reload: ReloadStats) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "fleetgate_policy_loads",
        "Policy loads (start-up, file changes, SIGHUP).",
        value=reload.loads,
    )
    errors = CounterMetricFamily(
        "fleetgate_reload_errors",
        "Reloads that changed nothing served: invalid policies, or tables not compiled/applied.",
        labels=["stage"],
    )
    errors.add_metric(["validate"], reload.rejected)
    errors.add_metric(["compile"], reload.failures)
    yield errors
    yield GaugeMetricFamily(
        "fleetgate_policy_valid",
        "1 when the most recent policy load was accepted, 0 when it was rejected.",
        value=1 if reload.valid else 0,
    )
