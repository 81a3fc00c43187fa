"""State of one simulated Kubernetes API server: objects, resourceVersions, event log. No I/O.

`tests.fakes.kube_api` serves this over HTTP. The rules follow the Kubernetes API conventions where
the controller depends on them: every write bumps the one counter of the cluster and stamps it on
the object; a stale `metadata.resourceVersion` on update is a 409 Conflict; a watch from a
resourceVersion older than the kept log is 410 Expired; label and field selectors behave as in
kube-apiserver. Simplifications: namespaces need not exist; strategic merge patch is plain merge
patch (lists are replaced); no finalizers, no admission, no defaulting beyond metadata.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from tests.fakes import kube_patches, kube_selectors
from tests.fakes.kube_selectors import LabelTest

JSON = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    """One served resource (group, version, plural) and how it behaves."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool = False  # main-resource writes keep status; /status writes only it

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """`leases.coordination.k8s.io` style name used in API error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, status_subresource=True),
    Kind("", "v1", "services", "Service", namespaced=True, status_subresource=True),
    Kind("", "v1", "secrets", "Secret", namespaced=True),
    Kind("", "v1", "configmaps", "ConfigMap", namespaced=True),
    Kind("", "v1", "events", "Event", namespaced=True),
    Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", namespaced=True),
    Kind("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True),
    Kind("fleetgate.io", "v1alpha1", "trafficpolicies", "TrafficPolicy", True, True),
    Kind("fleetgate.io", "v1alpha1", "memberclusters", "MemberCluster", False, True),
    Kind("fleetgate.io", "v1alpha1", "releases", "Release", True, True),
    Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", True, True),
    Kind("gateway.networking.k8s.io", "v1beta1", "referencegrants", "ReferenceGrant", True),
    Kind("multicluster.x-k8s.io", "v1alpha1", "serviceimports", "ServiceImport", True, True),
)
KINDS_BY_PATH: dict[tuple[str, str, str], Kind] = {(k.group, k.version, k.plural): k for k in KINDS}


def kind_of(api_version: str, kind: str) -> Kind:
    """The served Kind for an object's `apiVersion` and `kind` (KeyError if not served)."""
    for candidate in KINDS:
        if candidate.api_version == api_version and candidate.kind == kind:
            return candidate
    raise KeyError(f"{api_version} {kind} is not served by the simulator")


class ApiError(Exception):
    """A request the server refuses; answered with a `Status` object and `code`."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> JSON:
        return status_body(self.code, self.reason, self.message)


def status_body(code: int, reason: str, message: str) -> JSON:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One entry of the event log. `obj` is the state after the change (last state for DELETED,
    stamped with the deletion's resourceVersion); `old` the state before (None for ADDED)."""

    rv: int
    kind: Kind
    type: str  # "ADDED" | "MODIFIED" | "DELETED"
    obj: JSON
    old: JSON | None


Key = tuple[str, str, str, str, str]  # group, version, plural, namespace ("" if none), name
Listener = Callable[[Change], None]


