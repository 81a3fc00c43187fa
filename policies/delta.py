"""Delta snapshots: a table that differs from one the gateway holds only in some spreads' targets
travels as those spreads alone. Pure.

An EndpointSlice change alters the endpoints of one (cluster, service port); in the table that is
the targets of the few spreads over that service, while routes, rules, references and the host
index stay as they were. Sending the whole 2 MB snapshot to every gateway for that, and decoding
it there, is what made propagation slow at fleet scale. A delta is

    {"schema", "version", "checksum", "base": checksum of the table it applies to,
     "backends": {id: spread, ...}}        the replaced spreads, in the full form's shape

and is only written when the routes part and the set of spread ids are unchanged (`encode_delta`
returns None otherwise: the full snapshot is sent). The receiver checks that it holds the base,
hashes the replaced spreads, recombines the checksum from its `Digests` (no 2 MB re-serialised)
and compares it with the announced one before building anything; then `with_spreads` swaps the
spreads into its table, rebuilding only the rules and index entries that use them. Any failure is
a SnapshotError: the caller fetches the full snapshot instead, so a wrong table is never served.

`with_spreads` is also how `policies.incremental` recompiles after an endpoint change, so the
controller and every gateway build the same objects the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from policies import acyclic, snapshot, snapshot_reader, wire
from policies.errors import SnapshotError
from policies.table import Backend, CompiledRule, HostRoutes, Mirror, RoutingTable

DELTA_KEYS = frozenset({"schema", "version", "checksum", "base", "backends"})


def encode_delta(base: snapshot.Digests, new: snapshot.Parts, *, version: int) -> bytes | None:
    """The delta from the table with digests `base` to the one with parts `new`, or None when
    the routes part or the spread ids differ (a policy change: send the full snapshot)."""
    digests = new.digests
    if base.routes != digests.routes or base.backends.keys() != digests.backends.keys():
        return None
    changed = [bid for bid, digest in digests.backends.items() if base.backends[bid] != digest]
    header = (
        f'{{"schema":"{snapshot.SCHEMA}","version":{version},"checksum":"{digests.checksum}",'
        f'"base":"{base.checksum}","backends":{{'
    )
    spreads = b",".join(json.dumps(bid).encode() + b":" + new.backends[bid] for bid in changed)
    return header.encode() + spreads + b"}}"


def apply_delta(
    table: RoutingTable, digests: snapshot.Digests, body: bytes
) -> tuple[RoutingTable, snapshot.Digests]:
    """`table` (whose digests are `digests`) with the delta `body` applied, verified.

    SnapshotError when `body` is not a delta for this base, does not verify, or is malformed;
    ValueError when it is not JSON.
    """
    data = json.loads(body)
    snapshot.check_schema(data)
    if set(data) != DELTA_KEYS:
        raise wire.error("", f"a delta must have the keys {sorted(DELTA_KEYS)}, got {sorted(data)}")
    if data["base"] != digests.checksum:
        raise wire.error(
            "base", f"the delta applies to {data['base']!r}, the table held is {digests.checksum!r}"
        )
    spreads = data["backends"]
    if not isinstance(spreads, dict):
        raise wire.error("backends", f"must be an object, got {type(spreads).__name__}")
    unknown = sorted(set(spreads) - set(digests.backends))
    if unknown:
        raise wire.error("backends", f"the table held has no spreads {unknown}")
    hashes = dict(digests.backends)
    for bid, spread in spreads.items():
        hashes[bid] = hashlib.sha256(_canonical(spread)).hexdigest()
    checksum = snapshot.combine(digests.routes, hashes)
    snapshot.check_checksum(data, checksum)
    version = snapshot.check_version(data)
    try:
        decoded = {bid: _spread(bid, spread) for bid, spread in spreads.items()}
        with acyclic.paused_collector():
            new = with_spreads(table, decoded, version=version, checksum=checksum)
    except SnapshotError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise snapshot.malformed(exc) from exc
    return new, snapshot.Digests(digests.routes, hashes, checksum)


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), check_circular=False).encode()


def _spread(bid: str, data: Any) -> Backend:
    """A spread of a delta: the full form's shape, without reference fields beyond weight 1 (a
    compiled spread has none; anything else needs the routes part, so the full snapshot)."""
    if not isinstance(data, dict):
        raise wire.error(f"backends.{bid}", f"must be an object, got {type(data).__name__}")
    extra = sorted(set(data) - {"id", "weight", "service", "resolved", "targets"})
    if extra or data.get("id") != bid or data.get("weight") != 1:
        raise wire.error(f"backends.{bid}", "a delta carries plain spreads only (id, weight 1)")
    return snapshot_reader.bare_spread(bid, data)


def with_spreads(
    table: RoutingTable, spreads: Mapping[str, Backend], *, version: int, checksum: str
) -> RoutingTable:
    """`table` with `spreads` replacing the spreads of the same id, and every reference, mirror,
    rule and index entry that uses one rebuilt; everything else is shared with `table`.

    Only targets may differ: ValueError when a replacement changes a spread's service or
    resolution, names no spread of `table`, or when either carries filters or mirrors (the
    references and rules built on it would change shape: compile or send the whole table). The
    object sharing of `table` is kept (one new object per old one), so the result encodes
    exactly as a table compiled from scratch.
    """
    memo: dict[int, Any] = {}  # id(old object) -> its replacement (old objects stay alive)
    for bid, new in spreads.items():
        old = table.backends.get(bid)
        if old is None:
            raise ValueError(f"the table has no spread {bid!r}")
        if (
            (new.service, new.resolved) != (old.service, old.resolved)
            or _refers(old)
            or _refers(new)
        ):
            raise ValueError(f"spread {bid!r} changes more than its targets")
        memo[id(old)] = new
    if not memo:
        return dataclasses.replace(table, version=version, checksum=checksum)

    def backend(b: Backend) -> Backend:
        found = memo.get(id(b))
        if found is None:
            spread = spreads.get(b.id)
            found = dataclasses.replace(
                b,
                targets=b.targets if spread is None else spread.targets,
                mirrors=mirrors(b.mirrors),
            )
            if spread is None and found.mirrors is b.mirrors:
                found = b
            memo[id(b)] = found
        return found

    def mirrors(found: tuple[Mirror, ...]) -> tuple[Mirror, ...]:
        return _shared(memo, found, mirror)

    def mirror(m: Mirror) -> Mirror:
        new = backend(m.backend)
        return m if new is m.backend else Mirror(new, m.percent)

    def rule(r: CompiledRule) -> CompiledRule:
        backends = _shared(memo, r.backends, backend)
        found = mirrors(r.mirrors)
        if backends is r.backends and found is r.mirrors:
            return r
        return dataclasses.replace(r, backends=backends, mirrors=found)

    def entry(e: HostRoutes) -> HostRoutes:
        got = memo.get(id(e))
        if got is None:
            rules = _shared(memo, e.rules, rule)
            got = memo[id(e)] = e if rules is e.rules else HostRoutes(rules)
        return got

    return RoutingTable(
        version=version,
        hosts={host: entry(e) for host, e in table.hosts.items()},
        wildcards=tuple((suffix, entry(e)) for suffix, e in table.wildcards),
        any_host=None if table.any_host is None else entry(table.any_host),
        backends={bid: memo.get(id(b), b) for bid, b in table.backends.items()},
        checksum=checksum,
    )


def _refers(spread: Backend) -> bool:
    return bool(spread.mirrors or spread.request_headers or spread.response_headers) or (
        spread.rewrite is not None or spread.weight != 1
    )


def _shared(memo: dict[int, Any], items: tuple[Any, ...], rebuild: Any) -> tuple[Any, ...]:
    """`items` with each element rebuilt, memoised by identity; `items` itself when none changed
    (so tuples shared between rules stay shared)."""
    found = memo.get(id(items))
    if found is None:
        rebuilt = tuple(_once(memo, item, rebuild) for item in items)
        found = items if all(a is b for a, b in zip(rebuilt, items, strict=True)) else rebuilt
        memo[id(items)] = found
    return found


def _once(memo: dict[int, Any], item: Any, rebuild: Any) -> Any:
    found = memo.get(id(item))
    if found is None:
        found = memo[id(item)] = rebuild(item)
    return found
