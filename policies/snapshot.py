"""The snapshot wire format: RoutingTable ⇄ plain JSON-able data, with schema and checksum. Pure.

Shape (schema "fleetgate.io/snapshot/v2"):

    {"schema", "version", "checksum",
     "backends": {id: {service, resolved, targets: [{cluster, priority, weight,
                       endpoints: [[host, port, cluster, zone?, ready?], ...]}],
                       weight, filters...}, ...},
     "refs": [{id, weight, filters..., mirrors: [{ref, percent}]}, ...],
     "routes": [{id, kind, created?, hostnames?,
                 rules: [{index, id?, backends: [ref, ...], total_weight?,
                          invalid_backend_weight?, filters..., settings?,
                          matches: [[match index, match], ...]}]}],
     "hosts": {host: [candidate, ...]}, "wildcards": [[suffix, [...]]], "any_host": [...] | null}

Two parts: the **backends** (each spread with its endpoints as compact rows, in the order the
table holds them) and the **routes part** (every other body key). An EndpointSlice change touches
one spread and nothing else, so the parts are hashed, and can travel (`policies.delta`), apart.

A candidate (a `CompiledRule`) is numbered by its place in the routes → rules → matches walk.
A backend as a rule or mirror uses it is a reference: its spread's id in "backends" plus the
backendRef's own weight and filters, written once in "refs" and named by index (a reference's
mirrors name earlier references only), so `RoutingTable.backends` must hold every spread its
rules and mirrors use (as `compile_table` guarantees). Fields at their default, empty lists and
nulls are left out, and so are a rule's id when it is "<route>#<index>" and its total weight when
it is the sum of its backends'. Regexes travel as their pattern and are compiled again on load.
The written form may share sub-objects: treat it as read-only.

`checksum` is compositional: the sha256 of the canonical JSON (sorted keys, no spaces, ASCII with
\\u escapes) of `{"backends": {id: sha256 of the spread's canonical JSON}, "routes": sha256 of the
routes part's canonical JSON}`. Equal content gives equal checksums whatever the version, the
layout depends only on the table's content, never on the order documents were read in, and a
delta that replaces a few spreads is verified by hashing those spreads only (`Digests`).

`encode` writes the bytes a controller serves from `Parts` (each part's canonical JSON, kept, so a
table whose spreads mostly did not change is re-encoded by joining bytes). The `Parts` that
`checksum` computed are kept for the next `encode` of a table with that checksum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Collection, Mapping

from policies import acyclic, wire
from policies.errors import SnapshotError
from policies.model import (
    TrafficSettings,
)
from policies.snapshot_reader import Reader
from policies.table import (
    Backend,
    CompiledRule,
    HostRoutes,
    Mirror,
    RoutingTable,
)

SCHEMA = "fleetgate.io/snapshot/v2"
ROUTE_KEYS = ("any_host", "hosts", "refs", "routes", "wildcards")  # sorted: canonical order
BODY_KEYS = frozenset({"backends", *ROUTE_KEYS})

Json = wire.Json


@dataclasses.dataclass(frozen=True, slots=True)
class Digests:
    """The hashes `checksum` is made of: what a gateway keeps to verify a delta."""

    routes: str  # sha256 of the routes part's canonical JSON
    backends: Mapping[str, str]  # spread id -> sha256 of its canonical JSON
    checksum: str  # `combine(routes, backends)`


@dataclasses.dataclass(frozen=True, slots=True)
class Parts:
    """A table's wire form as canonical JSON per part, with their digests."""

    routes: bytes  # canonical JSON of the routes part
    backends: Mapping[str, bytes]  # spread id -> canonical JSON, sorted by id
    digests: Digests


def combine(routes: str, backends: Mapping[str, str]) -> str:
    """The table checksum from its parts' digests (see the module docstring)."""
    return _digest({"backends": backends, "routes": routes})


def dump(table: RoutingTable) -> dict[str, Json]:
    """The wire form of `table` (raises ValueError if a rule's spread is not in table.backends)."""
    with acyclic.paused_collector():
        backends, routes = _Writer(table).body()
        checksum = _parts(backends, routes).digests.checksum
    head = {"schema": SCHEMA, "version": table.version, "checksum": checksum}
    return {**head, "backends": backends, **routes}


