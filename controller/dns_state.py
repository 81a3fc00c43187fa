"""DNS endpoints, the pure part: settings, what one name answered, when to ask again, and which
service ports a name feeds. No I/O, no clock (callers pass `now` and `roll`).

controller.dns runs the lookups and owns the timers; docs/controller.md ("DNS endpoints") has
the whole contract.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Sequence

from policies import table as tables
from policies.model import DnsName, MemberCluster, ServiceRef
from policies.table import Endpoint


@dataclasses.dataclass(frozen=True, slots=True)
class DnsSettings:
    """DNS resolution (controller process settings)."""

    nameserver: str | None = None  # "ip:port" or "[ipv6]:port" to ask; None: /etc/resolv.conf
    timeout_s: float = 2.0  # bound on one lookup: every try, the TCP fallback and SRV targets
    min_ttl_s: float = 5.0  # an answer is looked up again no sooner than this, whatever its TTL
    max_ttl_s: float = 300.0  # ... and no later than this, whatever its TTL
    grace_s: float = 60.0  # a failing name keeps its last answer this long, then its endpoints go
    retry_base_s: float = 1.0  # delay before the first retry of a failed lookup; doubles each time
    retry_max_s: float = 30.0  # ceiling of the retry delay
    jitter: float = 0.1  # refresh and retry delays are shortened at random by up to this fraction
    max_concurrent: int = 32  # lookups in flight at once over all names; the others queue

    def __post_init__(self) -> None:
        if self.nameserver is not None:
            parse_nameserver(self.nameserver)
        if not 0 < self.min_ttl_s <= self.max_ttl_s:
            raise ValueError("DNS TTL clamp needs 0 < min_ttl_s <= max_ttl_s")
        if not 0 < self.retry_base_s <= self.retry_max_s:
            raise ValueError("DNS retry needs 0 < retry_base_s <= retry_max_s")
        if self.timeout_s <= 0 or self.grace_s < 0 or not 0 <= self.jitter < 1:
            raise ValueError("DNS settings need timeout_s > 0, grace_s >= 0, 0 <= jitter < 1")
        if self.max_concurrent < 1:
            raise ValueError("DNS settings need max_concurrent >= 1")


def parse_nameserver(text: str) -> tuple[str, int]:
    """`ip:port`, `[ipv6]:port` or a bare IP (port 53) → (address, port); ValueError otherwise."""
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f'DNS nameserver must be "ip:port", got "{text}"') from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f'DNS nameserver needs a port 1..65535, got "{text}"')
    return address, int(port)


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """One address a name gave; `priority` and `weight` are the SRV fields (0 for A/AAAA)."""

    priority: int
    weight: int
    host: str  # an IP address
    port: int


class NameCondition(enum.Enum):
    PENDING = "pending"  # not looked up yet
    FRESH = "fresh"  # the last lookup answered
    STALE = "stale"  # lookups fail; the last answer is still published (within the grace)
    FAILED = "failed"  # lookups fail and nothing is published: grace over, or never answered


@dataclasses.dataclass(frozen=True, slots=True)
class NameState:
    """The last good answer of one name and the failures since. Times are monotonic seconds."""

    records: tuple[Record, ...] = ()
    answered_at: float | None = None  # when the last good answer arrived
    ttl_s: float | None = None  # its TTL as the server gave it (before clamping)
    failing_since: float | None = None  # first failure since that answer; None while fresh
    failures: int = 0  # lookups failed in a row
    error: str | None = None  # why the last lookup failed

    def answered(self, records: tuple[Record, ...], ttl_s: float, now: float) -> NameState:
        return NameState(records=records, answered_at=now, ttl_s=ttl_s)

    def failed(self, error: str, now: float) -> NameState:
        since = self.failing_since if self.failing_since is not None else now
        return dataclasses.replace(
            self, failing_since=since, failures=self.failures + 1, error=error
        )

    def withdraw_at(self, grace_s: float) -> float | None:
        """When the kept answer stops being published; None when nothing is kept or fresh."""
        if self.failing_since is None or not self.records:
            return None
        return self.failing_since + grace_s

    def live(self, now: float, grace_s: float) -> tuple[Record, ...]:
        """The records to publish at `now`."""
        until = self.withdraw_at(grace_s)
        return () if until is not None and now >= until else self.records

    def condition(self, published: bool) -> NameCondition:
        """What the status calls this state, given whether its records are `published` now."""
        if self.failing_since is None:
            return NameCondition.FRESH if self.answered_at is not None else NameCondition.PENDING
        return NameCondition.STALE if published else NameCondition.FAILED


def refresh_delay(ttl_s: float, settings: DnsSettings, roll: float) -> float:
    """Seconds until a good answer is looked up again; `roll` in [0, 1) picks the jitter."""
    clamped = min(max(ttl_s, settings.min_ttl_s), settings.max_ttl_s)
    return clamped * (1.0 - settings.jitter * roll)


def retry_delay(failures: int, settings: DnsSettings, roll: float) -> float:
    """Seconds until a failed lookup is tried again, after `failures` failures in a row."""
    backoff = settings.retry_base_s * 2.0 ** min(max(failures - 1, 0), 30)
    return min(backoff, settings.retry_max_s) * (1.0 - settings.jitter * roll)


@dataclasses.dataclass(frozen=True, slots=True)
class PortUse:
    """One service port that names a DNS name; `listed` are its static endpoints."""

    cluster: str
    ref: ServiceRef
    zone: str | None
    listed: tuple[Endpoint, ...]

    def endpoints(self, records: Sequence[Record]) -> tuple[Endpoint, ...]:
        """Listed endpoints, then the records' addresses (lowest SRV priority ready)."""
        found = {(e.host, e.port): e for e in self.listed}
        top = min((r.priority for r in records), default=0)
        for r in records:
            endpoint = Endpoint(
                r.host, r.port, self.cluster, zone=self.zone, ready=r.priority == top
            )
            found.setdefault((r.host, r.port), endpoint)
        return tuple(found.values())


def port_uses(clusters: Sequence[MemberCluster]) -> dict[DnsName, tuple[PortUse, ...]]:
    """Every DNS name the clusters' service ports name, with the ports that name it."""
    listed = tables.inventory_from_clusters(clusters).endpoints
    uses: dict[DnsName, list[PortUse]] = {}
    for cluster in clusters:
        for service in cluster.services:
            for port in service.ports:
                if port.dns is None:
                    continue
                ref = ServiceRef(service.namespace, service.name, port.port)
                use = PortUse(cluster.name, ref, cluster.zone, listed.get((cluster.name, ref), ()))
                uses.setdefault(port.dns, []).append(use)
    return {name: tuple(found) for name, found in uses.items()}


def shown(record: Record, *, srv: bool) -> str:
    """A record as the status shows it: "ip:port", SRV with its priority and weight."""
    address = (
        f"[{record.host}]:{record.port}" if ":" in record.host else f"{record.host}:{record.port}"
    )
    return f"{address} prio={record.priority} weight={record.weight}" if srv else address
