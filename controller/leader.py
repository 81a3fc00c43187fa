"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.
`next_action` is the pure decision; `LeaderElector` does the I/O (hub API, through controller.kube).

* Every replica reads the Lease every `retry_period_s` (with 20 % jitter).
* The holder renews it (a conditional PUT on the resourceVersion it read). A 409 means someone
  else wrote it since: read again and decide again.
* A standby takes the Lease once it has seen the *same* record, unchanged, for
  `lease_duration_s` of its own monotonic clock (never comparing timestamps written by another
  machine's clock), or at once when the holder released it (empty holderIdentity).
* A leader that cannot renew within `renew_deadline_s` of its last renewal stops leading —
  before any standby may take over, because renew_deadline_s < lease_duration_s — so two
  replicas never both believe they lead (up to clock-rate drift during one lease).
* On a graceful stop the leader releases the Lease so a standby takes over at once.

Deviation from client-go: expiry is judged with this replica's `lease_duration_s`, not the
record's whole-second `leaseDurationSeconds`; every replica runs the same settings, and it lets
tests use sub-second leases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import enum
import logging
import random
import time
from collections.abc import Callable

from controller import errors
from controller.kube import ClusterClient
from controller.kube_leases import LeaseRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class LeaderSettings:
    identity: str  # this replica, unique in the fleet (the pod name)
    namespace: str  # namespace of the Lease in the hub cluster
    name: str = "fleetgate-controller"  # the Lease every replica competes for
    lease_duration_s: float = 15.0  # a standby takes over this long after the last change it saw
    renew_deadline_s: float = 10.0  # a leader that could not renew for this long steps down
    retry_period_s: float = 2.0  # time between two attempts to acquire or renew
    release_on_stop: bool = True  # on a graceful stop, hand the Lease over at once

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError(
                "leader election needs 0 < retry_period_s < renew_deadline_s < lease_duration_s, "
                f"got {self.retry_period_s}, {self.renew_deadline_s}, {self.lease_duration_s}"
            )


class Action(enum.Enum):
    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # we hold it
    TAKE_OVER = "take_over"  # released, or unchanged for a whole lease duration
    WAIT = "wait"  # someone else holds a live lease


def next_action(
    record: LeaseRecord | None,
    *,
    identity: str,
    unchanged_since: float,
    now: float,
    lease_duration_s: float,
) -> Action:
    """What to do about the Lease as read. `unchanged_since` is when this replica first saw the
    record's current resourceVersion (its own monotonic clock)."""
    if record is None:
        return Action.CREATE
    if record.holder == identity:
        return Action.RENEW
    if not record.holder or now - unchanged_since >= lease_duration_s:
        return Action.TAKE_OVER
    return Action.WAIT


class LeaderElector:
    """Competes for the Lease until cancelled. Read `is_leader`; callbacks fire on each change."""

    def __init__(
        self,
        client: ClusterClient,
        settings: LeaderSettings,
        *,
        on_started_leading: Callable[[], None] = lambda: None,
        on_stopped_leading: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.is_leader = False
        self.holder = ""  # the holder last seen (ourselves when leading)
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._clock = clock
        self._rng = rng or random.Random()
        self._seen_rv = ""  # resourceVersion of the last record read or written
        self._seen_at = 0.0  # when that resourceVersion was first seen
        self._renewed_at = 0.0  # last successful write while leading
        self._record: LeaseRecord | None = None

    async def run(self) -> None:
        try:
            while True:
                await self._attempt()
                period = self.settings.retry_period_s
                await asyncio.sleep(period * (1 + 0.2 * self._rng.random()))
        finally:
            if self.is_leader:
                self._lead(False)
                if self.settings.release_on_stop and self._record is not None:
                    await asyncio.shield(self._release(self._record))

    async def _attempt(self) -> None:
        if not self.is_leader:
            await self._try()
            return
        # A leader must know within its renew deadline whether it still leads.
        remaining = self._renewed_at + self.settings.renew_deadline_s - self._clock()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                await self._try()
        except TimeoutError:
            log.warning("lease %s: renewal timed out", self._lease_id)
        overdue = self._clock() - self._renewed_at >= self.settings.renew_deadline_s
        if overdue and self.is_leader:  # (_try may have stepped down already)
            log.warning("lease %s: not renewed within the deadline; stepping down", self._lease_id)
            self._lead(False)

    async def _try(self) -> None:
        settings = self.settings
        try:
            record: LeaseRecord | None = await self.client.read_lease(
                settings.namespace, settings.name
            )
        except errors.NotFound:
            record = None
        except errors.ControllerError as exc:
            log.warning("lease %s: cannot read: %s", self._lease_id, exc)
            return
        now = self._clock()
        seen_rv = record.resource_version if record else ""
        if seen_rv != self._seen_rv:
            self._seen_rv, self._seen_at = seen_rv, now
        action = next_action(
            record,
            identity=settings.identity,
            unchanged_since=self._seen_at,
            now=now,
            lease_duration_s=settings.lease_duration_s,
        )
        if action is Action.WAIT:
            assert record is not None
            self.holder = record.holder
            if self.is_leader:
                log.warning("lease %s: now held by %s; stepping down", self._lease_id, self.holder)
                self._lead(False)
            return
        wall = datetime.datetime.now(datetime.UTC)
        desired = LeaseRecord(
            namespace=settings.namespace,
            name=settings.name,
            holder=settings.identity,
            duration_s=settings.lease_duration_s,
            acquire_time=record.acquire_time if action is Action.RENEW and record else wall,
            renew_time=wall,
            transitions=_transitions(record, settings.identity),
            resource_version=seen_rv,
        )
        try:
            if action is Action.CREATE:
                written = await self.client.create_lease(desired)
            else:
                written = await self.client.replace_lease(desired)
        except errors.Conflict:
            log.info("lease %s: lost a write race; reading again", self._lease_id)
            return
        except errors.ControllerError as exc:
            log.warning("lease %s: cannot write: %s", self._lease_id, exc)
            return
        self._record = written
        self._seen_rv, self._seen_at = written.resource_version, self._clock()
        self._renewed_at = self._seen_at
        self.holder = settings.identity
        if not self.is_leader:
            self._lead(True)

    async def _release(self, record: LeaseRecord) -> None:
        released = dataclasses.replace(
            record, holder="", renew_time=datetime.datetime.now(datetime.UTC)
        )
        try:
            await self.client.replace_lease(released)
        except errors.ControllerError as exc:  # the standby will wait for expiry instead
            log.warning("lease %s: cannot release: %s", self._lease_id, exc)

    def _lead(self, leading: bool) -> None:
        self.is_leader = leading
        log.warning(
            "lease %s: %s %s",
            self._lease_id,
            self.settings.identity,
            "is leading" if leading else "stopped leading",
        )
        (self._on_started if leading else self._on_stopped)()

    @property
    def _lease_id(self) -> str:
        return f"{self.settings.namespace}/{self.settings.name}@{self.client.cluster}"


def _transitions(record: LeaseRecord | None, identity: str) -> int:
    if record is None:
        return 0
    if record.holder == identity:
        return record.transitions
    return record.transitions + 1
