"""List + watch of one resource in one cluster, for ever. Network I/O through controller.kube.

The protocol, as client-go's reflector runs it:

* LIST, hand the whole set to the sink (`Listed`: it replaces what the sink had, so deletions
  missed while away are noticed), then WATCH from the list's resourceVersion.
* Every event and every BOOKMARK advances the resourceVersion; a watch that ends (server
  timeout, dropped connection) resumes from it, so nothing is replayed twice or skipped.
* 410 Expired (the server no longer has that history) → relist at once.
* A stream that stays silent longer than `stall_s` (no event, no bookmark) is presumed dead —
  a half-open TCP connection looks exactly like a quiet resource — and is restarted.
* Any other failure (unreachable, 429, 5xx, 403 ...) → jittered exponential backoff, then resume
  from the last resourceVersion (a relist only if that turns out to be expired).

Each watcher is its own task: a slow or broken cluster only ever delays its own watchers.
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

from controller import errors
from controller.kube import ClusterClient
from controller.objects import EventType, KubeObject, Resource, WatchEvent

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class WatchSettings:
    """Timers of every watcher. Defaults suit kube-apiserver (it bookmarks about once a minute)."""

    watch_timeout_s: float = 300.0  # timeoutSeconds of one WATCH request; it then resumes
    stall_s: float = 120.0  # silence (no event, no bookmark) after which a stream is restarted
    bookmarks: bool = True  # ask for BOOKMARK events (allowWatchBookmarks)
    backoff_base_s: float = 0.5  # first retry delay after a failure (then doubled each time)
    backoff_max_s: float = 30.0  # ceiling of the retry delay
    min_watch_s: float = 1.0  # a watch that ends quietly sooner than this counts as a failure


@dataclasses.dataclass(frozen=True, slots=True)
class Listed:
    """The complete current set of objects; replaces everything known for (cluster, resource)."""

    cluster: str
    resource: Resource
    objects: tuple[KubeObject, ...]
    resource_version: str


@dataclasses.dataclass(frozen=True, slots=True)
class Changed:
    """One ADDED / MODIFIED / DELETED event (bookmarks never reach the sink)."""

    cluster: str
    resource: Resource
    event: WatchEvent


Update = Listed | Changed
Sink = Callable[[Update], None]  # called synchronously, in order; must not block


@dataclasses.dataclass(slots=True)
class WatchStats:
    """Counters for status pages and tests."""

    lists: int = 0
    watches: int = 0  # WATCH requests started
    events: int = 0
    bookmarks: int = 0
    expired: int = 0  # 410 answers (each followed by a relist)
    stalls: int = 0  # silent streams restarted
    failures: int = 0  # errors followed by a backoff
    last_error: str | None = None


def backoff_s(attempt: int, *, base_s: float, max_s: float, roll: float) -> float:
    """Delay before retry number `attempt` (1-based): exponential, capped, with "equal jitter"
    (a uniform pick in the upper half) so that watchers of many clusters do not retry in step."""
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 30))
    return ceiling / 2 + roll * ceiling / 2


class _Stalled(Exception):
    """The stream was silent for stall_s."""


class Watcher:
    """Keeps `sink` current with one resource of one cluster until cancelled."""

    def __init__(
        self,
        client: ClusterClient,
        resource: Resource,
        sink: Sink,
        settings: WatchSettings,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.settings = settings
        self.stats = WatchStats()
        self.resource_version: str | None = None  # None: the next step is a LIST
        self._sink = sink
        self._namespace = namespace
        self._label_selector = label_selector
        self._rng = rng or random.Random()

    @property
    def name(self) -> str:
        return f"watch {self.resource}@{self.client.cluster}"

    async def run(self) -> NoReturn:
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._relist()
                started = time.monotonic()
                delivered = await self._watch()
                if delivered or time.monotonic() - started >= self.settings.min_watch_s:
                    failures = 0
                    continue
                failure: str = "watch ended at once"
            except errors.Expired as exc:
                self.stats.expired += 1
                log.info("%s: %s; relisting", self.name, exc)
                self.resource_version = None
                continue
            except _Stalled:
                self.stats.stalls += 1
                log.warning("%s: no event for %.1fs; restarting", self.name, self.settings.stall_s)
                continue
            except errors.ControllerError as exc:
                failure = str(exc)
            failures += 1
            self.stats.failures += 1
            self.stats.last_error = failure
            delay = backoff_s(
                failures,
                base_s=self.settings.backoff_base_s,
                max_s=self.settings.backoff_max_s,
                roll=self._rng.random(),
            )
            log.warning("%s: %s; retry %d in %.2fs", self.name, failure, failures, delay)
            await asyncio.sleep(delay)

    async def _relist(self) -> None:
        listed = await self.client.list_objects(
            self.resource, namespace=self._namespace, label_selector=self._label_selector
        )
        self.stats.lists += 1
        self._sink(
            Listed(self.client.cluster, self.resource, listed.items, listed.resource_version)
        )
        self.resource_version = listed.resource_version

    async def _watch(self) -> int:
        """One WATCH request; returns how many events and bookmarks it delivered."""
        assert self.resource_version is not None
        self.stats.watches += 1
        delivered = 0
        stream = self.client.watch_objects(
            self.resource,
            resource_version=self.resource_version,
            timeout_s=self.settings.watch_timeout_s,
            namespace=self._namespace,
            label_selector=self._label_selector,
            bookmarks=self.settings.bookmarks,
        )
        async with contextlib.aclosing(stream) as events:
            while True:
                try:
                    async with asyncio.timeout(self.settings.stall_s):
                        event = await anext(events)
                except StopAsyncIteration:
                    return delivered
                except TimeoutError:
                    raise _Stalled from None
                delivered += 1
                if event.type is EventType.BOOKMARK:
                    self.stats.bookmarks += 1
                else:
                    self.stats.events += 1
                    self._sink(Changed(self.client.cluster, self.resource, event))
                self.resource_version = event.resource_version