def parts(
    table: RoutingTable, *, previous: Parts | None = None, changed: Collection[str] = ()
) -> Parts:
    """`table`'s `Parts`. With `previous`, the parts of a table that differs from this one only in
    the targets of the spreads named in `changed` (as `policies.incremental` knows): the routes
    part and every other spread's JSON are reused. ValueError if the spread ids differ."""
    with acyclic.paused_collector():
        if previous is None:
            backends, routes = _Writer(table).body()
            found = _parts(backends, routes)
        else:
            if table.backends.keys() != previous.backends.keys():
                raise ValueError("incremental parts need the same spreads as the previous table")
            encoded = dict(previous.backends)
            digests = dict(previous.digests.backends)
            for bid in changed:
                encoded[bid] = _canonical(spread_json(table.backends[bid]))
                digests[bid] = hashlib.sha256(encoded[bid]).hexdigest()
            routes_digest = previous.digests.routes
            found = Parts(
                previous.routes,
                encoded,
                Digests(routes_digest, digests, combine(routes_digest, digests)),
            )
    global _last
    _last = found
    return found


def _parts(backends: Mapping[str, Json], routes: Mapping[str, Json]) -> Parts:
    encoded = {bid: _canonical(data) for bid, data in backends.items()}
    digests = {bid: hashlib.sha256(data).hexdigest() for bid, data in encoded.items()}
    routes_json = _canonical(routes)
    routes_digest = hashlib.sha256(routes_json).hexdigest()
    return Parts(
        routes_json, encoded, Digests(routes_digest, digests, combine(routes_digest, digests))
    )


def checksum(table: RoutingTable) -> str:
    """The compositional checksum of `table`'s wire form, `version` excluded."""
    return parts(table).digests.checksum


_last: Parts | None = None  # the parts of the last `parts`/`checksum` call, for `encode`


def parts_of(table: RoutingTable) -> Parts:
    """`parts(table)`, from the memo when the last `parts` or `checksum` call was for a table with
    this checksum (so `compile_table` then `encode` serialises once)."""
    found = _last
    if found is not None and table.checksum and found.digests.checksum == table.checksum:
        return found
    return parts(table)


def encode(table: RoutingTable, found: Parts | None = None) -> bytes:
    """The JSON bytes of `dump(table)` from its parts (`found`, or `parts_of(table)`)."""
    if found is None:
        found = parts_of(table)
    header = (
        f'{{"schema":"{SCHEMA}","version":{table.version},'
        f'"checksum":"{found.digests.checksum}","backends":{{'
    )
    spreads = b",".join(_key(bid) + data for bid, data in found.backends.items())
    return b"".join((header.encode(), spreads, b"},", memoryview(found.routes)[1:]))


def _key(name: str) -> bytes:
    return json.dumps(name).encode() + b":"


def loads(body: bytes) -> RoutingTable:
    """`load(json.loads(body))`. Raises ValueError when `body` is not JSON, SnapshotError as
    `load` does."""
    return loads_digested(body)[0]


def loads_digested(body: bytes) -> tuple[RoutingTable, Digests]:
    """`loads`, with the digests a later delta is verified against."""
    with acyclic.paused_collector():  # tens of thousands of small lists, none cyclic
        data = json.loads(body)
    return load_digested(data)


def load(data: Json) -> RoutingTable:
    """Rebuild a table from its wire form; SnapshotError on a wrong schema, checksum or shape."""
    return load_digested(data)[0]


def load_digested(data: Json) -> tuple[RoutingTable, Digests]:
    """`load`, with the digests a later delta is verified against."""
    check_schema(data)
    body = {k: v for k, v in data.items() if k not in ("schema", "version", "checksum")}
    if set(body) != BODY_KEYS:
        raise wire.error("", f"must have the keys {sorted(BODY_KEYS)}, got {sorted(body)}")
    backends = body["backends"]
    if not isinstance(backends, Mapping):
        raise wire.error("backends", f"must be an object, got {type(backends).__name__}")
    try:
        spreads = {bid: _digest(spread) for bid, spread in backends.items()}
        routes = _digest({k: body[k] for k in ROUTE_KEYS})
    except (TypeError, ValueError) as exc:
        raise wire.error("", f"is not plain JSON data: {exc}") from exc
    digests = Digests(routes, spreads, combine(routes, spreads))
    check_checksum(data, digests.checksum)
    version = check_version(data)
    try:
        with acyclic.paused_collector():
            return Reader(body).table(version, digests.checksum), digests
    except SnapshotError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise malformed(exc) from exc


