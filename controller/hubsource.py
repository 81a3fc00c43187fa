"""The hub cluster source: fleetgate and Gateway API objects in the hub → whole policy sets.
Network I/O through controller.watching (list + watch of five resources); `load_hub` is pure.

Watched: MemberCluster, ReferenceGrant, TrafficPolicy, HTTPRoute and Release. Each object is
written back out as one YAML document (apiVersion, kind, the metadata that matters, spec) and the
whole set goes through `policies.loading.load_documents`, under a display name such as
`k8s:TrafficPolicy/shop/web` (cluster-scoped: `k8s:MemberCluster/east`), so a problem reads the
same as for a file: `k8s:TrafficPolicy/shop/web:7:9: spec.rules[0]...: message`. The line and
column are those of that generated document; the field path is what to look at.

* **Level-triggered.** Any change of an object's policy content (not of its status: the leader's
  own status writes would otherwise feed back into rebuilds) marks the set dirty; after
  `debounce_s` of quiet the whole set is loaded again and delivered whole. Nothing is delivered
  before every resource has been listed once, so a half-synced hub never looks like deletions.
* **A bad edit never reduces what is served** (DESIGN.md §7), per object: when the current
  generation of an object is rejected and an earlier generation of the same object (same uid)
  was accepted, that earlier one keeps being served (`HubLoad.held`), and the status reports the
  problems of the current one. A new object that is rejected is simply left out; a deleted
  object leaves at once.
* Load order is fixed (MemberCluster, ReferenceGrant, TrafficPolicy, HTTPRoute, Release, then
  namespace and name), so ties between documents are decided the same way on every replica.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import yaml

from controller import objects
from controller.kube import ClusterClient
from controller.objects import EventType, KubeObject, Resource
from controller.watching import Changed, Listed, Update, Watcher, WatchSettings, WatchStats
from policies import loading
from policies.loading import LoadResult
from policies.model import PolicySet, Problem, Severity
from policies.validation import Refused

log = logging.getLogger(__name__)

REFERENCE_GRANTS = Resource(
    "gateway.networking.k8s.io", "v1beta1", "referencegrants", "ReferenceGrant", namespaced=True
)
# In load order: documents that others refer to come first.
HUB_RESOURCES: tuple[Resource, ...] = (
    objects.MEMBER_CLUSTERS,
    REFERENCE_GRANTS,
    objects.TRAFFIC_POLICIES,
    objects.HTTP_ROUTES,
    objects.RELEASES,
)
_ORDER = {resource: index for index, resource in enumerate(HUB_RESOURCES)}
# The metadata the policy model reads. Others (managedFields, last-applied annotations, uid,
# resourceVersion) change without changing the policy, or are large.
_META_KEYS = ("name", "namespace", "labels", "creationTimestamp")
_DUMPER: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclasses.dataclass(frozen=True, slots=True)
class HubDocument:
    """One hub object and the policy document it stands for."""

    resource: Resource
    obj: KubeObject  # the object as last seen (status included)
    name: str  # display name: "k8s:<Kind>/<namespace>/<name>" or "k8s:<Kind>/<name>"
    text: str  # the YAML document given to the loader

    @property
    def sort_key(self) -> tuple[int, str, str]:
        return (_ORDER.get(self.resource, len(_ORDER)), *self.obj.meta.key)


@dataclasses.dataclass(frozen=True, slots=True)
class HubLoad:
    """One load of the whole hub: what is served and what each object's problems are."""

    documents: tuple[HubDocument, ...]  # every object in the hub now, in load order
    result: LoadResult  # policies served (held generations included); problems of current ones
    held: Mapping[str, HubDocument]  # display name → earlier accepted generation still served

    @property
    def policies(self) -> PolicySet:
        return self.result.policies

    @property
    def refused(self) -> Refused:
        return self.result.refused

    def problems_of(self, name: str) -> tuple[Problem, ...]:
        return tuple(p for p in self.result.problems if p.origin.file == name)

    def accepted(self, name: str) -> bool:
        """True when the object's *current* generation is what is served."""
        return name not in self.held and name in _served_names(self.result.policies)


