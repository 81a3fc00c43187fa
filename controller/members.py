"""The member clusters as observed: Services, EndpointSlices and readiness of each, folded into one
`policies.table.Inventory`. Network I/O (watchers and probes, through controller.kube).

The caller owns the tasks: it runs `watch_cluster(client)` once per member cluster in its own
TaskGroup and cancels it when the cluster leaves the fleet; the cluster's state leaves with it.
`on_change` is called synchronously after every change (debounce it: it fires per event).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Callable, Mapping

from controller import inventory, objects
from controller.health import ClusterHealth, HealthProbe, HealthSettings
from controller.kube import ClusterClient
from controller.watching import Changed, Listed, Update, Watcher, WatchSettings
from policies.table import Inventory


@dataclasses.dataclass(frozen=True, slots=True)
class MemberSettings:
    watch: WatchSettings = dataclasses.field(
        default_factory=WatchSettings
    )  # list+watch timers, per watched resource
    health: HealthSettings = dataclasses.field(
        default_factory=HealthSettings
    )  # /readyz probing and the withdrawal grace


class Members:
    """Observed state of every member cluster that has a running `watch_cluster` task."""

    def __init__(
        self,
        settings: MemberSettings,
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.observed = inventory.Observed()
        self._on_change = on_change
        self._clock = clock
        self._rng = rng or random.Random()
        self._probes: dict[str, HealthProbe] = {}
        self._cached: tuple[inventory.Observed, frozenset[str], Inventory] | None = None
        self._watchers: dict[str, tuple[Watcher, ...]] = {}

    def health(self, cluster: str) -> ClusterHealth | None:
        probe = self._probes.get(cluster)
        return probe.state if probe else None

    def watchers(self, cluster: str) -> Mapping[objects.Resource, Watcher]:
        return {w.resource: w for w in self._watchers.get(cluster, ())}

    def withdrawn(self) -> frozenset[str]:
        return frozenset(name for name, probe in self._probes.items() if probe.withdrawn)

    def inventory(self) -> Inventory:
        """Endpoints of every synced cluster that is not withdrawn. Cached until either changes
        (merging 10 clusters x 5000 endpoints costs about 2 ms)."""
        observed, withdrawn = self.observed, self.withdrawn()
        cached = self._cached
        if cached is None or cached[0] is not observed or cached[1] != withdrawn:
            cached = self._cached = (
                observed,
                withdrawn,
                inventory.to_inventory(observed, withdrawn=withdrawn),
            )
        return cached[2]

    async def watch_cluster(self, client: ClusterClient) -> None:
        """Watch one cluster until cancelled. The client stays the caller's to close."""
        cluster = client.cluster
        if cluster in self._probes:
            raise ValueError(f"cluster {cluster!r} is already watched")
        watchers = tuple(
            Watcher(client, resource, self._apply, self.settings.watch, rng=self._rng)
            for resource in inventory.WATCHED
        )
        probe = HealthProbe(client, self.settings.health, self._on_change, clock=self._clock)
        self._watchers[cluster], self._probes[cluster] = watchers, probe
        try:
            async with asyncio.TaskGroup() as group:
                for watcher in watchers:
                    group.create_task(watcher.run(), name=watcher.name)
                group.create_task(probe.run(), name=f"probe readyz@{cluster}")
        finally:
            del self._watchers[cluster], self._probes[cluster]
            self.observed = inventory.remove_cluster(self.observed, cluster)
            self._on_change()

    def _apply(self, update: Update) -> None:
        if isinstance(update, Listed):
            self.observed = inventory.replace_all(
                self.observed, update.cluster, update.resource, update.objects
            )
        elif isinstance(update, Changed):
            self.observed = inventory.apply_event(
                self.observed, update.cluster, update.resource, update.event
            )
        self._on_change()
