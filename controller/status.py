"""Object status in the hub: conditions (Accepted, ResolvedRefs, Programmed, and Ready for member
clusters) and Kubernetes Events for their changes. `conditions_for` is pure; `StatusWriter`
writes through controller.kube (Kube API), and only the leader runs it.

Conditions follow `metav1.Condition` and Gateway API's route conditions:

* **Accepted** — the current generation is valid and loaded. False with reason `Invalid` (the
  problems, with their field paths), `HostnameConflict` (the message names the namespace and
  policy that own the hostname: the oldest route claims it, DESIGN.md §6). When an earlier
  generation keeps being served because this one is rejected, the message says which.
* **ResolvedRefs** — every backendRef may be used and names a Service some member cluster has:
  False with `RefNotPermitted` (no ReferenceGrant allows the cross-namespace reference; that
  share of traffic gets 500) or `BackendNotFound` (no cluster has the Service, or no such
  MemberCluster).
* **Programmed** — the snapshot now published carries this generation: True, naming the snapshot
  version it first appeared in (later snapshots leave it alone, so an endpoint change does not
  rewrite every status; `fleetgate status` shows which gateways applied what); False with
  `Pending` while the rebuild is under way, `Held` while an earlier generation is served
  instead, `Invalid` when the object is not served at all.
* **Ready** (MemberCluster only) — its API server answers `/readyz` and its endpoints are
  published; False with `Unreachable` (still published during the grace), `Withdrawn`, or
  `KubeconfigInvalid`.

Status shapes: fleetgate kinds get `status.conditions` and `status.observedGeneration`; an
HTTPRoute gets Gateway API's `status.parents[]`, one entry per parentRef with our
`controllerName`, keeping the entries other controllers wrote. ReferenceGrants have no status.

Writes are merge patches to the status subresource, made only when the desired conditions differ
from what the object shows (`lastTransitionTime` kept while a condition's status holds), so the
leader's own writes, seen again through the watch, settle at once. An Event (type Warning for a
False Accepted, ResolvedRefs or Ready, Normal otherwise) is created for each condition whose
status or reason changed; Events of cluster-scoped objects go to the `default` namespace, as
kubectl looks for them there.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from controller import errors, objects
from controller.hubsource import REFERENCE_GRANTS, HubDocument, HubLoad
from controller.kube import ClusterClient
from policies.model import Problem, Release, Route, ServiceRef, Severity

log = logging.getLogger(__name__)

CONTROLLER_NAME = "fleetgate.io/controller"
COMPONENT = "fleetgate-controller"
_MAX_MESSAGE = 1024  # conditions carry at most this much text (the API allows 32768)
_ACCEPTED, _RESOLVED, _PROGRAMMED, _READY = "Accepted", "ResolvedRefs", "Programmed", "Ready"


@dataclasses.dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool | None  # None: "Unknown"
    reason: str
    message: str
    observed_generation: int

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else str(self.status)

    def to_json(self, last_transition_time: str) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status_text,
            "observedGeneration": self.observed_generation,
            "lastTransitionTime": last_transition_time,
            "reason": self.reason,
            "message": self.message[:_MAX_MESSAGE],
        }


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterReadiness:
    """A member cluster as the controller sees it (for its Ready condition)."""

    ready: bool
    reason: str  # "Ready" | "Unreachable" | "Withdrawn" | "KubeconfigInvalid" | "Static"
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """What conditions need beyond the load itself."""

    version: int | None  # snapshot version published after this load was compiled; None: not yet
    services: frozenset[ServiceRef]  # every service some member cluster has now (any endpoints)
    clusters: Mapping[str, ClusterReadiness]  # member clusters the controller connects to


def conditions_for(doc: HubDocument, load: HubLoad, context: Context) -> tuple[Condition, ...]:
    """The conditions `doc` should show. Empty for kinds without status (ReferenceGrant)."""
    if doc.resource == REFERENCE_GRANTS:
        return ()
    generation = doc.obj.meta.generation
    problems = load.problems_of(doc.name)
    errors_ = [p for p in problems if p.severity is Severity.ERROR]
    held = load.held.get(doc.name)
    accepted = load.accepted(doc.name)
    served = accepted or held is not None

    def condition(type_: str, status: bool | None, reason: str, message: str) -> Condition:
        return Condition(type_, status, reason, message, generation)

    refs = [p for p in problems if _is_reference_problem(p)]
    other = [p for p in errors_ if not _is_reference_problem(p)]
    if accepted:  # (a route whose only errors are refused references is accepted)
        result = [condition(_ACCEPTED, True, "Accepted", "the policy is valid")]
    else:
        conflict = [p for p in other if _is_hostname_conflict(p)]
        reason = "HostnameConflict" if conflict else "Invalid"
        message = _describe(conflict or other or errors_)
        if held is not None:
            message += f"; generation {held.obj.meta.generation} keeps being served"
        result = [condition(_ACCEPTED, False, reason, message)]

    if doc.resource in (objects.TRAFFIC_POLICIES, objects.HTTP_ROUTES, objects.RELEASES):
        result.append(_resolved(doc, load, context, refs, condition))

    if not served and not accepted:
        result.append(condition(_PROGRAMMED, False, "Invalid", "not served: the policy is invalid"))
    elif context.version is None:
        result.append(condition(_PROGRAMMED, False, "Pending", "waiting for the next snapshot"))
    else:
        where = f"served since snapshot v{context.version}"
        if held is not None:
            generation_held = held.obj.meta.generation
            result.append(
                condition(_PROGRAMMED, False, "Held", f"generation {generation_held} is {where}")
            )
        else:
            result.append(condition(_PROGRAMMED, True, "Programmed", where))

    if doc.resource == objects.MEMBER_CLUSTERS:
        readiness = context.clusters.get(doc.obj.meta.name)
        if readiness is not None:
            result.append(condition(_READY, readiness.ready, readiness.reason, readiness.message))
    return tuple(result)


def _resolved(
    doc: HubDocument,
    load: HubLoad,
    context: Context,
    problems: list[Problem],
    condition: Callable[[str, bool | None, str, str], Condition],
) -> Condition:
    if any("ReferenceGrant" in p.message for p in problems):
        refused = [p for p in problems if "ReferenceGrant" in p.message]
        return condition(_RESOLVED, False, "RefNotPermitted", _describe(refused))
    if problems:
        return condition(_RESOLVED, False, "BackendNotFound", _describe(problems))
    missing = sorted({str(s) for s in _services_of(doc, load) if s not in context.services})
    if missing and context.services:
        message = f"no member cluster has {', '.join(missing)} now: that share gets 500"
        return condition(_RESOLVED, False, "BackendNotFound", message)
    return condition(_RESOLVED, True, "ResolvedRefs", "every reference is resolved")


def _services_of(doc: HubDocument, load: HubLoad) -> Iterable[ServiceRef]:
    for route in load.policies.routes:
        if route.origin.file == doc.name:
            yield from _route_services(route)
    for release in load.policies.releases:
        if release.origin.file == doc.name:
            yield from _release_services(release)


def _route_services(route: Route) -> Iterable[ServiceRef]:
    for rule in route.rules:
        for ref in rule.backend_refs:
            yield ref.service


def _release_services(release: Release) -> Iterable[ServiceRef]:
    yield release.stable.service
    yield release.canary.service


def _is_reference_problem(problem: Problem) -> bool:
    if "ReferenceGrant" in problem.message:
        return True
    refs = "backendRef" in problem.path or ".clusters[" in problem.path
    return refs and ("MemberCluster" in problem.message or "Service" in problem.message)


def _is_hostname_conflict(problem: Problem) -> bool:
    return problem.path.startswith("spec.hostnames") and "belongs to namespace" in problem.message


def _describe(problems: Sequence[Problem]) -> str:
    """`path: message` of each problem (the generated document's line numbers mean nothing to
    the reader of a status)."""
    parts = [f"{p.path}: {p.message}" if p.path else p.message for p in problems]
    return "; ".join(dict.fromkeys(parts)) or "the policy was not accepted"


# -- writing ---------------------------------------------------------------------------------


def desired_status(
    doc: HubDocument, conditions: Sequence[Condition], *, now: str
) -> dict[str, Any] | None:
    """The status patch for `doc`, or None when its status already says this."""
    current = doc.obj.raw.get("status")
    current = current if isinstance(current, dict) else {}
    if doc.resource == objects.HTTP_ROUTES:
        parents, ours = _parents(current)
        old = ours[0].get("conditions") if ours else []
        new_conditions = _with_times(conditions, old, now)
        spec = doc.obj.raw.get("spec")
        refs = spec.get("parentRefs") if isinstance(spec, dict) else None
        if not isinstance(refs, list) or not refs:
            refs = [{"group": "fleetgate.io", "kind": "Controller", "name": "fleetgate"}]
        foreign = [p for p in parents if p not in ours]
        mine = [
            {"parentRef": ref, "controllerName": CONTROLLER_NAME, "conditions": new_conditions}
            for ref in refs
        ]
        if ours == mine and len(ours) == len(refs):
            return None
        return {"parents": foreign + mine}
    new_conditions = _with_times(conditions, current.get("conditions"), now)
    generation = doc.obj.meta.generation
    if (
        current.get("conditions") == new_conditions
        and current.get("observedGeneration") == generation
    ):
        return None
    return {"observedGeneration": generation, "conditions": new_conditions}


def _parents(status: Mapping[str, Any]) -> tuple[list[Any], list[dict[str, Any]]]:
    """An HTTPRoute's `status.parents`, and those of them that are ours."""
    parents = status.get("parents")
    parents = parents if isinstance(parents, list) else []
    ours = [
        p for p in parents if isinstance(p, dict) and p.get("controllerName") == CONTROLLER_NAME
    ]
    return parents, ours


