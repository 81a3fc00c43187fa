"""Route selection: request head → decision. Pure and synchronous; the caller supplies `roll`.

CONTRACT (written first; `decide` is filled in by the routing-core work):
`decide(table, head, roll=...)` returns exactly one of `Forward`, `Redirect`, `Reject`.
`roll` is a float in [0, 1) used for the weighted backend pick. The gateway then picks a cluster
and endpoint with `policies.balancing`, applies `Forward.request_headers` with
`policies.filters.edit_headers`, and rolls once per mirror against `Mirror.percent`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from policies.model import HeaderModifier, TrafficSettings
from policies.table import Backend, CompiledRule, Mirror


@dataclasses.dataclass(frozen=True, slots=True)
class RequestHead:
    """The only view of a request the router gets. Built by the gateway's protocol."""

    method: str  # upper-case
    host: str  # lower-cased, port stripped
    path: str  # raw path as sent (not percent-decoded), without the query string
    query: str = ""  # raw query string without "?"
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # lower-cased names;
    # repeated headers comma-joined (RFC 9110 §5.3)
    scheme: str = "http"
    port: int = 80  # the listener port the request arrived on (redirect defaults)


@dataclasses.dataclass(frozen=True, slots=True)
class Forward:
    route: str  # "namespace/name"
    rule: str  # rule id
    backend: Backend
    path: str  # upstream path (rewritten or original), without query
    host: str | None  # Host to send upstream when URLRewrite changed it, else None (keep)
    request_headers: tuple[HeaderModifier, ...]  # rule then backend modifiers, in order
    response_headers: tuple[HeaderModifier, ...]
    mirrors: tuple[Mirror, ...]
    settings: TrafficSettings
    compiled: CompiledRule


@dataclasses.dataclass(frozen=True, slots=True)
class Redirect:
    route: str
    rule: str
    status: int  # 301, 302, 303, 307, 308
    location: str
    response_headers: tuple[HeaderModifier, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Reject:
    status: int
    reason: str  # stable snake_case: no_route, no_backend, invalid_backend, ...
    route: str | None = None
    rule: str | None = None


Decision = Forward | Redirect | Reject
