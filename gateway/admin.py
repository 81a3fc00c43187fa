"""The admin port: `/healthz`, `/readyz`, `/status` and `/metrics` (aiohttp server I/O).

Never the public port (DESIGN.md §6). What it shows comes from an `AdminView`:

* `LocalView`: one gateway process reads its own `Gateway`, counters and recorder;
* `gateway.workers.WorkersView`: the parent of `--workers N` asks every worker and adds up.

Endpoints:
* `/healthz`: 200 while the process runs (liveness).
* `/readyz`: 200 once a table is applied and the listeners are up; 503 with the reason before
  that and from the moment draining starts (SIGTERM), so a load balancer stops sending first.
* `/status`: JSON: table version and checksum, routes with their rules and live weights,
  clusters, endpoints with health and in-flight requests, connections, and what the process's
  composition root adds (the policy directory: last load, its `file:line:col` problems).
* `/metrics`: Prometheus text (gateway.metrics).
* `/counters`: the raw counter snapshot as JSON, what a worker hands to its parent.

Auth: with a token configured (`start_admin(token=...)`, `--admin-token` / `FLEETGATE_ADMIN_TOKEN`),
every endpoint but `/healthz` and `/readyz` needs `Authorization: Bearer <token>`, `/metrics`
included (the table, endpoints and traffic figures are reconnaissance; Prometheus scrape
configs carry a bearer token). Only a SHA-256 digest of the token is kept in memory, compared
with `hmac.compare_digest`. Without a token the port is open: bind it to loopback or a unix
socket (the default 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import metrics
from gateway.metrics import Recorder, ReloadStats, Snapshot
from gateway.routing import BalancingPicker
from gateway.server import Gateway
from policies.table import Backend, CompiledRule, Endpoint, HostRoutes, RoutingTable

StatusPart = Callable[[], Mapping[str, Any]]


class AdminView(Protocol):
    """What the admin app serves; see the module docstring."""

    async def not_ready(self) -> str | None:
        """None when ready to take traffic, else a short reason ("draining", "no_table")."""

    async def status(self) -> dict[str, Any]: ...

    async def metrics(self) -> bytes: ...

    async def counters(self) -> list[Snapshot]: ...


class LocalView:
    """The admin view of the gateway in this process."""

    def __init__(
        self,
        gateway: Gateway,
        recorder: Recorder | None = None,
        *,
        worker: str = "0",
        parts: Mapping[str, StatusPart] | None = None,
        reload: Callable[[], ReloadStats | None] | None = None,
    ) -> None:
        self.gateway = gateway
        self.recorder = recorder
        self.worker = worker
        self.parts = dict(parts or {})  # extra /status sections by name (e.g. "policy")
        self.reload = reload
        self.started_at = time.time()

    async def not_ready(self) -> str | None:
        return self.readiness()

    def readiness(self) -> str | None:
        gateway = self.gateway
        if gateway.draining or gateway.ctx.draining:
            return "draining"
        if gateway.table.version == 0:
            return "no_table"
        if not gateway.addresses:
            return "not_listening"
        return None

    def snapshot(self) -> Snapshot:
        gateway = self.gateway
        return metrics.take_snapshot(
            gateway.counters,
            self.recorder,
            worker=self.worker,
            table_version=gateway.table.version,
            pool_idle=gateway.pools.idle_count(),
        )

    async def counters(self) -> list[Snapshot]:
        return [self.snapshot()]

    async def metrics(self) -> bytes:
        return metrics.render([self.snapshot()], self.reload() if self.reload else None)

    async def status(self) -> dict[str, Any]:
        gateway = self.gateway
        counters = gateway.counters
        body: dict[str, Any] = {
            "worker": self.worker,
            "ready": self.readiness() is None,
            "not_ready": self.readiness(),
            "uptime_s": round(time.time() - self.started_at, 3),
            "listeners": [f"{host}:{port}" for host, port in gateway.addresses],
            "connections": {
                "downstream_open": counters.downstream_open,
                "upstream_open": counters.upstream_open,
                "upstream_idle": gateway.pools.idle_count(),
                "requests": counters.requests,
            },
        }
        previous = gateway.holder.previous
        body.update(describe_table(gateway.table, _health(gateway), gateway.pools.active))
        body["table"]["previous_version"] = previous.version if previous is not None else None
        for name, part in self.parts.items():
            body[name] = dict(part())
        return body


def _health(gateway: Gateway) -> Callable[[Endpoint], bool]:
    picker = gateway.ctx.router.picker
    if isinstance(picker, BalancingPicker):
        return picker.health.healthy
    return _always


def _always(endpoint: Endpoint) -> bool:
    return True


# ---------------------------------------------------------------------------------------------
# /status: the table as people read it


def describe_table(
    table: RoutingTable,
    healthy: Callable[[Endpoint], bool],
    active: Callable[[Endpoint], int],
) -> dict[str, Any]:
    """Routes with rules and live weights, clusters, endpoints with health. Pure."""
    entries: list[HostRoutes] = [*table.hosts.values(), *(e for _, e in table.wildcards)]
    if table.any_host is not None:
        entries.append(table.any_host)
    rules: dict[str, list[CompiledRule]] = {}
    for entry in entries:
        for rule in entry.rules:
            same = rules.setdefault(rule.rule_id, [])
            if all(r.match_index != rule.match_index for r in same):
                same.append(rule)
    routes: dict[str, dict[str, Any]] = {}
    for rule_id, matches in rules.items():
        rule = matches[0]
        route = routes.setdefault(
            rule.route_id,
            {
                "route": rule.route_id,
                "kind": rule.route_kind,
                "hostnames": list(rule.hostnames),
                "rules": [],
            },
        )
        route["rules"].append(
            {
                "rule": rule_id,
                "matches": [_match(r) for r in sorted(matches, key=_by_match_index)],
                "redirect": rule.redirect is not None,
                "backends": [
                    _backend(b, rule.total_weight, healthy, active) for b in rule.backends
                ],
            }
        )
    endpoints: dict[str, dict[str, Any]] = {}
    clusters: dict[str, dict[str, int]] = {}
    for backend in table.backends.values():
        for target in backend.targets:
            summary = clusters.setdefault(target.cluster, {"endpoints": 0, "healthy": 0})
            for endpoint in target.endpoints:
                if endpoint.id in endpoints:
                    continue
                ok = endpoint.ready and healthy(endpoint)
                endpoints[endpoint.id] = _endpoint(endpoint, ok, active)
                summary["endpoints"] += 1
                summary["healthy"] += ok
    return {
        "table": {"version": table.version, "checksum": table.checksum},
        "routes": sorted(routes.values(), key=lambda r: str(r["route"])),
        "clusters": [{"cluster": name, **clusters[name]} for name in sorted(clusters)],
        "endpoints": [endpoints[key] for key in sorted(endpoints)],
    }


def _by_match_index(rule: CompiledRule) -> int:
    return rule.match_index


def _match(rule: CompiledRule) -> dict[str, Any]:
    match = rule.match.match
    described: dict[str, Any] = {"path": {"type": match.path.kind.value, "value": match.path.value}}
    if match.method:
        described["method"] = match.method
    if match.headers:
        described["headers"] = [
            {"name": h.name, "value": h.value, "type": h.kind.value} for h in match.headers
        ]
    if match.query_params:
        described["queryParams"] = [
            {"name": q.name, "value": q.value, "type": q.kind.value} for q in match.query_params
        ]
    return described


def _backend(
    backend: Backend,
    total_weight: int,
    healthy: Callable[[Endpoint], bool],
    active: Callable[[Endpoint], int],
) -> dict[str, Any]:
    tiers: dict[int, int] = {}
    for target in backend.targets:
        tiers[target.priority] = tiers.get(target.priority, 0) + target.weight
    return {
        "backend": backend.id,
        "service": str(backend.service),
        "weight": backend.weight,
        "share": round(backend.weight / total_weight, 4) if total_weight else 0.0,
        "resolved": backend.resolved,
        "clusters": [
            {
                "cluster": target.cluster,
                "priority": target.priority,
                "weight": target.weight,
                # share within its failover tier while every tier is healthy
                "share_in_tier": round(target.weight / tiers[target.priority], 4)
                if tiers[target.priority]
                else 0.0,
                "endpoints": [
                    _endpoint(e, e.ready and healthy(e), active) for e in target.endpoints
                ],
            }
            for target in backend.targets
        ],
    }


def _endpoint(endpoint: Endpoint, ok: bool, active: Callable[[Endpoint], int]) -> dict[str, Any]:
    return {
        "endpoint": endpoint.id,
        "address": endpoint.address,
        "cluster": endpoint.cluster,
        "zone": endpoint.zone,
        "ready": endpoint.ready,
        "healthy": ok,
        "active": active(endpoint),
    }


# ---------------------------------------------------------------------------------------------
# The app

VIEW = web.AppKey("admin_view", AdminView)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes carry no credentials


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def bearer_auth(digest: bytes) -> Middleware:
    """Middleware: 401 unless `Authorization: Bearer <token>` hashes to `digest`."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            response: web.StreamResponse = await handler(request)
            return response
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        given = token_digest(presented.strip()) if scheme.lower() == "bearer" else b""
        if not hmac.compare_digest(given, digest):
            return web.Response(
                status=401,
                text="unauthorized\n",
                headers={"WWW-Authenticate": 'Bearer realm="fleetgate-admin"', **_NO_STORE},
            )
        response = await handler(request)
        return response

    return auth


