"""DNS endpoints: the A/AAAA and SRV names of MemberCluster service ports, resolved and kept fresh.
Network I/O (through controller.dns_lookup) and timers; the decisions are in controller.dns_state.

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

The pure parts are re-exported here, so `controller.dns` stays the one import for callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import NoReturn

from controller.dns_lookup import LookupFailed, Lookups
from controller.dns_state import (
    DnsSettings,
    NameCondition,
    NameState,
    PortUse,
    Record,
    parse_nameserver,
    port_uses,
    refresh_delay,
    retry_delay,
    shown,
)
from policies.model import DnsName, PolicySet, ServiceRef
from policies.table import Endpoint, Inventory

__all__ = [
    "DnsEndpoints",
    "DnsNameStatus",
    "DnsSettings",
    "NameCondition",
    "NameState",
    "PortUse",
    "Record",
    "parse_nameserver",
    "port_uses",
    "refresh_delay",
    "retry_delay",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class DnsNameStatus:
    """What `/status` shows about one name (statusapi.dns_section). Times are epoch seconds."""

    name: str  # "web.east.internal:8080" or "SRV _https._tcp.web.east.internal"
    used_by: tuple[str, ...]  # "cluster namespace/name:port" of each service port naming it
    condition: NameCondition
    addresses: tuple[str, ...]  # "ip:port" published now (SRV: "ip:port prio=P weight=W")
    ttl_s: float | None  # TTL of the last good answer, as given
    answered_at: float | None  # when the last good answer arrived
    stale_since: float | None  # the first failure since that answer; None while fresh
    error: str | None  # why the last lookup failed
    failures: int  # lookups failed in a row


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
        self._lookups: Lookups | None = None
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
            out.append(
                DnsNameStatus(
                    name=str(name),
                    used_by=tuple(f"{u.cluster} {u.ref}" for u in uses),
                    condition=state.condition(published=bool(live)),
                    addresses=tuple(shown(r, srv=name.srv is not None) for r in live),
                    ttl_s=state.ttl_s,
                    answered_at=epoch(state.answered_at),
                    stale_since=epoch(state.failing_since),
                    error=state.error,
                    failures=state.failures,
                )
            )
        return tuple(out)

    async def prime(self) -> None:
        """Look every followed name up once, now, so that a first table can carry the answers
        (as Envoy warms a DNS cluster before its listeners take traffic). Takes at most about
        `timeout_s`; a name that fails stays pending here, and `run()` retries it at once and
        reports it. `run()` then asks again when these answers' TTLs run out."""
        if self._lookups is None:
            self._lookups = await Lookups.create(self.settings)
        lookups = self._lookups
        async with asyncio.TaskGroup() as group:
            for name in sorted(self._uses, key=str):
                group.create_task(self._prime(name, lookups), name=f"dns prime {name}")

    async def _prime(self, name: DnsName, lookups: Lookups) -> None:
        try:
            async with self._turns:
                records, ttl_s = await lookups.lookup(name)
        except LookupFailed:
            return
        if name in self._uses and name not in self._states:  # still followed, not yet known
            self._states[name] = NameState().answered(records, ttl_s, time.monotonic())
            self._update(name)

    async def run(self) -> NoReturn:
        """Resolve every followed name until cancelled."""
        if self._lookups is None:
            self._lookups = await Lookups.create(self.settings)
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
        group, lookups = self._group, self._lookups
        if group is not None and lookups is not None and name not in self._stops:
            stop = self._stops[name] = asyncio.Event()
            group.create_task(self._follow(name, stop, lookups), name=f"dns {name}")

    def _stop_timer(self, name: DnsName) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    async def _follow(self, name: DnsName, stop: asyncio.Event, lookups: Lookups) -> None:
        """Look `name` up, publish what changed, wait for the TTL or the retry; until `stop`."""
        primed = self._states.get(name)
        if primed is not None and primed.answered_at is not None and primed.ttl_s is not None:
            due = refresh_delay(primed.ttl_s, self.settings, self._rng.random())
            await self._pause(stop, due - (time.monotonic() - primed.answered_at))
        while not stop.is_set():
            try:
                async with self._turns:
                    records, ttl_s = await lookups.lookup(name)
            except LookupFailed as exc:
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
            await self._pause(stop, delay)

    @staticmethod
    async def _pause(stop: asyncio.Event, delay: float) -> None:
        """Wait `delay` seconds, or less if `stop` is set meanwhile."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(delay, 0.0)):
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
