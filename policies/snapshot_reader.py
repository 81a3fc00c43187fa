"""Reading the snapshot wire form back into a RoutingTable. Pure.

`policies.snapshot` verifies a body (schema, checksum) and hands it here; this module only builds
the objects, sharing them as the compiler does (one tuple per distinct backend list, one settings
object per distinct settings). Shape errors surface as KeyError/TypeError/... or SnapshotError
naming the field; `policies.snapshot.load` turns the former into "malformed snapshot".
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from policies import wire
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

Json = wire.Json


class Reader:
    """Builds a table from a verified body (see `policies.snapshot` for the shape)."""

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