def _with_times(conditions: Sequence[Condition], old: Any, now: str) -> list[dict[str, Any]]:
    """JSON conditions; a condition whose status holds keeps its lastTransitionTime, and a
    Programmed condition that still holds for the same generation keeps its message (the
    snapshot version it first appeared in), so new snapshots do not rewrite every status."""
    previous = {
        c.get("type"): c for c in (old if isinstance(old, list) else []) if isinstance(c, dict)
    }
    out = []
    for condition in conditions:
        before = previous.get(condition.type)
        if before is None or before.get("status") != condition.status_text:
            out.append(condition.to_json(now))
            continue
        shown = condition.to_json(str(before.get("lastTransitionTime") or now))
        if (
            condition.type == _PROGRAMMED
            and before.get("reason") == condition.reason
            and before.get("observedGeneration") == condition.observed_generation
        ):
            shown["message"] = before.get("message", shown["message"])
        out.append(shown)
    return out


def changed_conditions(doc: HubDocument, conditions: Sequence[Condition]) -> list[Condition]:
    """Conditions whose status or reason differs from what `doc` shows now (Event material)."""
    current = doc.obj.raw.get("status")
    current = current if isinstance(current, dict) else {}
    shown: Any = current.get("conditions")
    if doc.resource == objects.HTTP_ROUTES:
        _, ours = _parents(current)
        shown = ours[0].get("conditions") if ours else []
    before = {
        c.get("type"): (c.get("status"), c.get("reason"))
        for c in (shown if isinstance(shown, list) else [])
        if isinstance(c, dict)
    }
    return [c for c in conditions if before.get(c.type) != (c.status_text, c.reason)]


