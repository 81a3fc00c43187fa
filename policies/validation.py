"""The rules policy documents must satisfy, alone and together; collects every problem. Pure.

`check` decides which documents are accepted. A document with an error is left out and never takes
the others down, with one exception from Gateway API: a backendRef into another namespace that no
ReferenceGrant opens is an error on that backendRef, yet the route is accepted and the reference is
listed in `Checked.refused` (the table compiler serves its share of traffic as 500).

Across documents (where two conflict, the first in load order wins and the later is rejected):
* names are unique per kind (`namespace/name`; MemberCluster by name); a TrafficPolicy and an
  HTTPRoute may share one, as Gateway API tie-breaks tell them apart;
* `clusters[].name` must name an accepted MemberCluster;
* a hostname belongs to the namespace of the oldest route that uses it (creation order, then
  `namespace/name`); a route in another namespace that uses it is rejected. The claim is on the
  exact string: `*.example.com` and `shop.example.com` are different names, and a route without
  hostnames claims nothing;
* a Release needs its target route in its namespace, whose backendRefs include `stable`, and at
  most one Release per route; its backendRefs into other namespaces need a ReferenceGrant from
  `{group: fleetgate.io, kind: Release}` (an error that rejects the Release).
A backendRef to a service that no candidate MemberCluster lists is only a warning, and no warning
is given when a candidate discovers its services through a kubeconfig (known only at run time).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple, TypeVar

from policies.model import (
    NOWHERE,
    BackendRef,
    MemberCluster,
    Origin,
    PolicySet,
    Problem,
    ReferenceGrant,
    Release,
    Route,
    RouteKind,
    ServiceRef,
    Severity,
)
from policies.reading import locate, suggest
from policies.validation_documents import Findings, check_cluster, check_release, check_route

Document = Route | MemberCluster | ReferenceGrant | Release
Positions = Mapping[str, Origin]  # field path -> position, in one document
Origins = Mapping[Origin, Positions]  # document origin -> its field positions
Refused = frozenset[tuple[str, ServiceRef]]  # (route id, service) references no grant allows
D = TypeVar("D", Route, MemberCluster, ReferenceGrant, Release)

# The `from.group` a ReferenceGrant must name for each kind that refers to Services.
ROUTE_GROUPS = {
    RouteKind.HTTP_ROUTE: "gateway.networking.k8s.io",
    RouteKind.TRAFFIC_POLICY: "fleetgate.io",
}
RELEASE_GROUP = "fleetgate.io"


@dataclasses.dataclass(frozen=True, slots=True)
class Checked:
    policies: PolicySet  # the accepted documents, in their original order
    problems: tuple[Problem, ...]
    refused: Refused = frozenset()


def validate(policies: PolicySet, origins: Origins | None = None) -> tuple[Problem, ...]:
    """All problems of `policies`, sorted by position. `origins` places them (optional)."""
    return check(policies, origins).problems


def check_document(document: Document, positions: Positions) -> list[Problem]:
    """The problems `document` has on its own."""

    def at(path: str) -> Origin:
        return locate(positions, path, document.origin)

    if isinstance(document, Route):
        return check_route(document, at)
    if isinstance(document, MemberCluster):
        return check_cluster(document, at)
    if isinstance(document, Release):
        return check_release(document, at)
    return []


def check(policies: PolicySet, origins: Origins | None = None) -> Checked:
    return _Check(policies, origins or {}).run()


class _Check:
    def __init__(self, policies: PolicySet, origins: Origins) -> None:
        self.policies = policies
        self.origins = origins
        self.problems: list[Problem] = []
        self.rejected: set[int] = set()  # id() of rejected documents
        self.refused: set[tuple[str, ServiceRef]] = set()

    def run(self) -> Checked:
        p = self.policies
        documents: tuple[Document, ...] = (*p.clusters, *p.routes, *p.grants, *p.releases)
        for document in documents:
            self._add(document, check_document(document, self._positions(document)))
        self._unique(p.clusters, lambda c: c.name)
        self._unique(p.routes, lambda r: f"{r.kind.value} {r.namespace}/{r.name}")
        self._unique(p.grants, lambda g: f"{g.namespace}/{g.name}")
        self._unique(p.releases, lambda r: f"{r.namespace}/{r.name}")
        clusters = self._accepted(p.clusters)
        for route in self._accepted(p.routes):
            self._check_clusters(route, _route_refs(route), clusters)
        for release in self._accepted(p.releases):
            self._check_clusters(release, _release_refs(release), clusters)
        self._hostnames()
        self._grants()
        self._targets()
        self._services(clusters)
        accepted = PolicySet(
            routes=tuple(self._accepted(p.routes)),
            clusters=tuple(self._accepted(p.clusters)),
            grants=tuple(self._accepted(p.grants)),
            releases=tuple(self._accepted(p.releases)),
        )
        ordered = sorted(
            self.problems, key=lambda q: (q.origin.file, q.origin.line, q.origin.column)
        )
        return Checked(accepted, tuple(dict.fromkeys(ordered)), frozenset(self.refused))

    # -- bookkeeping

    def _positions(self, document: Document) -> Positions:
        return self.origins.get(document.origin, {}) if document.origin != NOWHERE else {}

    def _findings(self, document: Document) -> Findings:
        positions = self._positions(document)
        return Findings(lambda path: locate(positions, path, document.origin))

    def _add(self, document: Document, problems: Iterable[Problem], *, reject: bool = True) -> None:
        for problem in problems:
            self.problems.append(problem)
            if reject and problem.severity is Severity.ERROR:
                self.rejected.add(id(document))

    def _accepted(self, documents: Iterable[D]) -> list[D]:
        return [d for d in documents if id(d) not in self.rejected]

    # -- rules across documents

    def _unique(self, documents: tuple[D, ...], key: Callable[[D], str]) -> None:
        first: dict[str, D] = {}
        for document in self._accepted(documents):
            name = key(document)
            if name in first:
                out = self._findings(document)
                out.error("metadata.name", f"{name} is already defined at {_where(first[name])}")
                self._add(document, out.problems)
            else:
                first[name] = document

    def _check_clusters(
        self,
        document: Route | Release,
        refs: Iterable[tuple[str, BackendRef]],
        clusters: list[MemberCluster],
    ) -> None:
        names = [c.name for c in clusters]
        out = self._findings(document)
        for path, ref in refs:
            for k, weight in enumerate(ref.clusters):
                if weight.cluster not in names:
                    close = suggest(weight.cluster, names)
                    hint = f'; did you mean "{close}"?' if close else ""
                    message = f'no MemberCluster is named "{weight.cluster}"{hint}'
                    out.error(f"{path}.clusters[{k}].name", message)
        self._add(document, out.problems)

    def _hostnames(self) -> None:
        owners: dict[str, Route] = {}
        routes = sorted(self._accepted(self.policies.routes), key=lambda r: (r.created, r.id))
        for route in routes:
            out = self._findings(route)
            for h, hostname in enumerate(route.hostnames):
                owner = owners.get(hostname)
                if owner is not None and owner.namespace != route.namespace:
                    out.error(
                        f"spec.hostnames[{h}]",
                        f'hostname "{hostname}" belongs to namespace "{owner.namespace}" '
                        f"({owner.kind.value} {owner.id} at {_where(owner)})",
                    )
            self._add(route, out.problems)
            if not out.problems:
                for hostname in route.hostnames:
                    owners.setdefault(hostname, route)

    def _grants(self) -> None:
        grants = self._accepted(self.policies.grants)
        for route in self._accepted(self.policies.routes):
            out = self._findings(route)
            referrer = _Referrer(ROUTE_GROUPS[route.kind], route.kind.value, route.namespace)
            for path, service in _route_services(route):
                refusal = _refusal(grants, referrer, service)
                if refusal:
                    out.error(path, refusal)
                    self.refused.add((route.id, service))
            self._add(route, out.problems, reject=False)
        for release in self._accepted(self.policies.releases):
            out = self._findings(release)
            referrer = _Referrer(RELEASE_GROUP, "Release", release.namespace)
            for path, ref in _release_refs(release):
                refusal = _refusal(grants, referrer, ref.service)
                if refusal:
                    out.error(f"{path}.namespace", refusal)
            self._add(release, out.problems)

    def _targets(self) -> None:
        routes = self._accepted(self.policies.routes)
        claimed: dict[tuple[str, str], Release] = {}  # (namespace, route name) -> release
        for release in self._accepted(self.policies.releases):
            out = self._findings(release)
            targets = [
                r for r in routes if (r.namespace, r.name) == (release.namespace, release.target)
            ]
            if not targets:
                out.error(
                    "spec.target",
                    f'no route named "{release.target}" in namespace "{release.namespace}"',
                )
            elif len(targets) > 1:
                out.error(
                    "spec.target", f'"{release.target}" names both an HTTPRoute and a TrafficPolicy'
                )
            elif release.stable.service not in {
                ref.service for rule in targets[0].rules for ref in rule.backend_refs
            }:
                out.error(
                    "spec.stable.backendRef",
                    f"{release.stable.service} is not a backendRef of "
                    f"{targets[0].kind.value} {targets[0].id}",
                )
            elif (release.namespace, release.target) in claimed:
                other = claimed[release.namespace, release.target]
                out.error(
                    "spec.target",
                    f"route {release.target} is already released by {other.id} at {_where(other)}",
                )
            claimed.setdefault((release.namespace, release.target), release)
            self._add(release, out.problems)

    def _services(self, clusters: list[MemberCluster]) -> None:
        for route in self._accepted(self.policies.routes):
            out = self._findings(route)
            for path, ref in _route_refs(route):
                if (route.id, ref.service) not in self.refused:
                    _warn_unknown_service(out, path, ref, clusters)
            self._add(route, out.problems)
        for release in self._accepted(self.policies.releases):
            out = self._findings(release)
            for path, ref in _release_refs(release):
                _warn_unknown_service(out, path, ref, clusters)
            self._add(release, out.problems)


def _route_refs(route: Route) -> Iterator[tuple[str, BackendRef]]:
    for i, rule in enumerate(route.rules):
        for j, ref in enumerate(rule.backend_refs):
            yield f"spec.rules[{i}].backendRefs[{j}]", ref


def _release_refs(release: Release) -> Iterator[tuple[str, BackendRef]]:
    yield "spec.stable.backendRef", release.stable
    yield "spec.canary.backendRef", release.canary


def _route_services(route: Route) -> Iterator[tuple[str, ServiceRef]]:
    """Every Service a route refers to across namespaces, with the path of its namespace field."""
    for i, rule in enumerate(route.rules):
        for k, f in enumerate(rule.filters):
            mirror = f.request_mirror
            if mirror and mirror.backend.namespace != route.namespace:
                path = f"spec.rules[{i}].filters[{k}].requestMirror.backendRef.namespace"
                yield path, mirror.backend
        for j, ref in enumerate(rule.backend_refs):
            if ref.service.namespace != route.namespace:
                yield f"spec.rules[{i}].backendRefs[{j}].namespace", ref.service


class _Referrer(NamedTuple):
    """What a ReferenceGrant's `from` must name: the referring document's group, kind, namespace."""

    group: str
    kind: str
    namespace: str


def _refusal(
    grants: Iterable[ReferenceGrant], referrer: _Referrer, service: ServiceRef
) -> str | None:
    """Why `referrer` may not use `service`, or None when it may (same namespace, or granted)."""
    if service.namespace == referrer.namespace or any(
        grant.namespace == service.namespace
        and grant.allows(
            group=referrer.group,
            kind=referrer.kind,
            from_namespace=referrer.namespace,
            service=service.name,
        )
        for grant in grants
    ):
        return None
    return (
        f'no ReferenceGrant in namespace "{service.namespace}" lets a {referrer.kind} in '
        f'"{referrer.namespace}" use Service "{service.name}"'
    )


def _warn_unknown_service(
    out: Findings, path: str, ref: BackendRef, clusters: list[MemberCluster]
) -> None:
    if ref.clusters:
        listed = {c.cluster for c in ref.clusters}
        candidates = [c for c in clusters if c.name in listed]
    elif ref.cluster_selector is not None:
        selector = ref.cluster_selector
        candidates = [c for c in clusters if all(c.labels.get(k) == v for k, v in selector.items())]
        if not candidates:
            out.warn(f"{path}.clusterSelector", "matches no MemberCluster")
            return
    else:
        candidates = clusters
    if any(c.kubeconfig for c in candidates):
        return
    service = ref.service
    ports = {
        port.port
        for c in candidates
        for s in c.services
        if (s.namespace, s.name) == (service.namespace, service.name)
        for port in s.ports
    }
    if service.port in ports:
        return
    name = f"{service.namespace}/{service.name}"
    if ports:
        known = ", ".join(str(p) for p in sorted(ports))
        message = f"Service {name} has no port {service.port} in any MemberCluster (ports: {known})"
    else:
        message = (
            f"no MemberCluster is known to have Service {name}: its share of requests gets 500"
        )
    out.warn(path, message)


def _where(document: Document) -> str:
    origin = document.origin
    return f"{origin.file}:{origin.line}:{origin.column}" if origin.line else origin.file
