"""YAML texts → policy model and every problem, each with file:line:column. Pure: never opens files.

Parsing is `yaml.compose_all` with the SafeLoader (no object construction beyond plain scalars),
so every field keeps its position; `policies.reading` checks the nodes against the field tables of
`policies.kinds`, the builders turn them into `policies.model` objects, and
`policies.validation` applies the rules that need whole documents or several of them.

Choices the documents leave open:
* `metadata.namespace` defaults to "default"; MemberCluster is cluster-scoped and has none.
* `Route.created` is `metadata.creationTimestamp` in epoch seconds when given, else the
  document's position in the load (0, 1, 2, ... across all sources in order). Precedence prefers
  older routes, so in a mixed set the documents without a timestamp count as the oldest.
* A document with any error is left out of `LoadResult.policies`; the others load. Errors found
  in a document whose fields are already wrong are still reported, except those about a field at
  or under one that already has an error (no echoes of the first mistake); its warnings are not
  (it will not load anyway).
* A YAML syntax error stops its file at that point; the complete documents before it still load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import yaml

from policies import validation
from policies.kinds import KINDS, Kind
from policies.loading_release import build_release
from policies.loading_routes import build_route
from policies.model import (
    DnsName,
    HealthCheck,
    MemberCluster,
    Origin,
    PolicySet,
    Problem,
    ReferenceGrant,
    Release,
    Route,
    RouteKind,
    ServicePort,
    Severity,
    StaticService,
    UpstreamTLS,
)
from policies.reading import MAX_REPEATS, Fields, Reader, TooLarge, origin_of, parent_path
from policies.shapes import Str
from policies.validation import Document, Refused

_KIND_NAMES = Str(enum=tuple(sorted(KINDS)))
# libyaml's parser when PyYAML has it (about 5x faster); both give the same nodes and marks, but
# their syntax error messages differ in wording.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclasses.dataclass(frozen=True, slots=True)
class LoadResult:
    policies: PolicySet  # every valid document (bad ones left out, never the whole set)
    problems: tuple[Problem, ...]  # every error and warning, sorted by file, line, column
    # Cross-namespace references no ReferenceGrant allows: (route id, service). The route is in
    # `policies`; the table compiler treats these backendRefs as unresolved (their share gets 500).
    refused: Refused = frozenset()
    documents: int = 0  # documents read, valid or not (empty documents not counted)

    @property
    def ok(self) -> bool:
        return not any(p.severity is Severity.ERROR for p in self.problems)


@dataclasses.dataclass(frozen=True, slots=True)
class _Loaded:
    document: Document
    positions: dict[str, Origin]
    errors: tuple[Problem, ...]  # found while reading and building


def load_documents(sources: Sequence[tuple[str, str]]) -> LoadResult:
    """(file name, YAML text) pairs → model + problems. Runs `validation.check` too."""
    problems: list[Problem] = []
    loaded: list[_Loaded] = []
    count = 0
    for file, text in sources:
        for node in _compose(file, text, problems):
            item = _load_document(file, node, count, problems)
            count += 1
            if item is not None:
                loaded.append(item)
    good = [item for item in loaded if not item.errors]
    for item in loaded:
        if item.errors:
            problems.extend(item.errors)
            later = validation.check_document(item.document, item.positions)
            errors = [p for p in later if p.severity is Severity.ERROR]
            problems.extend(_not_echoes(errors, item.errors))
    checked = validation.check(
        _policy_set(item.document for item in good),
        {item.document.origin: item.positions for item in good},
    )
    problems.extend(checked.problems)
    ordered = sorted(problems, key=lambda p: (p.origin.file, p.origin.line, p.origin.column))
    return LoadResult(checked.policies, tuple(dict.fromkeys(ordered)), checked.refused, count)


def _compose(file: str, text: str, problems: list[Problem]) -> Iterator[yaml.Node]:
    try:
        for node in yaml.compose_all(text, Loader=_LOADER):
            if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
                continue  # an empty document, e.g. after a trailing "---"
            yield node
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        problems.append(Problem(Origin(file, line, column), "", f"YAML syntax error: {what}"))
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        position = exc.position
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        code = ord(exc.character) if isinstance(exc.character, str) else exc.character
        message = f"YAML syntax error: character U+{code:04X} is not allowed ({exc.reason})"
        problems.append(Problem(Origin(file, line, column), "", message))


def _load_document(
    file: str, node: yaml.Node, index: int, problems: list[Problem]
) -> _Loaded | None:
    reader = Reader(file)
    origin = origin_of(file, node)
    reader.positions[""] = origin
    kind = _kind(reader, node)
    if kind is None:
        problems.extend(reader.problems)
        return None
    try:
        fields = reader.read(node, kind.document, "")
    except TooLarge:
        message = (
            f"the document is too large: YAML aliases repeat nodes more than {MAX_REPEATS} times"
        )
        problems.append(Problem(origin, "", message))
        return None
    assert isinstance(fields, Fields)
    document = _build(reader, kind, fields, index, origin)
    return _Loaded(document, reader.positions, tuple(reader.problems))


def _kind(reader: Reader, node: yaml.Node) -> Kind | None:
    """The document's kind, or None after reporting why there is none."""
    if not isinstance(node, yaml.MappingNode):
        got = "a list" if isinstance(node, yaml.SequenceNode) else "a scalar"
        message = (
            f"a document must be a mapping with apiVersion, kind, metadata and spec, got {got}"
        )
        reader.error(node, "", message)
        return None
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "kind":
            kind = reader.read(value, _KIND_NAMES, "kind")  # reports what was expected
            return KINDS[kind] if isinstance(kind, str) else None
    reader.error(node, "", 'missing required field "kind"')
    return None


