"""Endpoint health as the gateway sees it: active HTTP probes plus passive outlier ejection.

I/O: one TCP connection per probe (an HTTP/1.1 GET with `Connection: close`; over TLS for a
member cluster with upstream TLS, as traffic is), from probe loops
that run in a TaskGroup this monitor owns. The decisions are `policies.health` (rise/fall) and
`policies.outliers` (consecutive errors, caps, decay); this module only feeds them.

* `sync(table)` after every table swap: endpoints whose MemberCluster has a `HealthCheck` get a
  probe loop, new ones probed at once; endpoints that stay keep their health and outlier state
  (a reload never resets them), endpoints that left lose it.
* Until its first probe an endpoint is trusted as the table says (EndpointSlice readiness was
  already applied by the controller); the first outcome decides alone, so a dead new endpoint
  leaves rotation one probe later. An answer outside `expected_statuses` takes an endpoint out
  at once: that is how an upstream answering 503 on its health path while draining leaves
  before its listener closes.
* `record` after every upstream attempt of a rule with `outlier_detection`: consecutive gateway
  errors eject inline; `sweep` (the gateway's tick) ends ejections by time and decays.
* An endpoint that is out is probed every `unhealthy_interval_s` when set (Envoy's
  `unhealthy_interval`), else every `interval_s`.
* A live response carrying `x-fleetgate-immediate-health-check-fail` (Envoy's
  `x-envoy-immediate-health-check-fail`) takes its endpoint out at once, when the endpoint is
  actively checked (`immediate_fail`; the header is removed before the client sees it).
* `healthy` is the `gateway.routing.HealthView` the balancer reads; `version` changes whenever
  an answer of `healthy` may have, so cached backend views are rebuilt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator

from gateway import tls
from gateway.counters import Counters
from policies import health, outliers
from policies.model import HealthCheck, OutlierDetection
from policies.table import Endpoint, RoutingTable

log = logging.getLogger(__name__)

_MAX_STATUS_LINE = 1024


class HealthMonitor:
    """Active and passive health of every endpoint of the live table (one per gateway)."""

    def __init__(self, counters: Counters | None = None) -> None:
        self.counters = counters if counters is not None else Counters()
        self.version = 0
        self.now = 0.0  # loop time of the last sweep or record; ejections compare against it
        self._active: dict[str, health.HealthState] = {}  # endpoint id -> probe state
        self._outliers: dict[str, outliers.OutlierState] = {}
        self._ejected: set[str] = set()  # ids with an open ejection (swept until closed)
        self._groups: dict[str, tuple[str, ...]] = {}  # endpoint id -> ids of its cluster target
        self._checks: dict[str, tuple[Endpoint, HealthCheck]] = {}  # what each loop probes
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._table: RoutingTable | None = None
        self._tls = tls.UpstreamContexts()  # probes speak TLS where traffic does

    # -- HealthView ----------------------------------------------------------------------------

    def healthy(self, endpoint: Endpoint) -> bool:
        key = endpoint.id
        state = self._active.get(key)
        if state is not None and not state.healthy:
            return False
        return key not in self._ejected or not self._outliers[key].is_ejected(self.now)

    def state(self, endpoint: Endpoint) -> health.HealthState | None:
        """The active-check state (None: not probed by this gateway)."""
        return self._active.get(endpoint.id)

    def ejected(self, endpoint: Endpoint) -> bool:
        state = self._outliers.get(endpoint.id)
        return state is not None and state.is_ejected(self.now)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Enter the probe TaskGroup (the caller's task owns it until `close`)."""
        self.now = asyncio.get_running_loop().time()
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        if self._table is not None:
            self.sync(self._table)

    async def close(self) -> None:
        for task in self._loops.values():
            task.cancel()
        self._loops.clear()
        self._checks.clear()
        if self._tasks is not None:
            tasks, self._tasks = self._tasks, None
            await tasks.__aexit__(None, None, None)

    def sync(self, table: RoutingTable) -> None:
        """Follow the live table's endpoints (call after every swap; cheap when nothing moved)."""
        self._table = table
        self._tls.follow(table)
        wanted: dict[str, tuple[Endpoint, HealthCheck]] = {}
        groups: dict[str, tuple[str, ...]] = {}
        for endpoint, check, members in _targets(table):
            groups[endpoint.id] = members
            if check is not None:
                wanted[endpoint.id] = (endpoint, check)
        self._groups = groups
        changed = False
        for key in [k for k in self._active if k not in wanted]:
            del self._active[key]
            changed = True
        for key in [k for k in self._outliers if k not in groups]:
            del self._outliers[key]
            self._ejected.discard(key)
            changed = True
        for key in [k for k in self._loops if self._checks.get(k) != wanted.get(k)]:
            self._loops.pop(key).cancel()
            del self._checks[key]
        if self._tasks is not None:
            for key, (endpoint, check) in wanted.items():
                if key not in self._loops:
                    self._checks[key] = (endpoint, check)
                    self._loops[key] = self._tasks.create_task(
                        self._probe_loop(endpoint, check), name=f"gateway.health.{key}"
                    )
        if changed:
            self.version += 1

    # -- passive outlier detection -------------------------------------------------------------

    def record(
        self, endpoint: Endpoint, config: OutlierDetection, *, error: bool, now: float
    ) -> None:
        """One attempt's outcome (error: 5xx, connect failure, reset, timeout)."""
        key = endpoint.id
        state = self._outliers.get(key)
        if state is None:
            if not error:
                return
            state = outliers.OutlierState()
        members = self._groups.get(key, (key,))
        ejected = sum(1 for m in members if m in self._ejected and m != key)
        self.now = now
        new, ejected_now = outliers.record(
            config, state, error=error, now=now, ejected=ejected, total=len(members)
        )
        self._outliers[key] = new
        if ejected_now:
            self._ejected.add(key)
            self.counters.outlier_ejections += 1
            self.version += 1
            log.warning(
                "endpoint ejected endpoint=%s for_s=%.1f",
                key,
                outliers.ejection_s(config, new.multiplier),
            )

    def sweep(self, now: float) -> None:
        """End ejections whose time is over (the gateway's tick calls this)."""
        self.now = now
        if not self._ejected:
            return
        for key in list(self._ejected):
            state = self._outliers.get(key)
            if state is None:
                self._ejected.discard(key)
                continue
            new, ended = outliers.sweep(state, now)
            if ended:
                self._outliers[key] = new
                self._ejected.discard(key)
                self.version += 1

    # -- active checks -------------------------------------------------------------------------

    async def _probe_loop(self, endpoint: Endpoint, check: HealthCheck) -> None:
        key = endpoint.id
        while True:
            try:
                status = await probe(endpoint, check, self._tls)
                self._observe(key, check, health.classify(check, status))
            except asyncio.CancelledError:
                raise
            except Exception:  # task top level: a bug must not stop the other probe loops
                log.exception("health probe failed endpoint=%s", key)
            state = self._active.get(key)
            healthy = state is None or state.healthy
            await asyncio.sleep(health.probe_delay_s(check, random.random(), healthy=healthy))

    def immediate_fail(self, key: str) -> None:
        """An upstream answered live traffic with `IMMEDIATE_FAIL_HEADER`: the endpoint leaves
        rotation at once, as a rejected probe would, and comes back by `healthy_threshold`
        passing probes. Only for actively checked endpoints (Envoy's rule): without probes
        nothing would ever bring it back."""
        checked = self._checks.get(key)
        if checked is None:
            return
        if self._active.get(key, _TRUSTED).healthy:
            log.info("endpoint asked to be taken out endpoint=%s", key)
        self._observe(key, checked[1], health.ProbeResult.REJECTED)

    def _observe(self, key: str, check: HealthCheck, result: health.ProbeResult) -> None:
        state = self._active.get(key, _TRUSTED)
        new, flipped = health.observe(check, state, result)
        self._active[key] = new
        if flipped:
            self.counters.health_transitions += 1
            self.version += 1
            log.info("endpoint health endpoint=%s healthy=%s", key, new.healthy)
        if result is health.ProbeResult.PASSED and key in self._outliers:
            unejected, ended = outliers.probe_passed(self._outliers[key])
            self._outliers[key] = unejected
            if ended:
                self._ejected.discard(key)
                self.version += 1


