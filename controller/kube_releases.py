"""Releases of one Kubernetes-mode controller replica: the leader's runner, a standby's follower.
Asyncio shell; I/O through controller.kubestate (Release status, the policy-history ConfigMap)
and the reconcile hook.

* **While leading**, a `ReleaseRunner` with a `KubeStateStore` runs every release. It first
  reads the saved records with a fresh LIST (the old leader's last word), and until it has, the
  follower keeps serving them: the hand-over moves no weight. If they cannot be read (the API
  is unreachable, a record is damaged) the releases wait and the read is retried every
  `retry_s`, rather than starting from nothing.
* **Otherwise**, a `ReleaseFollower` serves the policies with the saved records, read from this
  replica's own watches: the Release objects of the hub source (their status, checked every
  `follow_interval_s` and on every policy load) and a watch of the ConfigMap.
* **Stepping down** hands over to the follower only once the Release watch shows the records the
  runner last wrote (an overlay revision at least as high), or after `catch_up_s`: the watch may
  lag the runner's own last write, and serving the record before it would move a weight back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from controller import api, errors, kubestate, objects
from controller.hubsource import HubLoad, HubSource
from controller.kube import ClusterClient
from controller.publishing import Publisher
from controller.release_follow import ReleaseFollower
from controller.releases import ReconcileHook, ReleaseRunner, ReleaseSettings
from controller.watching import Listed, Update, Watcher, WatchSettings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Roles:
    """This replica's part in leader election, as the releases need it."""

    leading: asyncio.Event  # set while this replica leads
    following: asyncio.Event  # set while it does not
    is_leader: Callable[[], bool]
    holder: Callable[[], str]  # the leader's identity ("" when none)
    identity: str  # this replica's


