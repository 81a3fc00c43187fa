"""Analysis inputs: canary and stable traffic over one interval (HTTP client I/O).

Two sources fill the same `policies.analysis.Observation`, so both give the same verdict on the
same traffic (docs/metrics.md is the contract with the gateway):

* **gateway counters** (the default): every gateway's admin `/metrics` in Prometheus text
  format, scraped at the start of the interval (the *baseline*, which the runner persists so a
  restart does not lose it) and again at its end. Each gateway's increase is computed on its own
  (a counter that went down means that gateway restarted, as in PromQL's `increase()`), then the
  gateways are summed. A gateway missing from either scrape is left out of that interval, as a
  series Prometheus has no earlier sample of would be.
* **Prometheus** (`spec.analysis.prometheus.address`): three instant queries per side at the end
  of the interval, `increase(...[interval])` of the same two metrics; `prometheus.query` holds
  extra label matchers (for instance `job="fleetgate"`) added to every selector.

A source that cannot answer yields empty samples: too little traffic, which the engine turns into
an inconclusive measurement (a pause for a person), never a pass.

Which series belong to which side: the backend label is the service (`namespace/name:port`).
When canary and stable are the same service in different clusters, the cluster label tells them
apart: canary is its backendRef's clusters (or selector), stable is its own, or else every
cluster that is not canary's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from controller import codec
from policies import analysis
from policies.analysis import Observation, Sample
from policies.model import BackendRef, MemberCluster, Release

log = logging.getLogger(__name__)

REQUESTS = "fleetgate_backend_requests_total"  # labels: backend, cluster, code_class
DURATION_BUCKET = "fleetgate_backend_request_duration_seconds_bucket"  # backend, cluster, le
SIDES = ("canary", "stable")


@dataclasses.dataclass(frozen=True, slots=True)
class ObservationSettings:
    """Where analysis reads traffic from (controller process settings)."""

    metrics_urls: tuple[str, ...] = ()  # every gateway's admin /metrics URL (built-in analysis)
    timeout_s: float = 3.0  # per scrape or Prometheus query
    max_body_bytes: int = 32 << 20  # a /metrics page larger than this is refused
    token: str | None = None  # bearer token for the gateways' admin ports (--admin-token)


@dataclasses.dataclass(frozen=True, slots=True)
class Side:
    """The series of one side of a release: its service, narrowed to (or away from) clusters."""

    backend: str  # "namespace/name:port", the `backend` label
    clusters: frozenset[str] | None = None  # None = every cluster
    exclude: bool = False  # True: every cluster except `clusters`

    def has(self, cluster: str | None) -> bool:
        if self.clusters is None:
            return True
        if cluster is None:  # a series without a cluster label cannot be attributed
            return False
        return (cluster in self.clusters) != self.exclude


def sides(release: Release, members: Sequence[MemberCluster]) -> dict[str, Side]:
    """Canary and stable series selectors for `release` (see the module docstring)."""
    canary = _clusters(release.canary, members)
    stable = _clusters(release.stable, members)
    canary_side = Side(str(release.canary.service), canary)
    if release.canary.service != release.stable.service and stable is None:
        return {"canary": canary_side, "stable": Side(str(release.stable.service))}
    if stable is None and canary is not None:
        return {"canary": canary_side, "stable": Side(str(release.stable.service), canary, True)}
    return {"canary": canary_side, "stable": Side(str(release.stable.service), stable)}


def _clusters(ref: BackendRef, members: Sequence[MemberCluster]) -> frozenset[str] | None:
    if ref.clusters:
        return frozenset(c.cluster for c in ref.clusters)
    if ref.cluster_selector is not None:
        selector = ref.cluster_selector
        return frozenset(
            m.name for m in members if all(m.labels.get(k) == v for k, v in selector.items())
        )
    return None


def parse_metrics(text: str, selectors: Mapping[str, Side]) -> dict[str, Sample]:
    """One gateway's cumulative counters per side, from its /metrics text. Pure."""
    requests = dict.fromkeys(selectors, 0.0)
    errors = dict.fromkeys(selectors, 0.0)
    buckets: dict[str, dict[float, float]] = {name: {} for name in selectors}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in (REQUESTS, DURATION_BUCKET):
                continue
            labels = sample.labels
            for name, side in selectors.items():
                if labels.get("backend") != side.backend or not side.has(labels.get("cluster")):
                    continue
                if sample.name == REQUESTS:
                    requests[name] += sample.value
                    if labels.get("code_class") == "5xx":
                        errors[name] += sample.value
                elif "le" in labels:
                    le = float(labels["le"])
                    buckets[name][le] = buckets[name].get(le, 0.0) + sample.value
    return {
        name: Sample(
            requests=requests[name],
            errors=errors[name],
            latency_buckets=tuple(sorted(buckets[name].items())),
        )
        for name in selectors
    }