_TRUSTED = health.HealthState(healthy=True)  # until the first probe: the table's readiness


def _targets(
    table: RoutingTable,
) -> Iterator[tuple[Endpoint, HealthCheck | None, tuple[str, ...]]]:
    seen: set[str] = set()
    for backend in table.backends.values():
        for target in backend.targets:
            members = tuple(endpoint.id for endpoint in target.endpoints)
            for endpoint in target.endpoints:
                if endpoint.id not in seen:
                    seen.add(endpoint.id)
                    yield endpoint, target.health_check, members


async def probe(
    endpoint: Endpoint, check: HealthCheck, contexts: tls.UpstreamContexts | None = None
) -> int | None:
    """One probe: the status code of `GET check.path`, or None without an answer in time.
    Over TLS when `contexts` has upstream TLS for the endpoint's cluster (unreadable TLS files
    fail the probe, as they fail traffic)."""
    host = check.hostname or endpoint.cluster
    request = (
        f"GET {check.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: fleetgate-health\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(check.timeout_s):
            secure = (
                None if contexts is None else contexts.for_cluster(endpoint.cluster, endpoint.host)
            )
            if secure is None:
                reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
            else:
                reader, writer = await asyncio.open_connection(
                    endpoint.host, endpoint.port, ssl=secure[0], server_hostname=secure[1]
                )
            writer.write(request)
            line = await reader.readuntil(b"\n")
    except (*tls.LOAD_ERRORS, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(check.timeout_s):
                    await writer.wait_closed()
    parts = line[:_MAX_STATUS_LINE].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return None
    return int(parts[1])