def display_name(resource: Resource, obj: KubeObject) -> str:
    if obj.meta.namespace:
        return f"k8s:{resource.kind}/{obj.meta.namespace}/{obj.meta.name}"
    return f"k8s:{resource.kind}/{obj.meta.name}"


def document_text(resource: Resource, obj: KubeObject) -> str:
    """The object as one YAML policy document (status and server-side metadata left out)."""
    meta = obj.raw.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    document: dict[str, Any] = {
        "apiVersion": obj.raw.get("apiVersion") or resource.api_version,
        "kind": obj.raw.get("kind") or resource.kind,
        "metadata": {key: meta[key] for key in _META_KEYS if key in meta},
    }
    if "spec" in obj.raw:
        document["spec"] = obj.raw["spec"]
    return yaml.dump(document, Dumper=_DUMPER, sort_keys=False, allow_unicode=True)


def to_document(resource: Resource, obj: KubeObject) -> HubDocument:
    return HubDocument(resource, obj, display_name(resource, obj), document_text(resource, obj))


def load_hub(
    documents: Sequence[HubDocument], last_good: Mapping[str, HubDocument]
) -> tuple[HubLoad, dict[str, HubDocument]]:
    """Load `documents`, serving `last_good[name]` in place of a current generation that is
    rejected (same uid only). Returns the load and the new last-good map. Pure and CPU-bound."""
    ordered = sorted(documents, key=lambda d: d.sort_key)
    first = loading.load_documents([(d.name, d.text) for d in ordered])
    served = _served_names(first.policies)
    held = {
        d.name: good
        for d in ordered
        if d.name not in served
        and (good := last_good.get(d.name)) is not None
        and good.obj.meta.uid == d.obj.meta.uid
        and good.text != d.text
    }
    result = first
    if held:
        second = loading.load_documents(
            [(d.name, held[d.name].text if d.name in held else d.text) for d in ordered]
        )
        # Problems: the current generation's for held objects, the second load's for the rest.
        problems = [p for p in first.problems if p.origin.file in held]
        problems += [p for p in second.problems if p.origin.file not in held]
        result = dataclasses.replace(second, problems=tuple(problems))
        served = _served_names(second.policies)
    good_now = {d.name: d for d in ordered if d.name in served and d.name not in held}
    good_now.update({name: doc for name, doc in held.items() if name in served})
    held = {name: doc for name, doc in held.items() if name in served}
    return HubLoad(tuple(ordered), result, held), good_now


def _served_names(policies: PolicySet) -> frozenset[str]:
    documents: Iterable[Any] = (
        *policies.clusters,
        *policies.grants,
        *policies.routes,
        *policies.releases,
    )
    return frozenset(d.origin.file for d in documents)


@dataclasses.dataclass(frozen=True, slots=True)
class HubSettings:
    """The hub source (controller process settings)."""

    watch: WatchSettings = dataclasses.field(default_factory=WatchSettings)  # list+watch timers
    debounce_s: float = 0.05  # quiet time after the last object change before loading again
    namespace: str | None = None  # watch one namespace only (None: all; MemberClusters always)


@dataclasses.dataclass(frozen=True, slots=True)
class HubSourceStatus:
    synced: bool  # every resource listed at least once
    objects: int  # objects in the hub now
    loads: int  # whole-set loads delivered
    errors: int  # errors in the latest load
    held: int  # objects served at an earlier generation because the current one is rejected
    watches: Mapping[str, WatchStats]  # per resource


Deliver = Callable[[HubLoad], object]


