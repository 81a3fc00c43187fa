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
from typing import Any

from policies import acyclic, wire
from policies.errors import SnapshotError
from policies.model import (
    HealthCheck,
    RequestRedirect,
    TrafficSettings,
    UpstreamTLS,
    URLRewrite,
)
from policies.table import (
    Backend,
    ClusterTarget,
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
            return _Reader(body).table(version, digests.checksum), digests
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


# ---------------------------------------------------------------------------------------------
# Reading


class _Reader:
    def __init__(self, body: Mapping[str, Json]) -> None:
        self._body = body
        self._memo: dict[tuple[str, str], Any] = {}  # (kind, canonical JSON) -> decoded value
        self._tuples: dict[tuple[int, ...], tuple[Backend, ...]] = {}  # shared, as compiled
        # Spreads first, then the references built on them (a reference's mirrors name earlier
        # references only), then the spreads' own reference fields.
        bare = {bid: self._bare_spread(bid, data) for bid, data in body["backends"].items()}
        self._refs: list[Backend] = []
        for i, data in enumerate(body["refs"]):
            self._refs.append(self._ref(bare, data, f"refs[{i}]"))
        self._spreads = {
            bid: self._fields(spread, body["backends"][bid], f"backends.{bid}")
            for bid, spread in bare.items()
        }
        self._candidates: list[CompiledRule] = []
        for i, route in enumerate(body["routes"]):
            self._route(route, f"routes[{i}]")

    def table(self, version: int, digest: str) -> RoutingTable:
        body = self._body
        any_host = body["any_host"]
        return RoutingTable(
            version=version,
            hosts={h: self._entry(e, f"hosts.{h}") for h, e in body["hosts"].items()},
            wildcards=tuple(
                (wire.typed(str, s, "wildcards"), self._entry(e, "wildcards"))
                for s, e in body["wildcards"]
            ),
            any_host=None if any_host is None else self._entry(any_host, "any_host"),
            backends=self._spreads,
            checksum=digest,
        )

    def _entry(self, numbers: list[int], where: str) -> HostRoutes:
        return HostRoutes(tuple(self._candidates[wire.typed(int, n, where)] for n in numbers))

    def _bare_spread(self, bid: str, data: Mapping[str, Json]) -> Backend:
        return bare_spread(bid, data)

    def _ref(self, bare: Mapping[str, Backend], data: Mapping[str, Json], where: str) -> Backend:
        bid = data["id"]
        if bid not in bare:
            raise wire.error(f"{where}.id", f"names no entry of backends: {bid!r}")
        return self._fields(bare[bid], data, where)

    def _fields(self, spread: Backend, data: Mapping[str, Json], where: str) -> Backend:
        """`spread` with the weight and filters of a reference."""
        return dataclasses.replace(
            spread,
            weight=wire.typed(int, data["weight"], f"{where}.weight"),
            request_headers=wire.modifiers(data, "request_headers", where),
            response_headers=wire.modifiers(data, "response_headers", where),
            rewrite=wire.decode(URLRewrite | None, data.get("rewrite"), f"{where}.rewrite"),
            mirrors=self._mirrors(data, where),
        )

    def _mirrors(self, data: Mapping[str, Json], where: str) -> tuple[Mirror, ...]:
        return tuple(
            Mirror(
                self._refs[wire.typed(int, m["ref"], f"{where}.mirrors[{i}].ref")],
                wire.typed(float, m["percent"], f"{where}.mirrors[{i}].percent"),
            )
            for i, m in enumerate(data.get("mirrors", []))
        )

    def _route(self, data: Mapping[str, Json], where: str) -> None:
        route_id = wire.typed(str, data["id"], f"{where}.id")
        kind = wire.typed(str, data["kind"], f"{where}.kind")
        created = wire.typed(int, data.get("created", 0), f"{where}.created")
        hostnames = wire.decode(tuple[str, ...], data.get("hostnames", []), f"{where}.hostnames")
        for i, rule in enumerate(data["rules"]):
            at = f"{where}.rules[{i}]"
            index = wire.typed(int, rule["index"], f"{at}.index")
            backends = tuple(
                self._refs[wire.typed(int, n, f"{at}.backends")] for n in rule.get("backends", [])
            )
            backends = self._tuples.setdefault(tuple(map(id, backends)), backends)
            rule_id = wire.typed(str, rule.get("id", f"{route_id}#{index}"), f"{at}.id")
            total = rule.get("total_weight", sum(b.weight for b in backends))
            total_weight = wire.typed(int, total, f"{at}.total_weight")
            invalid = rule.get("invalid_backend_weight", 0)
            invalid_weight = wire.typed(int, invalid, f"{at}.invalid_backend_weight")
            request_headers = wire.modifiers(rule, "request_headers", at)
            response_headers = wire.modifiers(rule, "response_headers", at)
            redirect = wire.decode(RequestRedirect | None, rule.get("redirect"), f"{at}.redirect")
            rewrite = wire.decode(URLRewrite | None, rule.get("rewrite"), f"{at}.rewrite")
            mirrors = self._mirrors(rule, at)
            settings_data = rule.get("settings", {})
            key = ("settings", json.dumps(settings_data, sort_keys=True))
            settings = self._memo.get(key)
            if settings is None:
                settings = wire.decode(TrafficSettings, settings_data, f"{at}.settings")
                self._memo[key] = settings
            for j, (match_index, match) in enumerate(rule["matches"]):
                self._candidates.append(
                    CompiledRule(
                        route_id=route_id,
                        rule_id=rule_id,
                        rule_index=index,
                        match=wire.compiled_match(match, f"{at}.matches[{j}]"),
                        backends=backends,
                        total_weight=total_weight,
                        request_headers=request_headers,
                        response_headers=response_headers,
                        redirect=redirect,
                        rewrite=rewrite,
                        mirrors=mirrors,
                        settings=settings,
                        invalid_backend_weight=invalid_weight,
                        match_index=wire.typed(int, match_index, f"{at}.matches[{j}]"),
                        created=created,
                        route_kind=kind,
                        hostnames=hostnames,
                    )
                )


def bare_spread(bid: str, data: Mapping[str, Json]) -> Backend:
    """A spread from its wire form, without the reference fields (weight 1, no filters)."""
    where = f"backends.{bid}"
    targets = []
    for i, t in enumerate(data.get("targets", [])):
        tls, check = t.get("tls"), t.get("health_check")
        at = f"{where}.targets"
        targets.append(
            ClusterTarget(
                cluster=wire.typed(str, t["cluster"], at),
                priority=wire.typed(int, t["priority"], at),
                weight=wire.typed(int, t["weight"], at),
                endpoints=tuple(wire.endpoints(t.get("endpoints", []), f"{at}[{i}].endpoints")),
                tls=None if tls is None else wire.decode(UpstreamTLS, tls, f"{at}.tls"),
                health_check=None
                if check is None
                else wire.decode(HealthCheck, check, f"{at}.health_check"),
            )
        )
    return Backend(
        id=bid,
        service=wire.service_ref(data["service"], f"{where}.service"),
        weight=1,
        targets=tuple(targets),
        resolved=wire.typed(bool, data["resolved"], f"{where}.resolved"),
    )
