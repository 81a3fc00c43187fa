"""Reconcile: debounced, level-triggered rebuild of the table; publishes only changed content.

Asyncio shell around the pure compiler; the compile and the JSON encoding run in a worker thread.

Level-triggered (traefik's CRD provider, STYLE.md §3.7): inputs are *replaced*, never patched, and
every rebuild compiles ONE table from everything known at that moment, so a missed or coalesced
change can never leave the table half-updated. Inputs:

* the `PolicySet` from a policy source (files, CRDs): `update_policies`;
* the observed `Inventory` (EndpointSlices, DNS answers): `update_inventory`. Static endpoints
  written in `MemberCluster` documents are always included; an observed entry for the same
  (cluster, service port) replaces the static one.

Debounce, leading and trailing edge: a change that comes after a quiet period (no rebuild that
published or failed finished within `debounce_s`; one that found the published content again does
not count) is built at once, so a lone EndpointSlice change is not delayed by the debounce.
Changes that arrive while a rebuild runs, or right after one, are coalesced: the loop waits until
inputs have been quiet for `debounce_s`, but never longer than `max_delay_s` after the first
unbuilt change, so a constantly churning inventory still gets published. A burst shorter than
`max_delay_s` thus costs two rebuilds (its first change, then the rest). The rebuilt table is
published only when its checksum differs from the last published one (traefik's `DeepEqual` skip).

Each rebuild is one table compiled from everything known, but not necessarily from scratch:
`policies.incremental.Compiler` re-resolves only the spreads over services whose endpoints changed
when the policies are the same, and its result equals a full compile.

Versions: `max(previous + 1, wall-clock milliseconds)`. They strictly increase within a run and,
because they follow the clock, keep increasing across controller restarts without a state file;
gateways refuse versions that are not newer than the table they serve, so a restarted controller
counting from 1 would otherwise be ignored until it caught up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable

from controller.published import Snapshot
from controller.publishing import Publisher
from policies import table as tables
from policies.errors import PolicyError
from policies.incremental import Compiler
from policies.model import PolicySet
from policies.table import Inventory
from policies.validation import Refused

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ReconcileSettings:
    """Rebuild pacing (controller process settings)."""

    debounce_s: float = 0.2  # quiet period: a change after one is built at once, others wait one
    max_delay_s: float = 2.0  # rebuild at most this long after the first unbuilt change


@dataclasses.dataclass(frozen=True, slots=True)
class ReconcileStatus:
    """What `/status` and the metrics show about the rebuild loop."""

    version: int | None  # last published version
    checksum: str | None  # its content checksum
    builds: int  # tables compiled
    incremental: int  # ... of which only re-resolved the spreads whose endpoints changed
    published: int  # ... of which had new content and were published
    unchanged: int  # ... of which matched the last published checksum and were dropped
    failures: int  # compiles that raised (once per distinct inputs); the last table stays
    last_error: str | None  # message of the most recent failure, cleared by a success
    pending: bool  # inputs changed since the last compile started


class Reconciler:
    """Owns the rebuild loop. Feed it with `update_*`; run it with `run()` (until cancelled)."""

    def __init__(
        self,
        publisher: Publisher,
        settings: ReconcileSettings | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        build_with: Callable[[Callable[[], Built]], Built] | None = None,
    ) -> None:
        self.settings = settings or ReconcileSettings()
        self._publisher = publisher
        self._wall_clock = wall_clock
        # Runs each compile (in the worker thread): a process that serves the tables it compiles
        # passes one that freezes them before the collector is back on (gateway.frozen_tables).
        self._build_with = build_with or _call
        self._policies: PolicySet | None = None
        self._refused: Refused = frozenset()
        self._observed = Inventory(endpoints={})
        self._changed = asyncio.Event()
        # Input generations: bumped by each update_*, copied by each compile as it takes the
        # inputs. The loop skips a wake-up whose inputs a direct `rebuild()` already compiled.
        self._inputs = self._compiled_inputs = 0
        self._lock = asyncio.Lock()
        self._builds = self._published = self._unchanged = self._failures = 0
        self._incremental = 0
        self._compiler = Compiler()
        self._static: tuple[PolicySet, Inventory] | None = None  # static endpoints per policies
        self._last_error: str | None = None
        # The inputs of the last compile that failed: the compile is pure, so the same inputs
        # fail the same way and are not compiled (or counted) again. File mode's release runner
        # hands the same policies over on every tick until they compile.
        self._failed: tuple[PolicySet, Refused, Inventory] | None = None

    def update_policies(self, policies: PolicySet, refused: Refused = frozenset()) -> None:
        """Replace the policy input. Nothing is built before the first call.

        `refused` names the (route id, service) references no ReferenceGrant allows
        (`LoadResult.refused`); the compiler turns them into unresolved backends (500s).
        """
        self._policies = policies
        self._refused = refused
        self._inputs += 1
        self._changed.set()

    def update_inventory(self, inventory: Inventory) -> None:
        """Replace the observed endpoints (all clusters at once: level-triggered)."""
        self._observed = inventory
        self._inputs += 1
        self._changed.set()

    @property
    def status(self) -> ReconcileStatus:
        latest = self._publisher.latest
        return ReconcileStatus(
            version=latest.version if latest else None,
            checksum=latest.checksum if latest else None,
            builds=self._builds,
            incremental=self._incremental,
            published=self._published,
            unchanged=self._unchanged,
            failures=self._failures,
            last_error=self._last_error,
            pending=self._inputs != self._compiled_inputs,
        )

    async def run(self) -> None:
        """Run the rebuild loop until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._rebuild_loop(), name="reconcile.rebuild")

    async def _rebuild_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_end = -float("inf")
        while True:
            await self._changed.wait()
            first_change = loop.time()
            # Leading edge: the first change after a quiet period is built at once; one that
            # arrived during the last rebuild, or just after it, waits for the burst to settle.
            quiet = first_change - last_end >= self.settings.debounce_s
            while not quiet:
                self._changed.clear()
                quiet_s = min(
                    self.settings.debounce_s,
                    first_change + self.settings.max_delay_s - loop.time(),
                )
                if quiet_s <= 0:
                    break
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the event fires (python/cpython#86296); the loop would
                # then never stop.
                try:
                    async with asyncio.timeout(quiet_s):
                        await self._changed.wait()
                except TimeoutError:
                    break
            self._changed.clear()
            unchanged = self._unchanged
            async with self._lock:
                if self._inputs == self._compiled_inputs:
                    # A direct `rebuild()` (file mode's release runner after each load) already
                    # compiled these inputs: building them again would change nothing, and count
                    # a compile failure twice.
                    continue
                try:
                    await self._rebuild_locked()
                # Top of a long-lived task: a compiler bug must not stop future rebuilds, and the
                # last published table keeps serving meanwhile.
                except Exception as exc:
                    self._failures += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("rebuild failed; the last published table stays")
            if self._unchanged == unchanged:
                # A rebuild that found the published content again changed nothing for the
                # gateways: it does not make the next change wait.
                last_end = loop.time()

    async def rebuild(self) -> Snapshot | None:
        """Compile now from the current inputs; publish and return the snapshot if it changed.

        Callers that need the table at once (file mode's release runner) call this right after
        `update_policies`; the loop then finds those inputs compiled and does not build them again.
        Returns None when there is no policy input yet, when the content is unchanged, or when
        the policies do not compile (logged and counted; the last published table stays).
        """
        async with self._lock:
            return await self._rebuild_locked()

    async def _rebuild_locked(self) -> Snapshot | None:
        self._compiled_inputs = self._inputs
        policies = self._policies
        if policies is None:
            return None
        latest = self._publisher.latest
        version = self._next_version(latest)
        last_checksum = latest.checksum if latest else None
        inputs = (policies, self._refused, self._observed)
        failed = self._failed
        if (
            failed is not None
            and failed[2] is inputs[2]
            and failed[1] == inputs[1]
            and failed[0] == policies
        ):
            return None  # the last error stands
        self._builds += 1
        if self._static is None or self._static[0] is not policies:
            self._static = (policies, tables.inventory_from_clusters(policies.clusters))
        inventory = _merged(self._static[1], inputs[2])
        try:
            build = functools.partial(
                _build, self._compiler, policies, inputs[1], inventory, version, last_checksum
            )
            built, incremental = await asyncio.to_thread(self._build_with, build)
        except PolicyError as exc:
            self._failures += 1
            self._last_error = str(exc)
            self._failed = inputs
            for problem in exc.problems:
                log.error("table not compiled: %s", problem)
            return None
        self._last_error = None
        self._failed = None
        if incremental:
            self._incremental += 1
        if built is None:
            self._unchanged += 1
            log.debug("rebuild produced the published content; not publishing")
            return None
        self._published += 1
        return self._publisher.publish(built)

    def _next_version(self, latest: Snapshot | None) -> int:
        previous = latest.version if latest else 0
        return max(previous + 1, int(self._wall_clock() * 1000))


def merge_inventory(policies: PolicySet, observed: Inventory) -> Inventory:
    """Static MemberCluster endpoints, overridden per (cluster, service port) by observed ones."""
    return _merged(tables.inventory_from_clusters(policies.clusters), observed)


def _merged(static: Inventory, observed: Inventory) -> Inventory:
    if not observed.endpoints:
        return static
    if not static.endpoints:
        return observed
    return Inventory(endpoints={**static.endpoints, **observed.endpoints})


Built = tuple[Snapshot | None, bool]


def _call(build: Callable[[], Built]) -> Built:
    return build()


def _build(
    compiler: Compiler,
    policies: PolicySet,
    refused: Refused,
    inventory: Inventory,
    version: int,
    last_checksum: str | None,
) -> Built:
    """Compile and encode (worker thread; inputs are frozen): (the snapshot, None when the content
    is unchanged; whether the compile was incremental)."""
    compiled = compiler.compile(policies, inventory, version=version, refused=refused)
    incremental = compiled.changed is not None
    if compiled.table.checksum == last_checksum:
        return None, incremental
    return Snapshot.from_parts(compiled.table, compiled.parts), incremental