class HubSource:
    """Keeps the hub's policy objects and delivers a `HubLoad` after every change, until
    cancelled. `deliver` runs on the event loop and must not block."""

    def __init__(self, client: ClusterClient, settings: HubSettings, deliver: Deliver) -> None:
        self.client = client
        self.settings = settings
        self.latest: HubLoad | None = None
        self._deliver = deliver
        self._watchers = tuple(
            Watcher(
                client,
                resource,
                self._apply,
                settings.watch,
                namespace=settings.namespace if resource.namespaced else None,
            )
            for resource in HUB_RESOURCES
        )
        self._documents: dict[Resource, dict[tuple[str, str], HubDocument]] = {
            resource: {} for resource in HUB_RESOURCES
        }
        self._listed: set[Resource] = set()
        self._dirty = asyncio.Event()
        self._last_good: dict[str, HubDocument] = {}
        self._loads = 0

    @property
    def synced(self) -> bool:
        return len(self._listed) == len(HUB_RESOURCES)

    @property
    def status(self) -> HubSourceStatus:
        latest = self.latest
        errors = (
            sum(1 for p in latest.result.problems if p.severity is Severity.ERROR) if latest else 0
        )
        return HubSourceStatus(
            synced=self.synced,
            objects=sum(len(docs) for docs in self._documents.values()),
            loads=self._loads,
            errors=errors,
            held=len(latest.held) if latest else 0,
            watches={str(w.resource): w.stats for w in self._watchers},
        )

    def current(self, resource: Resource, namespace: str | None, name: str) -> HubDocument | None:
        """The object as last seen, status included (fresher than `latest`)."""
        return self._documents[resource].get((namespace or "", name))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for watcher in self._watchers:
                group.create_task(watcher.run(), name=watcher.name)
            group.create_task(self._load_loop(), name="hubsource.load")

    def _apply(self, update: Update) -> None:
        known = self._documents[update.resource]
        changed = False
        if isinstance(update, Listed):
            fresh: dict[tuple[str, str], HubDocument] = {}
            for obj in update.objects:
                fresh[obj.meta.key] = doc = self._document(update.resource, obj, known)
                old = known.get(obj.meta.key)
                changed = changed or old is None or old.text != doc.text
            changed = changed or bool(known.keys() - fresh.keys())
            self._documents[update.resource] = fresh
            if update.resource not in self._listed:
                self._listed.add(update.resource)
                changed = True
        elif isinstance(update, Changed):
            changed_obj = update.event.obj
            if changed_obj is None:
                return
            key = changed_obj.meta.key
            if update.event.type is EventType.DELETED:
                changed = known.pop(key, None) is not None
            else:
                old = known.get(key)
                known[key] = doc = self._document(update.resource, changed_obj, known)
                changed = old is None or old.text != doc.text
        if changed:
            self._dirty.set()

    @staticmethod
    def _document(
        resource: Resource, obj: KubeObject, known: Mapping[tuple[str, str], HubDocument]
    ) -> HubDocument:
        old = known.get(obj.meta.key)
        # A status write changes the resourceVersion but never the generation or metadata we
        # keep: reuse the text instead of writing the YAML again.
        if (
            old is not None
            and old.obj.meta.uid == obj.meta.uid
            and old.obj.meta.generation == obj.meta.generation
            and obj.meta.generation > 0
            and old.obj.meta.labels == obj.meta.labels
        ):
            return dataclasses.replace(old, obj=obj)
        return to_document(resource, obj)

    async def _load_loop(self) -> None:
        while True:
            await self._dirty.wait()
            while True:  # debounce: wait for debounce_s without a change
                self._dirty.clear()
                try:
                    async with asyncio.timeout(self.settings.debounce_s):
                        await self._dirty.wait()
                except TimeoutError:
                    break
            if not self.synced:
                continue  # the last resource's first LIST sets the event again
            # A change can land after the debounce timed out but before this task resumes (the
            # timer and the watch stream's data become ready in the same loop iteration, which
            # uvloop makes common). It is in the documents taken below, so it must not leave
            # the event set: that would deliver a second, identical load. Nothing awaits between
            # the clear and the copy, so every change the event stood for is in this load.
            self._dirty.clear()
            documents = [doc for docs in self._documents.values() for doc in docs.values()]
            load, self._last_good = await asyncio.to_thread(load_hub, documents, self._last_good)
            self.latest = load
            self._loads += 1
            for problem in load.result.problems:
                log.log(
                    logging.WARNING if problem.severity is Severity.ERROR else logging.INFO,
                    "hub policy problem: %s",
                    problem,
                )
            log.info(
                "hub policies loaded: objects=%d routes=%d clusters=%d held=%d",
                len(load.documents),
                len(load.policies.routes),
                len(load.policies.clusters),
                len(load.held),
            )
            self._deliver(load)
