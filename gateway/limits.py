"""Admission on the proxy path: tenant quotas (429 with Retry-After) and circuit breakers (503).

No I/O: counters and token buckets in memory, per gateway process (per worker: N workers admit
up to N times a quota, as with Envoy's local rate limit; a fleet-wide limit needs a shared
store, which this data plane does not have). Decisions are `policies.limits`.

* Tenant quotas: a `model.RateLimit` per policy (`TrafficSettings.rate_limit`, keyed by the
  route "namespace/name") and, set by the fleet administrator, per namespace
  (`namespace_quotas`). Each is a token bucket with burst plus an optional cap on concurrent
  requests; either one empty means 429 `rate_limited` with `Retry-After`.
* Circuit breakers per backend (`policies.limits.Thresholds`, Envoy's 1024 defaults): once
  `max_requests` are in flight to one backend, more get 503 `circuit_open` at once instead of
  queueing behind a sick backend.

`admit` runs once an endpoint has been picked; `release` when the exchange settles (from
`gateway.retrying.end`, exactly once per admitted exchange).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.counters import Counters
from gateway.replies import reply
from policies import limits
from policies.limits import Bucket, Thresholds
from policies.matching import Forward
from policies.model import RateLimit

if TYPE_CHECKING:
    from gateway.exchange import Exchange

DEFAULT_THRESHOLDS = Thresholds()


class Limits:
    __slots__ = ("_active", "_buckets", "_in_flight", "counters", "namespace_quotas", "thresholds")

    def __init__(
        self,
        counters: Counters,
        *,
        thresholds: Thresholds = DEFAULT_THRESHOLDS,
        namespace_quotas: Mapping[str, RateLimit] | None = None,
    ) -> None:
        self.counters = counters
        self.thresholds = thresholds
        self.namespace_quotas: Mapping[str, RateLimit] = dict(namespace_quotas or {})
        self._buckets: dict[str, Bucket] = {}  # quota key -> token bucket
        self._active: dict[str, int] = {}  # quota key -> requests in flight
        self._in_flight: dict[str, int] = {}  # backend id -> requests in flight

    def _quotas(self, fwd: Forward) -> list[tuple[str, RateLimit]]:
        out = []
        if self.namespace_quotas:
            namespace = fwd.route.partition("/")[0]
            quota = self.namespace_quotas.get(namespace)
            if quota is not None:
                out.append(("namespace:" + namespace, quota))
        policy = fwd.settings.rate_limit
        if policy is not None:
            out.append(("policy:" + fwd.route, policy))
        return out

    def admit(self, ex: Exchange, fwd: Forward, now: float) -> bool:
        """Admit the exchange (counted until `release`), or reply 429/503 and return False."""
        quotas = self._quotas(fwd) if fwd.settings.rate_limit or self.namespace_quotas else ()
        for key, quota in quotas:
            bucket, allowed, wait_s = limits.take(quota, self._buckets.get(key), now)
            self._buckets[key] = bucket
            if allowed and quota.max_concurrent > 0:
                allowed = self._active.get(key, 0) < quota.max_concurrent
                wait_s = 1.0
            if not allowed:
                self.counters.quota_rejections += 1
                retry_after = limits.retry_after_header(wait_s).encode()
                reply(ex, 429, "rate_limited", (b"retry-after: " + retry_after + b"\r\n",))
                return False
        backend = fwd.backend.id
        active = self._in_flight.get(backend, 0)
        if limits.admit_request(self.thresholds, active_requests=active) is not None:
            self.counters.circuit_open += 1
            reply(ex, 503, "circuit_open")
            return False
        self._in_flight[backend] = active + 1
        if quotas:
            for key, quota in quotas:
                if quota.max_concurrent > 0:
                    self._active[key] = self._active.get(key, 0) + 1
        return True

    def release(self, fwd: Forward) -> None:
        backend = fwd.backend.id
        active = self._in_flight.get(backend, 0)
        # `limits.release` inlined (per request): never below zero
        self._in_flight[backend] = active - 1 if active > 0 else 0
        if fwd.settings.rate_limit or self.namespace_quotas:
            for key, quota in self._quotas(fwd):
                if quota.max_concurrent > 0:
                    self._active[key] = limits.release(self._active.get(key, 0))

    def configure(self, thresholds: Thresholds, namespace_quotas: Mapping[str, RateLimit]) -> None:
        """New breaker and namespace quotas (the gateway config file changed).

        A namespace whose quota changed gets a new, full bucket (as Envoy's local rate limit
        does when its config is replaced); an unchanged quota keeps its bucket. In-flight counts
        stay while the namespace keeps a concurrency cap, and are forgotten when it loses it, so
        a cap added back later starts from zero rather than from counts that requests admitted
        without a cap would never release."""
        old = self.namespace_quotas
        self.thresholds = thresholds
        self.namespace_quotas = dict(namespace_quotas)
        for key in [k for k in self._buckets if k.startswith("namespace:")]:
            namespace = key[len("namespace:") :]
            if self.namespace_quotas.get(namespace) != old.get(namespace):
                del self._buckets[key]
        for key in [k for k in self._active if k.startswith("namespace:")]:
            quota = self.namespace_quotas.get(key[len("namespace:") :])
            if quota is None or quota.max_concurrent <= 0:
                del self._active[key]

    def in_flight(self, backend_id: str) -> int:
        return self._in_flight.get(backend_id, 0)