class Store:
    """Objects of one cluster. Stored dicts are never mutated: every write stores a new one."""

    def __init__(self, *, log_limit: int = 100_000) -> None:
        self.rv = 0  # the cluster's one resourceVersion counter
        self.compacted_rv = 0  # log entries with rv <= this are gone: older watches get 410
        self.listeners: list[Listener] = []
        self._objects: dict[Key, JSON] = {}
        self._log: deque[Change] = deque()
        self._log_limit = log_limit

    # -- reads -----------------------------------------------------------------------------

    def get(self, kind: Kind, namespace: str | None, name: str) -> JSON:
        obj = self._objects.get(_key(kind, namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{kind.resource} "{name}" not found')
        return obj

    def list_objects(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> tuple[list[JSON], int]:
        """Matching objects sorted by (namespace, name), and the counter they are current at."""
        labels_ok, fields_ok = selectors(label_selector, field_selector)
        items = [
            obj
            for key, obj in sorted(self._objects.items())
            if key[:3] == (kind.group, kind.version, kind.plural)
            and (not namespace or key[3] == namespace)
            and labels_ok(_labels(obj))
            and fields_ok(obj)
        ]
        return items, self.rv

    def changes_since(self, rv: int) -> list[Change]:
        """Every logged change after `rv`; 410 Expired when part of that range was compacted."""
        if rv < self.compacted_rv:
            raise ApiError(
                410, "Expired", f"too old resource version: {rv} ({self.compacted_rv + 1})"
            )
        return [change for change in self._log if change.rv > rv]

    # -- writes ----------------------------------------------------------------------------

    def create(self, kind: Kind, namespace: str | None, body: JSON) -> JSON:
        meta = _metadata(body)
        if meta.get("resourceVersion"):
            raise ApiError(
                400, "BadRequest", "resourceVersion should not be set on objects to be created"
            )
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            name = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        if not name:
            raise ApiError(422, "Invalid", f"{kind.kind} is invalid: metadata.name: Required value")
        namespace = _check_namespace(kind, namespace, meta)
        key = _key(kind, namespace, name)
        if key in self._objects:
            raise ApiError(409, "AlreadyExists", f'{kind.resource} "{name}" already exists')
        obj = copy.deepcopy(body)
        if kind.status_subresource:
            obj.pop("status", None)  # as kube-apiserver: status is written through /status only
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        new_meta = obj["metadata"] = dict(_metadata(obj))
        new_meta.pop("generateName", None)
        new_meta["name"] = name
        if namespace:
            new_meta["namespace"] = namespace
        new_meta["uid"] = str(uuid.uuid4())
        new_meta["creationTimestamp"] = _now()
        new_meta["generation"] = 1
        return self._commit(kind, key, "ADDED", obj, None)

    def replace(
        self, kind: Kind, namespace: str | None, name: str, body: JSON, *, status: bool = False
    ) -> JSON:
        """PUT. `status` True is the /status subresource: only `.status` is taken from `body`."""
        current = self.get(kind, namespace, name)
        meta = _metadata(body)
        if meta.get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                f"({name})",
            )
        sent_rv = meta.get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.resource} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        if status:
            obj = dict(current)
            obj["status"] = copy.deepcopy(body.get("status"))
        else:
            obj = copy.deepcopy(body)
            if kind.status_subresource:
                obj.pop("status", None)
                if "status" in current:
                    obj["status"] = current["status"]
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        new_meta = obj["metadata"] = (
            dict(_metadata(obj)) if not status else dict(current["metadata"])
        )
        for system_field in ("uid", "creationTimestamp", "generation", "namespace", "name"):
            if system_field in current["metadata"]:
                new_meta[system_field] = current["metadata"][system_field]
        new_meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        if obj == current:
            return current  # a no-op update is not a change: no new resourceVersion, no event
        if _content(obj) != _content(current):
            new_meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        return self._commit(kind, _key(kind, namespace, name), "MODIFIED", obj, current)

    def patch(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        *,
        status: bool = False,
    ) -> JSON:
        current = self.get(kind, namespace, name)
        media = content_type.split(";")[0].strip().lower()
        if media == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "json patch must be a list of operations")
            try:
                patched = kube_patches.apply_json_patch(current, patch)
            except ValueError as exc:
                raise ApiError(422, "Invalid", str(exc)) from exc
        elif media in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "merge patch must be a JSON object")
            patched = kube_patches.merge_patch(current, patch)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the media type {media!r} is not served")
        if not isinstance(patched, dict):
            raise ApiError(422, "Invalid", "the patched object is not a JSON object")
        return self.replace(kind, namespace, name, patched, status=status)

    def delete(
        self, kind: Kind, namespace: str | None, name: str, *, precondition_rv: str | None = None
    ) -> JSON:
        current = self.get(kind, namespace, name)
        if precondition_rv and precondition_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.resource} "{name}": precondition failed: '
                f"ResourceVersion in precondition: {precondition_rv}, "
                f"ResourceVersion in object meta: {current['metadata']['resourceVersion']}",
            )
        obj = dict(current)
        obj["metadata"] = dict(current["metadata"])
        return self._commit(kind, _key(kind, namespace, name), "DELETED", obj, current)

    def upsert(self, body: JSON) -> JSON:
        """Test convenience: create, or replace whatever is stored (ignores resourceVersion)."""
        kind = kind_of(body["apiVersion"], body["kind"])
        meta = _metadata(body)
        namespace = meta.get("namespace") if kind.namespaced else None
        if kind.namespaced and not namespace:
            namespace = "default"
        unconditional = copy.deepcopy(body)
        unconditional.setdefault("metadata", {}).pop("resourceVersion", None)
        if _key(kind, namespace, meta["name"]) in self._objects:
            updated = self.replace(kind, namespace, meta["name"], unconditional)
            if kind.status_subresource and "status" in body:
                updated = self.replace(kind, namespace, meta["name"], unconditional, status=True)
            return updated
        created = self.create(kind, namespace, unconditional)
        if kind.status_subresource and "status" in body:
            created = self.replace(kind, namespace, meta["name"], unconditional, status=True)
        return created

    def compact(self, up_to: int | None = None) -> None:
        """Forget log entries up to `up_to` (default: all): older watches then get 410."""
        target = self.rv if up_to is None else min(up_to, self.rv)
        while self._log and self._log[0].rv <= target:
            self._log.popleft()
        self.compacted_rv = max(self.compacted_rv, target)

    def _commit(self, kind: Kind, key: Key, type_: str, obj: JSON, old: JSON | None) -> JSON:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if type_ == "DELETED":
            del self._objects[key]
        else:
            self._objects[key] = obj
        change = Change(self.rv, kind, type_, obj, old)
        self._log.append(change)
        if len(self._log) > self._log_limit:
            self.compacted_rv = self._log.popleft().rv
        for listener in list(self.listeners):
            listener(change)
        return obj


def selectors(
    label_selector: str, field_selector: str
) -> tuple[LabelTest, Callable[[Mapping[str, Any]], bool]]:
    """Both selectors parsed; a bad one is a 400 as kube-apiserver answers it."""
    try:
        return (
            kube_selectors.parse_label_selector(label_selector),
            kube_selectors.parse_field_selector(field_selector),
        )
    except ValueError as exc:
        raise ApiError(400, "BadRequest", str(exc)) from exc


def _key(kind: Kind, namespace: str | None, name: str) -> Key:
    return (kind.group, kind.version, kind.plural, namespace or "", name)


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ApiError(400, "BadRequest", "metadata must be an object")
    return meta


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    labels = _metadata(obj).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _content(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What `generation` tracks: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _check_namespace(kind: Kind, namespace: str | None, meta: Mapping[str, Any]) -> str | None:
    if not kind.namespaced:
        return None
    body_ns = meta.get("namespace")
    if namespace and body_ns and body_ns != namespace:
        raise ApiError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    result = namespace or body_ns
    if not result:
        raise ApiError(400, "BadRequest", f"{kind.kind} must be created in a namespace")
    return str(result)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