def build_app(view: AdminView, *, token: str | None = None) -> web.Application:
    middlewares = [bearer_auth(token_digest(token))] if token else []
    app = web.Application(middlewares=middlewares)
    app[VIEW] = view
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/status", _status)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/counters", _counters)
    return app


_NO_STORE = {"Cache-Control": "no-store"}


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers=_NO_STORE)


async def _readyz(request: web.Request) -> web.Response:
    reason = await request.app[VIEW].not_ready()
    if reason is None:
        return web.Response(text="ready\n", headers=_NO_STORE)
    return web.Response(status=503, text=f"not ready: {reason}\n", headers=_NO_STORE)


async def _status(request: web.Request) -> web.Response:
    body = await request.app[VIEW].status()
    return web.json_response(body, headers=_NO_STORE, dumps=_dumps)


async def _metrics(request: web.Request) -> web.Response:
    text = await request.app[VIEW].metrics()
    return web.Response(body=text, headers={"Content-Type": metrics.CONTENT_TYPE, **_NO_STORE})


async def _counters(request: web.Request) -> web.Response:
    return web.json_response(await request.app[VIEW].counters(), headers=_NO_STORE)


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


async def start_admin(view: AdminView, address: str, *, token: str | None = None) -> web.AppRunner:
    """Serve the admin app on "host:port" (port 0 = any) or "unix:/path". Caller cleans up.
    With `token`, all but /healthz and /readyz need it as a bearer token."""
    runner = web.AppRunner(build_app(view, token=token), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        if address.startswith("unix:"):
            await web.UnixSite(runner, address[len("unix:") :]).start()
        else:
            host, port = split_address(address)
            await web.TCPSite(runner, host, port, reuse_address=True).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_address(runner: web.AppRunner) -> str:
    """The first bound address of a started runner: "host:port" or the unix socket path."""
    address = runner.addresses[0]
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address)


def split_address(address: str) -> tuple[str, int]:
    """ "host:port" → (host, port); raises ValueError with the address in the message."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)
