"""The release runner: drives the pure engine (`policies.releases`) for every started release.

Asyncio shell; its I/O is the reconcile hook (compile + publish), the state store, the
observation sources and the webhook. It sits between the policy source and the reconciler:

    FileSource(deliver=runner.update_policies)    # the operator's files (or CRDs)
    ReleaseRunner(settings, publisher, reconciler_hook(reconciler), clock=time.time)

and hands reconcile the *effective* policy set: the operator's documents, with rolled-back
policies in place (`controller.rollbacks`) and every release's overlay applied
(`policies.overlays`). Live weights therefore never touch the operator's files.

One tick (every `tick_interval_s`, and at once after any change):

1. measurements: take the counter baseline of a newly opened analysis window, and measure every
   window that has ended (network I/O, outside the lock so operator actions never wait on it);
2. `releases.advance` each release with `now`, the overlay revision the *whole* fleet serves, and
   the measurement. A revision counts as applied only once every live gateway registered with the
   Publisher (at least `min_gateways`) has applied the snapshot version that carries it;
3. perform the actions: SetOverlay → revision history, RunAnalysis → open a window, Notify →
   webhook and event journal;
4. save the state, THEN hand the new effective policy set to reconcile. In that order a crash
   can only lose a change the fleet never saw, so a restarted controller re-publishes exactly the
   weights in its state file: no step is repeated and no weight moves.

Operator actions (`act`, `rollback_policy`) take the same lock, run the engine's action, and are
saved and handed to reconcile before they return.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from controller import release_actions
from controller import release_records as records
from controller.notify import Notifier, NotifySettings
from controller.observations import Observations, ObservationSettings
from controller.publishing import Publisher
from controller.reconcile import Reconciler
from controller.release_actions import ACTIONS
from controller.release_effective import effective_policies
from controller.release_records import Active, Window
from controller.rollbacks import PolicyHistories
from controller.statefile import StateFile, StateStore
from policies import analysis, overlays, releases, revisions
from policies.model import PolicySet, Release, Route
from policies.release_state import (
    CONTROLLER,
    Notify,
    Phase,
    Refused,
    ReleaseState,
    RunAnalysis,
    SetOverlay,
    Transition,
)
from policies.revisions import History, Revision

log = logging.getLogger(__name__)

ReconcileHook = Callable[[PolicySet], Awaitable[int | None]]
"""Hand reconcile the effective policy set; return the snapshot version that serves it, or None
when it could not be compiled (the last good table stays, and the release waits)."""

__all__ = ["ACTIONS", "ReconcileHook", "ReleaseNotFound", "ReleaseRunner", "ReleaseSettings"]


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseSettings:
    """The release runner (controller process settings)."""

    state_file: Path | None = None  # embedded mode; None = state lives only in memory
    tick_interval_s: float = 1.0  # how often releases are advanced when nothing else wakes them
    min_gateways: int = 1  # a step is never "applied" while fewer gateways are live
    retain: int = 10  # revisions kept per release and per policy
    events: int = 50  # entries kept in each release's event journal
    auto_start: bool = False  # start a Release as soon as it appears in the policies
    observations: ObservationSettings = dataclasses.field(default_factory=ObservationSettings)
    notify: NotifySettings = dataclasses.field(default_factory=NotifySettings)


class ReleaseNotFound(LookupError):
    """No Release document with this id in the current policies."""


def reconciler_hook(reconciler: Reconciler) -> ReconcileHook:
    """The hook for an in-process `Reconciler`: replace its policies and rebuild at once."""

    async def hand_over(policies: PolicySet) -> int | None:
        reconciler.update_policies(policies)
        await reconciler.rebuild()
        status = reconciler.status
        # rebuild() returns None both for "unchanged" (the live table already serves this
        # content) and for "did not compile" (which sets last_error).
        return status.version if status.last_error is None else None

    return hand_over


class ReleaseRunner:
    """Runs every started release. `run()` until cancelled; operator actions through `act`."""

    def __init__(
        self,
        settings: ReleaseSettings,
        publisher: Publisher,
        reconcile: ReconcileHook,
        *,
        clock: Callable[[], float] = time.time,
        store: StateStore | None = None,
        observations: Observations | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self._reconcile = reconcile
        self._clock = clock
        if store is None and settings.state_file is not None:
            store = StateFile(settings.state_file)
        self._store = store
        # Built-in analysis scrapes the configured gateways, or else every live gateway that
        # reported its metrics URL when polling for snapshots (`Publisher.metrics_urls`).
        self._observations = observations or Observations(
            settings.observations,
            targets=lambda: settings.observations.metrics_urls or publisher.metrics_urls(),
        )
        self.notifier = notifier or Notifier(settings.notify)
        self.policies = PolicyHistories(retain=settings.retain)
        self._files: PolicySet | None = None
        self._specs: dict[str, Release] = {}
        self._active: dict[str, Active] = {}
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._files_changed = False
        self._push_needed = False
        self._save_needed = False
        self.ticks = 0  # completed ticks, for status output and for tests to wait on

    # -- inputs ----------------------------------------------------------------------------

    def update_policies(self, policies: PolicySet) -> None:
        """The policy source's `deliver`: the operator's documents, whole (level-triggered)."""
        self._files = policies
        self._files_changed = True
        self._wake.set()

    async def run(self) -> None:
        """Load the saved state (unless `prime` did), then tick until cancelled."""
        if not self._ready.is_set():
            await self._load()
        await self._observations.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._loop(), name="releases.tick")
                tg.create_task(self.notifier.run(), name="releases.notify")
        finally:
            await self._observations.close()

    async def prime(self) -> None:
        """Load the saved state and hand reconcile the effective policies once, before `run`.

        For compositions that must publish their first table before serving (`fleetgate run`,
        `fleetgate controller -c`): that table then already carries the saved overlays, so a
        restart never serves the operator's files without the live weights, even briefly.
        Raises `StateFileError` on a damaged state file.
        """
        if not self._ready.is_set():
            await self._load()
        async with self._lock:
            if self._files_changed:
                self._sync_policies()
            await self._commit()

    @property
    def ready(self) -> bool:
        """The saved state is loaded: from now on this runner decides what is served."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        """Return once the saved state is loaded (operator actions wait for it too)."""
        await self._ready.wait()

    # -- operator actions ------------------------------------------------------------------

    async def act(
        self,
        release_id: str,
        action: str,
        *,
        actor: str,
        weight: int | None = None,
        immediate: bool = False,
    ) -> Transition | Refused:
        """Run an operator action (one of `ACTIONS`); saved and handed to reconcile on return."""
        if action not in ACTIONS:
            raise ValueError(f"unknown release action {action!r}")
        await self._ready.wait()
        async with self._lock:
            if self._files_changed:
                self._sync_policies()
            spec = self._spec(release_id)
            now = self._clock()
            active = self._active.get(release_id)
            result = release_actions.decide(
                release_id,
                spec,
                active.state if active is not None else None,
                action,
                now=now,
                actor=actor,
                weight=weight,
                immediate=immediate,
            )
            if isinstance(result, Refused):
                return result
            if active is None:
                active = self._active[release_id] = records.new(
                    release_id, result.state, events=self.settings.events
                )
            self._perform(release_id, active, result)
            active.events.append(records.Event(now, actor, action, result.state.message))
            self._save_needed = True
            await self._commit()
        self._wake.set()
        return result

    async def rollback_policy(self, route_id: str, number: int, *, actor: str) -> Revision[Route]:
        """Make revision `number` of a policy live again (see `controller.rollbacks`). Raises
        `rollbacks.UnknownPolicy` or `rollbacks.RollbackRefused`."""
        await self._ready.wait()
        async with self._lock:
            if self._files_changed:
                self._sync_policies()
            revision = self.policies.rollback(route_id, number, at=self._clock(), actor=actor)
            self._save_needed = self._push_needed = True
            await self._commit()
        self._wake.set()
        return revision

    # -- reading ---------------------------------------------------------------------------

    def release_ids(self) -> tuple[str, ...]:
        """Every release in the policies, started or not."""
        return tuple(sorted(self._specs))

    def spec(self, release_id: str) -> Release:
        return self._spec(release_id)

    def state(self, release_id: str) -> ReleaseState | None:
        active = self._active.get(release_id)
        return active.state if active is not None else None

    def history(self, release_id: str) -> History[overlays.Overlay]:
        active = self._active.get(release_id)
        if active is None:
            self._spec(release_id)
            return History(release_id)
        return active.history

    def view(self, release_id: str) -> dict[str, Any]:
        """Everything `fleetgate release status` shows, as JSON-able data."""
        spec = self._spec(release_id)
        return records.view(spec, self._active.get(release_id), self.publisher)

    # -- the loop --------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._tick()
            # Top of a long-lived task: one bad tick (a bug, a store that cannot write) must not
            # stop every release; the state in memory and on disk stays as it was.
            except Exception:
                log.exception("release tick failed")
            self.ticks += 1
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as it times out (gh-86296), and the runner would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.tick_interval_s):
                    await self._wake.wait()

    async def _tick(self) -> None:
        if self._files is None:
            return
        measured = await self._measure()
        async with self._lock:
            if self._files_changed:
                self._sync_policies()
            for release_id, active in list(self._active.items()):
                spec = self._specs.get(release_id)
                if spec is None:
                    continue
                observation = measured.get(release_id)
                if observation is not None and observation[0] is not active.window:
                    observation = None  # the window was closed meanwhile (pause, abort)
                before = active.state
                transition = releases.advance(
                    spec,
                    before,
                    now=self._clock(),
                    applied_revision=self._applied_revision(active),
                    observation=observation[1] if observation else None,
                )
                self._perform(release_id, active, transition)
                if transition.state != before:
                    self._save_needed = True
            await self._commit()

    async def _measure(self) -> dict[str, tuple[Window, analysis.Observation]]:
        """Open baselines and finished windows (network I/O, no lock held)."""
        members = self._files.clusters if self._files else ()
        now = self._clock()
        out: dict[str, tuple[Window, analysis.Observation]] = {}
        for release_id, active in list(self._active.items()):
            window, spec = active.window, self._specs.get(release_id)
            if window is None or spec is None:
                continue
            try:
                if window.baseline is None:
                    window.baseline = await self._observations.begin(spec, members)
                    self._save_needed = True
                elif now >= window.until:
                    observation = await self._observations.measure(
                        spec,
                        members,
                        since=window.since,
                        until=window.until,
                        baseline=window.baseline,
                    )
                    out[release_id] = (window, observation)
            # The sources already turn network failures into empty samples; anything else is a
            # bug, and an empty observation (inconclusive: a pause) is the safe answer to it.
            except Exception:
                log.exception("measuring release %s failed", release_id)
                out[release_id] = (window, analysis.Observation(canary=analysis.Sample()))
        return out

    def _applied_revision(self, active: Active) -> int:
        if active.carried is not None and active.carried[0] == active.state.revision:
            rollout = self.publisher.rollout(active.carried[1])
            if rollout.done and rollout.total >= self.settings.min_gateways:
                active.applied = active.state.revision
        return active.applied

    def _perform(self, release_id: str, active: Active, transition: Transition) -> None:
        active.state = transition.state
        tally = transition.state.tally
        if active.window is not None and tally.window_start != active.window.since:
            active.window = None
        for action in transition.actions:
            if isinstance(action, SetOverlay):
                active.history = revisions.record(
                    active.history, action.revision, retain=self.settings.retain
                )
                self._push_needed = True
                log.info(
                    "release %s revision %d: %s (actor=%s)",
                    release_id,
                    action.revision.number,
                    action.revision.reason,
                    action.revision.actor,
                )
            elif isinstance(action, RunAnalysis):
                active.window = Window(action.since, action.until)
                self._wake.set()  # take the baseline now, not a tick later
            elif isinstance(action, Notify):
                self.notifier.send(action)
                active.events.append(records.Event(action.at, CONTROLLER, "phase", action.message))
                log.info(
                    "release %s is %s (%s): %s",
                    release_id,
                    action.phase.value,
                    action.reason,
                    action.message,
                )
        if transition.actions:
            self._save_needed = True

    async def _commit(self) -> None:
        """Save, then hand reconcile the effective policies (see the module docstring)."""
        if self._save_needed and self._store is not None:
            await self._store.save(self._dump())
        self._save_needed = False
        if self._push_needed and self._files is not None:
            await self._push()

    async def _push(self) -> None:
        assert self._files is not None
        states = {release_id: active.state for release_id, active in self._active.items()}
        effective = effective_policies(self._files, self.policies, states)
        for release_id in effective.overlays:
            active = self._active[release_id]
            problem = effective.problems.get(release_id)
            if problem is not None and problem != active.problem:
                log.error("release %s overlay not applied: %s", release_id, problem)
            active.problem = problem
        try:
            version = await self._reconcile(effective.policies)
        # The hook is the reconciler's (compile, encode, publish); whatever it raises, the
        # releases wait and the next tick hands the same policies over again.
        except Exception:
            log.exception("handing the effective policies to reconcile failed")
            return
        if version is None:
            log.error("the effective policies did not compile; releases wait for the fleet")
            return  # _push_needed stays: the next tick tries again
        self._push_needed = False
        for release_id, overlay in effective.overlays.items():
            self._active[release_id].carried = (overlay.revision, version)

    def _sync_policies(self) -> None:
        assert self._files is not None
        self._files_changed = False
        if self.policies.observe(self._files, at=self._clock()):
            self._save_needed = True
        self._specs = {spec.id: spec for spec in self._files.releases}
        for release_id in list(self._active):
            spec = self._specs.get(release_id)
            if spec is None:
                log.info("release %s removed from the policies; its overlay is dropped", release_id)
                del self._active[release_id]
                self._save_needed = True
                continue
            state = self._active[release_id].state
            steps = len(spec.steps)
            running = state.phase in (Phase.PROGRESSING, Phase.PAUSED)
            if spec.strategy == "Canary" and running and 0 < steps <= state.step_index:
                log.warning("release %s lost steps; holding at its last step", release_id)
                self._active[release_id].state = dataclasses.replace(state, step_index=steps - 1)
        if self.settings.auto_start:
            now = self._clock()
            for release_id, spec in self._specs.items():
                if release_id not in self._active:
                    transition = releases.start(spec, now=now, actor=CONTROLLER)
                    active = records.new(release_id, transition.state, events=self.settings.events)
                    self._active[release_id] = active
                    self._perform(release_id, active, transition)
        self._push_needed = True

    def _spec(self, release_id: str) -> Release:
        spec = self._specs.get(release_id)
        if spec is None:
            raise ReleaseNotFound(release_id)
        return spec

    # -- persistence -----------------------------------------------------------------------

    def _dump(self) -> dict[str, Any]:
        return records.dump_document(self._active, self.policies)

    async def _load(self) -> None:
        document = await self._store.load() if self._store is not None else None
        if document:
            restored = records.restore_releases(document, events=self.settings.events)
            for release_id, active in restored.items():
                self._active[release_id] = active
                log.info(
                    "release %s resumed at step %d, canary weight %d (%s)",
                    release_id,
                    active.state.step_index,
                    active.state.canary_weight,
                    active.state.phase.value,
                )
            self.policies.restore(document.get("policies") or {})
            self._push_needed = True
        self._ready.set()
