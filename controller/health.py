"""Member cluster API readiness: GET /readyz on a timer. The state machine is pure; `HealthProbe`
does the network I/O (through controller.kube).

A cluster is *down* after `failure_threshold` consecutive failed probes (refused, timed out, or
any answer but 200) and *up* again after `success_threshold` good ones. A down cluster keeps its
endpoints published for `grace_s` — the gateways' own health checks and outlier detection
judge those endpoints meanwhile, and a short API outage (an upgrade, a leader change in etcd)
then moves no traffic at all — and is *withdrawn* after that: its endpoints leave the inventory
and its traffic fails over. Endpoint readiness itself comes from EndpointSlice conditions
(controller.inventory), not from here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import NoReturn

from controller import errors
from controller.kube import ClusterClient

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class HealthSettings:
    interval_s: float = 5.0  # time between two /readyz probes of one cluster
    failure_threshold: int = 3  # consecutive failed probes before the cluster is down
    success_threshold: int = 1  # consecutive good probes before a down cluster is up again
    grace_s: float = 30.0  # how long a down cluster's endpoints stay published


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterHealth:
    """What the probes said so far. A cluster starts up: until proven otherwise it is trusted,
    and it has no endpoints to publish before its first list anyway."""

    up: bool = True
    failures: int = 0  # consecutive failed probes
    successes: int = 0  # consecutive good probes
    down_since: float | None = None  # monotonic seconds when it went down
    detail: str = ""  # the last probe's outcome, for status

    def withdrawn(self, now: float, settings: HealthSettings) -> bool:
        """True once the cluster has been down for the whole grace period."""
        return self.down_since is not None and now - self.down_since >= settings.grace_s


def observe(
    state: ClusterHealth, *, ok: bool, now: float, settings: HealthSettings, detail: str = ""
) -> ClusterHealth:
    """The state after one probe."""
    if ok:
        successes = state.successes + 1
        if not state.up and successes >= settings.success_threshold:
            return ClusterHealth(up=True, successes=successes, detail=detail)
        return dataclasses.replace(state, failures=0, successes=successes, detail=detail)
    failures = state.failures + 1
    if state.up and failures >= settings.failure_threshold:
        return ClusterHealth(up=False, failures=failures, down_since=now, detail=detail)
    return dataclasses.replace(state, failures=failures, successes=0, detail=detail)


class HealthProbe:
    """Probes one cluster until cancelled; calls `on_change` when up/down or withdrawn flips."""

    def __init__(
        self,
        client: ClusterClient,
        settings: HealthSettings,
        on_change: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.settings = settings
        self.state = ClusterHealth()
        self._on_change = on_change
        self._clock = clock

    @property
    def withdrawn(self) -> bool:
        return self.state.withdrawn(self._clock(), self.settings)

    async def run(self) -> NoReturn:
        was = (self.state.up, self.withdrawn)
        while True:
            try:
                await self.client.probe_readyz()
                ok, detail = True, "ready"
            except errors.ControllerError as exc:
                ok, detail = False, str(exc)
            self.state = observe(
                self.state, ok=ok, now=self._clock(), settings=self.settings, detail=detail
            )
            now = (self.state.up, self.withdrawn)
            if now != was:
                log.warning("cluster=%s up=%s withdrawn=%s: %s", self.client.cluster, *now, detail)
                was = now
                self._on_change()
            await asyncio.sleep(self.settings.interval_s)