def _build(reader: Reader, kind: Kind, fields: Fields, index: int, origin: Origin) -> Document:
    empty = Fields("", origin, {})
    metadata = fields.obj("metadata") or empty
    spec = fields.obj("spec") or Fields("spec", origin, {})
    name = metadata.text("name")
    namespace = metadata.text("namespace", "default")
    if kind.name == "MemberCluster":
        return _member_cluster(spec, name, metadata, origin)
    if kind.name == "ReferenceGrant":
        return ReferenceGrant(
            namespace=namespace,
            name=name,
            from_kinds=tuple(
                (f.text("group"), f.text("kind"), f.text("namespace")) for f in spec.objs("from")
            ),
            to_services=tuple(t.opt_text("name") for t in spec.objs("to")),
            origin=origin,
        )
    if kind.name == "Release":
        return build_release(reader, spec, namespace=namespace, name=name, origin=origin)
    return build_route(
        reader,
        spec,
        kind=RouteKind(kind.name),
        namespace=namespace,
        name=name,
        created=metadata.integer("creationTimestamp", index),
        origin=origin,
    )


def _member_cluster(spec: Fields, name: str, metadata: Fields, origin: Origin) -> MemberCluster:
    tls = spec.obj("tls")
    check = spec.obj("healthCheck")
    default = HealthCheck()
    return MemberCluster(
        name=name,
        labels=metadata.mapping("labels"),
        priority=spec.integer("priority", 0),
        weight=spec.integer("weight", 1),
        services=tuple(
            StaticService(
                namespace=s.text("namespace", "default"),
                name=s.text("name"),
                ports=tuple(
                    ServicePort(p.integer("port"), tuple(p.texts("endpoints")), _dns(p.obj("dns")))
                    for p in s.objs("ports")
                ),
            )
            for s in spec.objs("services")
        ),
        kubeconfig=spec.opt_text("kubeconfig"),
        tls=UpstreamTLS(
            ca_file=tls.opt_text("caFile"),
            cert_file=tls.opt_text("certFile"),
            key_file=tls.opt_text("keyFile"),
            server_name=tls.opt_text("serverName"),
            insecure_skip_verify=tls.flag("insecureSkipVerify"),
        )
        if tls
        else None,
        health_check=HealthCheck(
            path=check.text("path", default.path),
            interval_s=check.number("interval", default.interval_s),
            timeout_s=check.number("timeout", default.timeout_s),
            jitter_percent=check.number("jitterPercent", default.jitter_percent),
            unhealthy_threshold=check.integer("unhealthyThreshold", default.unhealthy_threshold),
            healthy_threshold=check.integer("healthyThreshold", default.healthy_threshold),
            expected_statuses=tuple(check.integers("expectedStatuses"))
            or default.expected_statuses,
            hostname=check.opt_text("hostname"),
            unhealthy_interval_s=check.opt_number("unhealthyInterval"),
        )
        if check
        else None,
        origin=origin,
    )


def _dns(dns: Fields | None) -> DnsName | None:
    if dns is None:
        return None
    return DnsName(dns.opt_text("hostname"), dns.opt_integer("port"), dns.opt_text("srv"))


def _policy_set(documents: Iterator[Document] | Sequence[Document]) -> PolicySet:
    docs = list(documents)
    return PolicySet(
        routes=tuple(d for d in docs if isinstance(d, Route)),
        clusters=tuple(d for d in docs if isinstance(d, MemberCluster)),
        grants=tuple(d for d in docs if isinstance(d, ReferenceGrant)),
        releases=tuple(d for d in docs if isinstance(d, Release)),
    )


def _not_echoes(problems: Sequence[Problem], errors: Sequence[Problem]) -> list[Problem]:
    """`problems` minus those at or under a path that already has one of `errors`."""
    bad = {e.path for e in errors} - {""}  # a document-level error silences nothing

    def echoes(path: str) -> bool:
        while True:
            if path in bad:
                return True
            if not path:
                return False
            path = parent_path(path)

    return [p for p in problems if not echoes(p.path)]