def check_schema(data: Json) -> None:
    if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
        seen = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
        raise wire.error("schema", f"must be {SCHEMA!r}, got {seen!r}")


def check_checksum(data: Mapping[str, Json], digest: str) -> None:
    if data.get("checksum") != digest:
        raise wire.error(
            "checksum", f"must be {digest!r} for this content, got {data.get('checksum')!r}"
        )


def check_version(data: Mapping[str, Json]) -> int:
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise wire.error("version", f"must be an integer, got {version!r}")
    return version


def malformed(exc: Exception) -> SnapshotError:
    return wire.error("", f"malformed snapshot: {type(exc).__name__}: {exc}")


def _canonical(body: Json) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), check_circular=False).encode()


def _digest(body: Json) -> str:
    return hashlib.sha256(_canonical(body)).hexdigest()


def spread_json(backend: Backend) -> dict[str, Json]:
    """A spread's wire form when it has no mirrors (a spread in a table `compile_table` built
    never has); ValueError otherwise, since mirrors name references of the routes part."""
    if backend.mirrors:
        raise ValueError(f"spread {backend.id!r} has mirrors; only a whole table can carry it")
    return _spread_fields(backend, _ref_fields(backend, []))


def _ref_fields(backend: Backend, mirrors: list[Json]) -> dict[str, Json]:
    return wire.compact(
        {
            "id": backend.id,
            "weight": backend.weight,
            "request_headers": wire.plain(backend.request_headers),
            "response_headers": wire.plain(backend.response_headers),
            "rewrite": wire.plain(backend.rewrite),
            "mirrors": mirrors,
        }
    )


def _spread_fields(backend: Backend, out: dict[str, Json]) -> dict[str, Json]:
    out["service"] = wire.plain(backend.service)
    out["resolved"] = backend.resolved
    targets: list[Json] = []
    for t in backend.targets:
        target: dict[str, Json] = {"cluster": t.cluster, "priority": t.priority}
        target["weight"] = t.weight
        if t.endpoints:
            target["endpoints"] = wire.endpoint_rows(t.endpoints)
        if t.tls is not None:
            target["tls"] = wire.plain(t.tls)
        if t.health_check is not None:
            target["health_check"] = wire.plain(t.health_check)
        targets.append(target)
    out["targets"] = targets
    return out


# ---------------------------------------------------------------------------------------------
# Writing