def event_body(doc: HubDocument, condition: Condition, *, now: str, serial: int) -> dict[str, Any]:
    meta = doc.obj.meta
    namespace = meta.namespace or "default"
    warning = condition.status is False and condition.type in (_ACCEPTED, _RESOLVED, _READY)
    involved = {
        "apiVersion": doc.resource.api_version,
        "kind": doc.resource.kind,
        "name": meta.name,
        "uid": meta.uid,
        "resourceVersion": meta.resource_version,
    }
    if meta.namespace:
        involved["namespace"] = meta.namespace
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta.name}.{serial:x}", "namespace": namespace},
        "involvedObject": involved,
        "reason": condition.reason,
        "message": f"{condition.type} {condition.status_text}: {condition.message}"[:_MAX_MESSAGE],
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": CONTROLLER_NAME,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def rfc3339(at: datetime.datetime) -> str:
    return at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(slots=True)
class WriterStats:
    patches: int = 0
    events: int = 0
    failures: int = 0
    last_error: str | None = None


class StatusWriter:
    """Writes the conditions of every hub object that needs new ones (the leader's job)."""

    def __init__(
        self,
        client: ClusterClient,
        *,
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.client = client
        self.stats = WriterStats()
        self._wall_clock = wall_clock
        self._serial = itertools.count(int(wall_clock().timestamp() * 1000))
        self._written: dict[tuple[str, str], dict[str, Any]] = {}  # (name, uid) → last patch

    async def write(self, documents: Iterable[HubDocument], load: HubLoad, context: Context) -> int:
        """Bring every document's status up to date; returns the number of patches written.
        Pass the freshest documents (`HubSource.current`), so what they show is what is there."""
        now = rfc3339(self._wall_clock())
        written = 0
        for doc in documents:
            conditions = conditions_for(doc, load, context)
            if not conditions:
                continue
            patch = desired_status(doc, conditions, now=now)
            key = (doc.name, doc.obj.meta.uid)
            if patch is None or self._written.get(key) == _timeless(patch):
                continue
            try:
                await self.client.patch_status(
                    doc.resource,
                    namespace=doc.obj.meta.namespace,
                    name=doc.obj.meta.name,
                    status=patch,
                )
            except errors.NotFound:
                continue  # deleted meanwhile; the next load drops it
            except errors.ControllerError as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc)
                log.warning("cannot write status of %s: %s", doc.name, exc)
                continue
            self._written[key] = _timeless(patch)
            self.stats.patches += 1
            written += 1
            for condition in changed_conditions(doc, conditions):
                await self._event(doc, condition, now)
        names = {(d.name, d.obj.meta.uid) for d in load.documents}
        for key in [k for k in self._written if k not in names]:
            del self._written[key]
        return written

    def forget(self) -> None:
        """Forget what was written (on losing the lead: another replica writes meanwhile)."""
        self._written.clear()

    async def _event(self, doc: HubDocument, condition: Condition, now: str) -> None:
        body = event_body(doc, condition, now=now, serial=next(self._serial))
        try:
            await self.client.create_event(body["metadata"]["namespace"], body)
        except errors.ControllerError as exc:  # an Event is best effort, as in client-go
            log.info("cannot record event for %s: %s", doc.name, exc)
            return
        self.stats.events += 1


def _timeless(patch: Mapping[str, Any]) -> dict[str, Any]:
    """`patch` without lastTransitionTime, to tell a real change from a re-stamp."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "lastTransitionTime"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    stripped: dict[str, Any] = strip(dict(patch))
    return stripped