class Observations:
    """Measures releases. `start()` opens the HTTP session, `close()` closes it."""

    def __init__(
        self,
        settings: ObservationSettings | None = None,
        *,
        targets: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self.settings = settings or ObservationSettings()
        self._targets = targets or (lambda: self.settings.metrics_urls)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def begin(self, release: Release, members: Sequence[MemberCluster]) -> dict[str, Any]:
        """What to remember at the start of an interval (JSON-able, persisted by the runner)."""
        if _prometheus(release) is not None:
            return {"source": "prometheus"}
        scraped = await self._scrape_all(sides(release, members))
        return {
            "source": "gateways",
            "targets": {
                url: {name: codec.encode(sample) for name, sample in per_side.items()}
                for url, per_side in scraped.items()
            },
        }

    async def measure(
        self,
        release: Release,
        members: Sequence[MemberCluster],
        *,
        since: float,
        until: float,
        baseline: Mapping[str, Any] | None,
    ) -> Observation:
        """Canary and stable over [since, until]."""
        selectors = sides(release, members)
        prometheus = _prometheus(release)
        if prometheus is not None:
            address, matchers = prometheus
            window_s = max(1, round(until - since))
            per_side = {
                name: await self._query_side(address, matchers, side, window_s, until)
                for name, side in selectors.items()
            }
            return Observation(canary=per_side["canary"], stable=per_side["stable"])
        earlier = _decode_baseline(baseline)
        later = await self._scrape_all(selectors)
        increases: dict[str, list[Sample]] = {name: [] for name in selectors}
        for url, now_samples in later.items():
            before = earlier.get(url)
            if before is None:
                continue
            for name in selectors:
                increases[name].append(
                    analysis.increase(now_samples[name], before.get(name, Sample()))
                )
        combined = {name: analysis.combine(samples) for name, samples in increases.items()}
        return Observation(canary=combined["canary"], stable=combined["stable"])

    # -- gateway counters ------------------------------------------------------------------

    async def _scrape_all(self, selectors: Mapping[str, Side]) -> dict[str, dict[str, Sample]]:
        urls = tuple(dict.fromkeys(self._targets()))
        texts = await asyncio.gather(*(self._scrape(url) for url in urls))
        out: dict[str, dict[str, Sample]] = {}
        for url, text in zip(urls, texts, strict=True):
            if text is None:
                continue
            try:
                out[url] = parse_metrics(text, selectors)
            except ValueError as exc:
                log.warning("unreadable metrics from gateway url=%s error=%s", url, exc)
        return out

    async def _scrape(self, url: str) -> str | None:
        session = self._require_session()
        try:
            headers = (
                {"Authorization": f"Bearer {self.settings.token}"} if self.settings.token else {}
            )
            async with session.get(url, headers=headers) as response:
                if response.status != 200:
                    log.warning("gateway metrics answered %d url=%s", response.status, url)
                    return None
                body = await response.content.read(self.settings.max_body_bytes + 1)
                if len(body) > self.settings.max_body_bytes:
                    log.warning("gateway metrics too large url=%s", url)
                    return None
                return body.decode("utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cannot scrape gateway metrics url=%s error=%r", url, exc)
            return None

    # -- Prometheus ------------------------------------------------------------------------

    async def _query_side(
        self, address: str, matchers: str, side: Side, window_s: int, at: float
    ) -> Sample:
        selector = _selector(side, matchers)
        window = f"[{window_s}s]"
        requests = await self._query(
            address, f"sum(increase({REQUESTS}{{{selector}}}{window}))", at
        )
        errors_selector = f'{selector},code_class="5xx"'
        errors = await self._query(
            address, f"sum(increase({REQUESTS}{{{errors_selector}}}{window}))", at
        )
        buckets = await self._query(
            address, f"sum by (le) (increase({DURATION_BUCKET}{{{selector}}}{window}))", at
        )
        if requests is None or errors is None:
            return Sample()
        return Sample(
            requests=sum(value for _, value in requests),
            errors=sum(value for _, value in errors),
            latency_buckets=tuple(
                sorted(
                    (float(labels["le"]), value)
                    for labels, value in buckets or ()
                    if "le" in labels
                )
            ),
        )

    async def _query(
        self, address: str, query: str, at: float
    ) -> list[tuple[dict[str, str], float]] | None:
        """An instant vector as (labels, value) pairs; None when Prometheus cannot answer."""
        session = self._require_session()
        url = address.rstrip("/") + "/api/v1/query"
        try:
            async with session.get(url, params={"query": query, "time": f"{at:.3f}"}) as response:
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("prometheus query failed address=%s error=%r", address, exc)
            return None
        if not isinstance(payload, dict) or payload.get("status") != "success":
            error = payload.get("error") if isinstance(payload, dict) else payload
            log.warning("prometheus refused query=%s error=%s", query, error)
            return None
        data = payload.get("data") or {}
        if data.get("resultType") != "vector":
            log.warning(
                "prometheus answered %s, not a vector query=%s", data.get("resultType"), query
            )
            return None
        out: list[tuple[dict[str, str], float]] = []
        for item in data.get("result") or ():
            try:
                value = float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if not math.isnan(value):
                out.append((dict(item.get("metric") or {}), value))
        return out

    def _require_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Observations.start() was not called")
        return self._session


def _prometheus(release: Release) -> tuple[str, str] | None:
    config = release.analysis
    if config is None or config.prometheus_address is None:
        return None
    return config.prometheus_address, (config.prometheus_query or "").strip().strip(",")


def _selector(side: Side, matchers: str) -> str:
    parts = [f"backend={_quote(side.backend)}"]
    if side.clusters is not None:
        pattern = "|".join(re.escape(c) for c in sorted(side.clusters)) or "$^"
        parts.append(f"cluster{'!~' if side.exclude else '=~'}{_quote(pattern)}")
    if matchers:
        parts.append(matchers)
    return ",".join(parts)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _decode_baseline(baseline: Mapping[str, Any] | None) -> dict[str, dict[str, Sample]]:
    if not baseline or baseline.get("source") != "gateways":
        return {}
    out: dict[str, dict[str, Sample]] = {}
    for url, per_side in (baseline.get("targets") or {}).items():
        try:
            out[url] = {name: codec.decode(Sample, per_side[name]) for name in per_side}
        except (TypeError, ValueError, KeyError):
            continue
    return out