class KubeReleases:
    """Runs (leader) or follows (standby) the releases until cancelled."""

    def __init__(
        self,
        settings: ReleaseSettings,
        hub: ClusterClient,
        source: HubSource,
        publisher: Publisher,
        reconcile: ReconcileHook,
        roles: Roles,
        *,
        namespace: str,
        watch: WatchSettings,
        follow_interval_s: float,
        retry_s: float,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.source = source
        self.publisher = publisher
        self.roles = roles
        self.namespace = namespace  # of the ConfigMap (the controller's namespace)
        self.follow_interval_s = follow_interval_s
        self.retry_s = retry_s
        self.runner: ReleaseRunner | None = None  # while leading (loaded or not yet)
        self.store: kubestate.KubeStateStore | None = None  # of the current leader term
        self.follower = ReleaseFollower(reconcile, retain=settings.retain)
        self._reconcile = reconcile
        self._load: HubLoad | None = None
        self._config_map: Mapping[str, str] | None = None
        self._config_map_watch = Watcher(
            hub,
            kubestate.CONFIG_MAPS,
            self._config_map_changed,
            watch,
            namespace=namespace,
            label_selector=kubestate.LABEL_SELECTOR,
        )
        self._wanted = asyncio.Event()
        self._first_load = asyncio.Event()
        # After stepping down: release id → overlay revision the runner last wrote, until the
        # watch shows it, and the monotonic deadline after which it is not waited for.
        self._floor: dict[str, int] = {}
        self._floor_until = 0.0
        self.catch_up_s = 5.0
        self.follow_rounds = 0  # follower loop iterations, for status output and tests
        self._unreadable: set[str] = set()  # Releases whose saved record is damaged (logged)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow(), name="releases.follow")
            group.create_task(self._config_map_watch.run(), name="releases.state-configmap")
            group.create_task(self._run_leading(), name="releases.lead")

    def update_policies(self, load: HubLoad) -> None:
        """A new policy load (the hub source's deliver passes it on)."""
        self._load = load
        self._first_load.set()
        if self.runner is not None:
            self.runner.update_policies(load.policies)
        self._wanted.set()

    def api_backend(self) -> api.Backend:
        """What the operator API serves from: the leader's runner (None on a standby)."""
        return api.Backend(
            runner=lambda: self.runner if self.roles.is_leader() else None,
            publisher=self.publisher,
            leader=lambda: self.roles.holder() or None,
            identity=self.roles.identity,
        )

    # -- standby: the saved state, read-only -----------------------------------------------------

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.follow_interval_s):
                    await self._wanted.wait()
            self._wanted.clear()
            self.follow_rounds += 1
            load, runner = self._load, self.runner
            if load is None or (runner is not None and runner.ready):
                continue
            if self._floor and not self._caught_up():
                continue
            try:
                await self.follower.show(load.policies, self.saved_state(load), at=time.time())
            # Top of a long-lived task: a bug here must not stop serving snapshots.
            except Exception:
                log.exception("following the saved release state failed")

    def saved_state(self, load: HubLoad) -> dict[str, Any]:
        """The leader's saved state as this replica's watches show it."""
        records: dict[str, Any] = {}
        for spec in load.policies.releases:
            namespace, _, name = spec.id.partition("/")
            doc = self.source.current(objects.RELEASES, namespace, name)
            if doc is None:
                continue
            try:
                record = kubestate.record_of(doc.obj)
            except errors.ControllerError as exc:
                if spec.id not in self._unreadable:
                    log.error("release %s: %s; not served", spec.id, exc)
                    self._unreadable.add(spec.id)
                continue
            self._unreadable.discard(spec.id)
            if record is not None:
                records[spec.id] = record
        policies: dict[str, Any] | None = None
        if self._config_map is not None:
            try:
                policies = kubestate.policies_of(self._config_map)
            except errors.ControllerError as exc:
                log.error("%s; rollbacks not served", exc)
        return {"releases": records, "policies": policies or {}}

    def _caught_up(self) -> bool:
        """Whether the Release watch shows the runner's last writes (see the module docstring).
        An overlay revision at least as high serves the same weights or newer ones: every change
        of the live split bumps it, so a lower one is a record the runner already replaced."""
        if time.monotonic() >= self._floor_until:
            self._floor.clear()
        for release_id, revision in list(self._floor.items()):
            namespace, _, name = release_id.partition("/")
            doc = self.source.current(objects.RELEASES, namespace, name)
            try:
                record = kubestate.record_of(doc.obj) if doc is not None else None
            except errors.ControllerError:
                record = None
            seen = (record or {}).get("state", {}).get("revision") if record else None
            if record is None or (isinstance(seen, int) and seen >= revision):
                del self._floor[release_id]
        return not self._floor

    def _config_map_changed(self, update: Update) -> None:
        """The ConfigMap watch's sink (the label selector lets only ours through)."""
        if isinstance(update, Listed):
            found = [o for o in update.objects if o.meta.name == kubestate.CONFIG_MAP]
            self._config_map = _data(found[0]) if found else None
        elif update.event.obj is not None and update.event.obj.meta.name == kubestate.CONFIG_MAP:
            deleted = update.event.type is objects.EventType.DELETED
            self._config_map = None if deleted else _data(update.event.obj)
        self._wanted.set()

    # -- leader: the runner ----------------------------------------------------------------------

    async def _run_leading(self) -> None:
        while True:
            await self.roles.leading.wait()
            await self._first_load.wait()  # the API says "starting" until the runner exists
            if not self.roles.is_leader():
                continue
            store = self.store = kubestate.KubeStateStore(self.hub, self.namespace)
            runner = ReleaseRunner(self.settings, self.publisher, self._reconcile, store=store)
            if self._load is not None:
                runner.update_policies(self._load.policies)
            self.runner = runner  # the follower serves until the runner has loaded the state
            failed = False
            try:
                async with asyncio.TaskGroup() as group:
                    task = group.create_task(self._lead(runner), name="releases.runner")
                    stepped_down = group.create_task(self.roles.following.wait())
                    await asyncio.wait([task, stepped_down], return_when=asyncio.FIRST_COMPLETED)
                    failed = task.done()
                    task.cancel()
                    stepped_down.cancel()
            finally:
                self.runner = None
                self._floor = store.revisions()
                self._floor_until = time.monotonic() + self.catch_up_s
                self.follower.forget()  # the runner may have served other weights since
                self._wanted.set()
            if failed:
                await asyncio.sleep(self.retry_s)

    async def _lead(self, runner: ReleaseRunner) -> None:
        try:
            await runner.run()
        except errors.ControllerError as exc:
            log.error("cannot resume releases (retrying in %gs): %s", self.retry_s, exc)


def _data(obj: objects.KubeObject) -> Mapping[str, str]:
    data = obj.raw.get("data")
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, Mapping) else {}