class _Writer:
    def __init__(self, table: RoutingTable) -> None:
        self._table = table
        self._refs: list[Json] = []
        self._ref_numbers: dict[int, int] = {}  # id(Backend) -> index in refs
        self._ref_lists: dict[int, list[int]] = {}  # id(rule.backends) -> indices in refs
        self._settings: dict[TrafficSettings, Json] = {}
        self._settings_by_id: dict[int, Json] = {}  # the table keeps the objects alive

    def body(self) -> tuple[dict[str, Json], dict[str, Json]]:
        """(backends, routes part); spreads first, since their mirrors register references."""
        table = self._table
        backends = {bid: self._spread(b) for bid, b in sorted(table.backends.items())}
        entries = [e for _, e in sorted(table.hosts.items())] + [e for _, e in table.wildcards]
        if table.any_host is not None:
            entries.append(table.any_host)
        routes, numbers = self._routes(entries)
        return backends, {
            "refs": self._refs,
            "routes": routes,
            "hosts": {h: _numbered(e, numbers) for h, e in sorted(table.hosts.items())},
            "wildcards": [[s, _numbered(e, numbers)] for s, e in table.wildcards],
            "any_host": None if table.any_host is None else _numbered(table.any_host, numbers),
        }

    def _routes(self, entries: list[HostRoutes]) -> tuple[list[Json], dict[int, int]]:
        """Group every candidate by route, then rule, in order of first appearance."""
        groups: dict[
            tuple[str, str, int, tuple[str, ...]], dict[tuple[object, ...], list[CompiledRule]]
        ] = {}
        seen: set[int] = set()
        for entry in entries:
            for rule in entry.rules:
                if id(rule) not in seen:
                    seen.add(id(rule))
                    route_key = (rule.route_id, rule.route_kind, rule.created, rule.hostnames)
                    rules = groups.setdefault(route_key, {})
                    rules.setdefault(_rule_key(rule), []).append(rule)
        numbers: dict[int, int] = {}
        routes = []
        for (route_id, kind, created, hostnames), rules in groups.items():
            encoded = []
            for candidates in rules.values():
                for rule in candidates:
                    numbers[id(rule)] = len(numbers)
                encoded.append(self._rule(route_id, candidates))
            route: dict[str, Json] = {"id": route_id, "kind": kind, "rules": encoded}
            if created:
                route["created"] = created
            if hostnames:
                route["hostnames"] = list(hostnames)
            routes.append(route)
        return routes, numbers

    def _rule(self, route_id: str, candidates: list[CompiledRule]) -> Json:
        rule = candidates[0]
        out: dict[str, Json] = {
            "index": rule.rule_index,
            "matches": [[c.match_index, wire.plain_match(c.match.match)] for c in candidates],
        }
        # Fields equal to what the reader derives or defaults to are left out, tested one by one
        # because this runs for every rule of the table.
        if rule.rule_id != f"{route_id}#{rule.rule_index}":
            out["id"] = rule.rule_id
        if rule.backends:
            refs = self._ref_lists.get(id(rule.backends))  # compiled rules share tuples
            if refs is None:
                refs = self._ref_lists[id(rule.backends)] = [self._ref(b) for b in rule.backends]
            out["backends"] = refs
        if rule.total_weight != sum(b.weight for b in rule.backends):
            out["total_weight"] = rule.total_weight
        if rule.invalid_backend_weight:
            out["invalid_backend_weight"] = rule.invalid_backend_weight
        if rule.request_headers:
            out["request_headers"] = wire.plain(rule.request_headers)
        if rule.response_headers:
            out["response_headers"] = wire.plain(rule.response_headers)
        if rule.redirect is not None:
            out["redirect"] = wire.plain(rule.redirect)
        if rule.rewrite is not None:
            out["rewrite"] = wire.plain(rule.rewrite)
        if rule.mirrors:
            out["mirrors"] = [self._mirror(m) for m in rule.mirrors]
        settings = self._settings_by_id.get(id(rule.settings))
        if settings is None:
            settings = self._settings.get(rule.settings)
            if settings is None:
                settings = self._settings[rule.settings] = wire.plain(rule.settings)
            self._settings_by_id[id(rule.settings)] = settings
        if settings:
            out["settings"] = settings
        return out

    def _spread(self, backend: Backend) -> Json:
        return _spread_fields(backend, self._ref_fields(backend))

    def _ref(self, backend: Backend) -> int:
        """The index in "refs" of `backend` (written once: rules share Backend objects)."""
        number = self._ref_numbers.get(id(backend))
        if number is None:
            fields = self._ref_fields(backend)  # registers its mirrors' references first
            number = self._ref_numbers[id(backend)] = len(self._refs)
            self._refs.append(fields)
        return number

    def _ref_fields(self, backend: Backend) -> dict[str, Json]:
        spread = self._table.backends.get(backend.id)
        if spread is None or (spread.service, spread.targets, spread.resolved) != (
            backend.service,
            backend.targets,
            backend.resolved,
        ):
            raise ValueError(f"backend {backend.id!r} is not the spread table.backends holds")
        return _ref_fields(backend, [self._mirror(m) for m in backend.mirrors])

    def _mirror(self, mirror: Mirror) -> Json:
        return {"ref": self._ref(mirror.backend), "percent": mirror.percent}


def _rule_key(rule: CompiledRule) -> tuple[object, ...]:
    """What the candidates of one rule share; identities, since the compiler shares objects."""
    return (
        rule.rule_id,
        rule.rule_index,
        rule.total_weight,
        rule.invalid_backend_weight,
        id(rule.backends),
        id(rule.request_headers),
        id(rule.response_headers),
        id(rule.redirect),
        id(rule.rewrite),
        id(rule.mirrors),
        id(rule.settings),
    )


def _numbered(entry: HostRoutes, numbers: dict[int, int]) -> list[int]:
    return [numbers[id(rule)] for rule in entry.rules]
