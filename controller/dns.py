"""DNS endpoints: the A/AAAA and SRV names of MemberCluster service ports, resolved and kept fresh.
Network I/O: DNS over UDP (TCP when an answer is truncated) through dnspython's asyncio resolver.

A service port may name `dns: {hostname, port}` or `dns: {srv}` (policies.model.DnsName); each
distinct name has its own task, so a slow or broken name delays no other. docs/controller.md
("DNS endpoints") has the full contract; in short:

* a good answer is looked up again when its TTL runs out, clamped to [`min_ttl_s`, `max_ttl_s`]
  and shortened at random by up to `jitter`;
* a failed lookup (timeout, SERVFAIL, NXDOMAIN, no records) keeps the last answer published for
  `grace_s` from the first failure, and the status says so; then the name's addresses go.
  Retries back off from `retry_base_s` to `retry_max_s`, jittered;
* SRV (RFC 2782): targets from the additional section, else looked up; the lowest priority is
  ready, the others `ready=False` (panic-only backups); weights are shown, not used; a lone
  target "." is an empty answer, not a failure.

Output: `(cluster, ServiceRef) → tuple[Endpoint]` for every port naming DNS — its listed
`endpoints`, then the addresses DNS gave — handed to `on_change` whenever it changes, so that it
replaces the static entries (as reconcile's `merge_inventory` does with observed ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import ipaddress
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.SRV import SRV

from policies import table as tables
from policies.model import DnsName, MemberCluster, PolicySet, ServiceRef
from policies.table import Endpoint, Inventory

log = logging.getLogger(__name__)

_UDP_PAYLOAD = 1232  # EDNS buffer size the DNS flag day 2020 settled on: no IP fragmentation


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


# ---------------------------------------------------------------------------------------------
# Pure state: what one name answered, and what that publishes


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


# ---------------------------------------------------------------------------------------------
# The component


@dataclasses.dataclass(frozen=True, slots=True)
class DnsNameStatus:
    """What `/status` and `fleetgate status` show about one name. Times are epoch seconds."""

    name: str  # "web.east.internal:8080" or "SRV _https._tcp.web.east.internal"
    used_by: tuple[str, ...]  # "cluster namespace/name:port" of each service port naming it
    condition: NameCondition
    addresses: tuple[str, ...]  # "ip:port" published now (SRV: "ip:port prio=P weight=W")
    ttl_s: float | None  # TTL of the last good answer, as given
    answered_at: float | None  # when the last good answer arrived
    stale_since: float | None  # the first failure since that answer; None while fresh
    error: str | None  # why the last lookup failed
    failures: int  # lookups failed in a row


class _LookupFailed(Exception):
    """A lookup gave no usable answer; the message says why (caught in `_follow`)."""


class DnsEndpoints:
    """Resolves the DNS names of the MemberClusters it is given, until cancelled.

    `update_policies` may be called before or while `run()` runs; names that appear get a task,
    names that disappear lose theirs. `on_change` receives the whole DNS inventory, synchronously,
    each time it differs from the last one handed over (coalesce it: reconcile debounces).

    Lookups are never cancelled half-way: uvloop leaks the UDP socket of a
    `create_datagram_endpoint` that is cancelled while it opens, which dnspython does for every
    query. So dnspython's own `lifetime` bounds each lookup, a retired name's task ends after its
    current lookup, and cancelling `run()` lets the lookups in flight finish (within
    `timeout_s`) before it ends; a second cancellation cuts them short.
    """

    def __init__(
        self,
        settings: DnsSettings,
        on_change: Callable[[Inventory], None],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._on_change = on_change
        self._rng = rng or random.Random()
        self._uses: dict[DnsName, tuple[PortUse, ...]] = {}
        self._states: dict[DnsName, NameState] = {}
        self._stops: dict[DnsName, asyncio.Event] = {}  # set: the name's task ends
        self._group: asyncio.TaskGroup | None = None
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._live: dict[DnsName, tuple[Record, ...]] = {}  # what the inventory holds
        self._timers: dict[DnsName, asyncio.TimerHandle] = {}  # end of a kept answer's grace
        # Thousands of names loaded at once must not flood the nameserver (or drop answers in a
        # full socket buffer, which would read as timeouts): lookups take turns.
        self._turns = asyncio.Semaphore(settings.max_concurrent)
        self._published = Inventory(endpoints={})

    @property
    def inventory(self) -> Inventory:
        """The DNS part of the inventory, as last handed to `on_change`."""
        return self._published

    def update_policies(self, policies: PolicySet) -> None:
        """Follow the DNS names of `policies.clusters` from now on (a `FileSource` deliver)."""
        uses = port_uses(policies.clusters)
        for name in set(self._uses) - set(uses):
            stop = self._stops.pop(name, None)
            if stop is not None:
                stop.set()
            self._stop_timer(name)
            self._states.pop(name, None)
            self._live.pop(name, None)
        added = set(uses) - set(self._uses)
        self._uses = uses
        for name in sorted(added, key=str):
            self._start(name)
        self._publish()

    def status(self) -> tuple[DnsNameStatus, ...]:
        """One entry per followed name; it agrees with `inventory` (both show what is published)."""
        now, wall = time.monotonic(), time.time()

        def epoch(at: float | None) -> float | None:
            return None if at is None else wall - (now - at)

        out = []
        for name, uses in sorted(self._uses.items(), key=lambda item: str(item[0])):
            state = self._states.get(name, NameState())
            live = self._live.get(name, ())
            if state.failing_since is None:
                fresh = state.answered_at is not None
                condition = NameCondition.FRESH if fresh else NameCondition.PENDING
            else:
                condition = NameCondition.STALE if live else NameCondition.FAILED
            out.append(
                DnsNameStatus(
                    name=str(name),
                    used_by=tuple(f"{u.cluster} {u.ref}" for u in uses),
                    condition=condition,
                    addresses=tuple(_shown(r, srv=name.srv is not None) for r in live),
                    ttl_s=state.ttl_s,
                    answered_at=epoch(state.answered_at),
                    stale_since=epoch(state.failing_since),
                    error=state.error,
                    failures=state.failures,
                )
            )
        return tuple(out)

    async def run(self) -> NoReturn:
        """Resolve every followed name until cancelled."""
        self._resolver = await self._make_resolver()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for name in sorted(self._uses, key=str):
                    self._start(name)
                try:
                    await asyncio.Event().wait()  # the names' tasks do the work
                except asyncio.CancelledError:
                    for stop in self._stops.values():
                        stop.set()  # each task ends after its lookup in flight (see above)
        finally:
            self._group = None
            self._stops.clear()
            for name in list(self._timers):
                self._stop_timer(name)
        raise asyncio.CancelledError  # only cancellation ends the wait above

    def _start(self, name: DnsName) -> None:
        if self._group is not None and name not in self._stops:
            stop = self._stops[name] = asyncio.Event()
            self._group.create_task(self._follow(name, stop), name=f"dns {name}")

    def _stop_timer(self, name: DnsName) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    async def _make_resolver(self) -> dns.asyncresolver.Resolver:
        if self.settings.nameserver is None:
            # Reads /etc/resolv.conf: file I/O, so off the event loop.
            resolver = await asyncio.to_thread(dns.asyncresolver.Resolver)
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            address, port = parse_nameserver(self.settings.nameserver)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port)]
        resolver.timeout = resolver.lifetime = self.settings.timeout_s
        resolver.use_edns(0, 0, _UDP_PAYLOAD)
        resolver.cache = None  # refreshing by TTL is this module's job
        return resolver

    async def _follow(self, name: DnsName, stop: asyncio.Event) -> None:
        """Look `name` up, publish what changed, wait for the TTL or the retry; until `stop`."""
        while not stop.is_set():
            try:
                async with self._turns:
                    records, ttl_s = await self._lookup(name)
            except _LookupFailed as exc:
                if stop.is_set():
                    return
                state = self._states.get(name, NameState()).failed(str(exc), time.monotonic())
                if state.failures == 1:
                    kept = "keeps its last answer" if state.records else "has no answer yet"
                    log.warning("dns name=%s failed, %s: %s", name, kept, exc)
                delay = retry_delay(state.failures, self.settings, self._rng.random())
            else:
                if stop.is_set():
                    return  # retired while it was looked up: the answer matters to nobody
                previous = self._states.get(name, NameState())
                if previous.failing_since is not None:
                    log.warning(
                        "dns name=%s answers again after %d failures", name, previous.failures
                    )
                state = NameState().answered(records, ttl_s, time.monotonic())
                delay = refresh_delay(ttl_s, self.settings, self._rng.random())
            self._states[name] = state
            self._update(name)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()

    def _update(self, name: DnsName) -> None:
        """Publish if the name's live records changed; time the end of a kept answer."""
        self._stop_timer(name)
        state = self._states.get(name)
        if state is None:
            return
        now = time.monotonic()
        live = state.live(now, self.settings.grace_s)
        withdraw_at = state.withdraw_at(self.settings.grace_s)
        if live and withdraw_at is not None:
            # A timer, not the lookup loop: the grace must end on time even while a slow retry
            # is in flight. Should it fire early, `live` is still set here and it is re-armed.
            delay = max(withdraw_at - now, 0.001)
            self._timers[name] = asyncio.get_running_loop().call_later(delay, self._update, name)
        if live == self._live.get(name, ()):
            return
        if not live and state.failing_since is not None:
            log.warning("dns name=%s: grace over, its endpoints leave the table", name)
        self._live[name] = live
        old = self._published.endpoints
        changed = {(use.cluster, use.ref): use.endpoints(live) for use in self._uses.get(name, ())}
        if any(old.get(key) != endpoints for key, endpoints in changed.items()):
            # Only this name's entries are recomputed: thousands of names answering one by one
            # must not cost a full rebuild each. The copy keeps every handed-over value intact.
            self._hand_over({**old, **changed})

    def _publish(self) -> None:
        """Recompute every entry (the names or their ports changed)."""
        endpoints = {
            # One `dns` per service port, so no two names share a key.
            (use.cluster, use.ref): use.endpoints(self._live.get(name, ()))
            for name, uses in self._uses.items()
            for use in uses
        }
        if endpoints != self._published.endpoints:
            self._hand_over(endpoints)

    def _hand_over(self, endpoints: dict[tuple[str, ServiceRef], tuple[Endpoint, ...]]) -> None:
        self._published = Inventory(endpoints=endpoints)
        self._on_change(self._published)

    # -- lookups ----------------------------------------------------------------------------------

    async def _lookup(self, name: DnsName) -> tuple[tuple[Record, ...], float]:
        """The records and TTL of `name`; raises `_LookupFailed`."""
        deadline = time.monotonic() + self.settings.timeout_s
        try:
            if name.srv is not None:
                return await self._srv(dns.name.from_text(name.srv), deadline)
            assert name.hostname is not None  # policies.loading checked: hostname + port
            assert name.port is not None
            addresses, ttl = await self._addresses(dns.name.from_text(name.hostname), deadline)
            return tuple(Record(0, 0, a, name.port) for a in sorted(addresses)), ttl
        except dns.exception.Timeout:
            raise _LookupFailed(f"no answer within {self.settings.timeout_s:g}s") from None
        except dns.resolver.NXDOMAIN:
            raise _LookupFailed("no such name (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            raise _LookupFailed("the name has no records of the type asked for") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise _LookupFailed(_first_line(str(exc) or type(exc).__name__)) from None

    def _lifetime(self, deadline: float) -> float:
        """What is left of one lookup's `timeout_s`, for dnspython's `lifetime`."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise _LookupFailed(f"no answer within {self.settings.timeout_s:g}s")
        return left

    async def _addresses(self, host: dns.name.Name, deadline: float) -> tuple[set[str], float]:
        assert self._resolver is not None
        lifetime = self._lifetime(deadline)
        answers = await self._resolver.resolve_name(host, search=False, lifetime=lifetime)
        ttls = [a.chaining_result.minimum_ttl for a in answers.values() if a.rrset is not None]
        return set(answers.addresses()), float(min(ttls, default=0))

    async def _srv(self, srv: dns.name.Name, deadline: float) -> tuple[tuple[Record, ...], float]:
        assert self._resolver is not None
        lifetime = self._lifetime(deadline)
        answer = await self._resolver.resolve(srv, "SRV", search=False, lifetime=lifetime)
        ttl = float(answer.chaining_result.minimum_ttl)
        rdatas = [r for r in answer if isinstance(r, SRV)]
        if len(rdatas) == 1 and rdatas[0].target == dns.name.root:
            return (), ttl  # RFC 2782: "decidedly not available at this domain"
        extra = _additional(answer.response)
        resolved: dict[dns.name.Name, tuple[set[str], float]] = {}
        missing: list[str] = []
        records: list[Record] = []
        for rdata in rdatas:
            target = rdata.target
            if target == dns.name.root:
                continue
            if target not in resolved:
                if target in extra:
                    resolved[target] = extra[target]
                else:
                    try:
                        resolved[target] = await self._addresses(target, deadline)
                    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                        missing.append(target.to_text())
                        resolved[target] = (set(), ttl)
            addresses, target_ttl = resolved[target]
            if addresses:
                ttl = min(ttl, target_ttl)
            records.extend(Record(rdata.priority, rdata.weight, a, rdata.port) for a in addresses)
        if not records:
            raise _LookupFailed(f"no SRV target has an address: {', '.join(missing)}")
        return tuple(sorted(set(records), key=_srv_order)), ttl


def _additional(response: dns.message.Message) -> Mapping[dns.name.Name, tuple[set[str], float]]:
    """A/AAAA records the server added to an SRV answer (RFC 2782 suggests it), by owner name."""
    found: dict[dns.name.Name, tuple[set[str], float]] = {}
    for rrset in response.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            addresses, ttl = found.get(rrset.name, (set(), float(rrset.ttl)))
            found[rrset.name] = (addresses | {r.address for r in rrset}, min(ttl, rrset.ttl))
    return found


def _srv_order(record: Record) -> tuple[int, int, str, int]:
    """RFC 2782 reading order: lowest priority first, then the heaviest weight."""
    return record.priority, -record.weight, record.host, record.port


def _shown(record: Record, *, srv: bool) -> str:
    address = (
        f"[{record.host}]:{record.port}" if ":" in record.host else f"{record.host}:{record.port}"
    )
    return f"{address} prio={record.priority} weight={record.weight}" if srv else address


def _first_line(text: str) -> str:
    return text.splitlines()[0][:300] if text else text
