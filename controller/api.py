"""The operator API: releases, policy history and rollback, gateways (aiohttp server I/O).

Everything is under `/api/v1` (the snapshot API of `controller.publishing` owns `/v1`, so both
can share one server) and answers JSON. Errors are `{"error": <snake_case code>, "message": ...}`.

    GET  /api/v1/releases                                   releases the caller may see
    GET  /api/v1/releases/{namespace}/{name}                status (`fleetgate release status`)
    POST /api/v1/releases/{namespace}/{name}/{action}       start promote pause resume abort
                                                            retry set-weight
         promote:    full=true skips every remaining step (promote --full)
         abort:      ramped=false drops to 0 % at once (default: follow spec.abort.rampSteps)
         set-weight: weight=N
    GET  /api/v1/releases/{namespace}/{name}/history        overlay revisions
    GET  /api/v1/policies                                   policies with a history
    GET  /api/v1/policies/{namespace}/{name}/history        revisions (content=true: with content)
    POST /api/v1/policies/{namespace}/{name}/rollback       revision=N
    GET  /api/v1/gateways                                   gateways and their applied versions

Parameters come from the query string or a JSON object body (the body wins).

**Auth** (DESIGN.md §6): `Authorization: Bearer <token>`, checked against `controller.api_tokens`
(SHA-256 digests of random tokens). Each token has a name (the *actor* recorded in every
revision and log line), a role, and for developers a list of namespaces. Admins may do
everything; developers may read and act on releases and policies in their namespaces only (403
elsewhere) and read the gateway list. A missing or unknown token is 401. Every write is logged
on the `controller.api.audit` logger with its actor and outcome, refusals included.

**Kubernetes mode** (several controller replicas, one leader): only the leader runs releases, so
only the leader answers the release and policy endpoints. A standby answers them with
`503 {"error": "not_leader", "leader": <identity or null>}` and a message naming the leader
(`503 starting` while a new leader is still loading the policies and the saved state),
after the same authentication and namespace checks (a standby does not forward: it does not know
the leader's API address, and a forwarded write could land on a leader that changed meanwhile;
the CLI shows the message, and the operator retries against the leader). `/api/v1/gateways` is
answered by every replica.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from controller import codec, errors
from controller.api_tokens import Principal, Tokens
from controller.publishing import Publisher
from controller.releases import ReleaseNotFound, ReleaseRunner
from controller.rollbacks import RollbackRefused, UnknownPolicy
from policies.release_state import Refused

log = logging.getLogger(__name__)
audit = logging.getLogger("controller.api.audit")

READY_TIMEOUT_S = 10.0  # how long a request waits for the release state to be loaded

_ACTIONS = {
    "start": "start",
    "promote": "promote",
    "pause": "pause",
    "resume": "resume",
    "abort": "abort",
    "retry": "retry",
    "set-weight": "set_weight",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Backend:
    """What the API serves from: the runner while this replica runs releases (None on a
    standby), the publisher, and who the leader is (for a standby's 503)."""

    runner: Callable[[], ReleaseRunner | None]
    publisher: Publisher
    leader: Callable[[], str | None] = lambda: None
    identity: str | None = None  # this replica (Kubernetes mode)


BACKEND = web.AppKey("backend", Backend)
TOKENS = web.AppKey("tokens", Tokens)

Handler = Callable[[web.Request, Principal], Awaitable[web.Response]]


def add_routes(app: web.Application, backend: ReleaseRunner | Backend, tokens: Tokens) -> None:
    """Mount the operator API on `app` (a runner: embedded mode, always the one that acts)."""
    if isinstance(backend, ReleaseRunner):
        runner = backend
        backend = Backend(lambda: runner, runner.publisher)
    app[BACKEND] = backend
    app[TOKENS] = tokens
    get, post = app.router.add_get, app.router.add_post
    get("/api/v1/releases", _authed(_list_releases))
    get("/api/v1/releases/{namespace}/{name}", _authed(_release_status))
    get("/api/v1/releases/{namespace}/{name}/history", _authed(_release_history))
    post("/api/v1/releases/{namespace}/{name}/{action}", _authed(_release_action))
    get("/api/v1/policies", _authed(_list_policies))
    get("/api/v1/policies/{namespace}/{name}/history", _authed(_policy_history))
    post("/api/v1/policies/{namespace}/{name}/rollback", _authed(_policy_rollback))
    get("/api/v1/gateways", _authed(_gateways))


def build_app(backend: ReleaseRunner | Backend, tokens: Tokens) -> web.Application:
    app = web.Application(client_max_size=64 << 10)
    add_routes(app, backend, tokens)
    return app


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


class _Refusal(Exception):
    """Answer the request with this error response (raised by the shared prologue)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _authed(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def wrapper(request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        principal = None
        if scheme.lower() == "bearer" and token.strip():
            principal = request.app[TOKENS].authenticate(token.strip())
        if principal is None:
            if request.method != "GET":
                audit.info("refused actor=<none> %s %s: unauthorized", request.method, request.path)
            return _error(401, "unauthorized", "a valid bearer token is required")
        try:
            return await handler(request, principal)
        except _Refusal as refusal:
            return refusal.response
        except errors.ControllerError as exc:  # the state could not be saved (Kubernetes mode)
            audit.info(
                "failed actor=%s %s %s: %s", principal.name, request.method, request.path, exc
            )
            return _error(
                503,
                "state_not_saved",
                f"the release state could not be saved ({exc}); nothing was published: the change "
                "takes effect once a later save succeeds (the runner retries on every tick)",
            )

    return wrapper


def _check_namespace(request: web.Request, principal: Principal, namespace: str) -> None:
    if principal.may(namespace):
        return
    if request.method != "GET":
        audit.info(
            "refused actor=%s %s %s: namespace %s not allowed",
            principal.name,
            request.method,
            request.path,
            namespace,
        )
    raise _Refusal(
        _error(403, "forbidden", f"token {principal.name!r} may not use namespace {namespace!r}")
    )


async def _runner(request: web.Request, principal: Principal) -> ReleaseRunner:
    """The runner, loaded; a standby refuses with 503 naming the leader."""
    backend = request.app[BACKEND]
    runner = backend.runner()
    if runner is None:
        leader = backend.leader()
        if leader is not None and leader == backend.identity:
            raise _Refusal(
                _error(
                    503,
                    "starting",
                    "this controller replica just became the leader and is still loading the "
                    "policies and the release state; retry in a moment",
                    leader=leader,
                )
            )
        if request.method != "GET":
            audit.info(
                "refused actor=%s %s %s: not the leader",
                principal.name,
                request.method,
                request.path,
            )
        where = f"the leader is {leader}" if leader else "no leader is elected right now"
        raise _Refusal(
            _error(
                503,
                "not_leader",
                f"this controller replica is not the leader ({where}); "
                "releases are run and changed by the leader only",
                leader=leader,
            )
        )
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await runner.wait_ready()
    except TimeoutError:
        raise _Refusal(
            _error(503, "starting", "the release state is not loaded yet; retry in a moment")
        ) from None
    return runner


async def _subject(request: web.Request, principal: Principal) -> tuple[ReleaseRunner, str]:
    """The prologue of every `{namespace}/{name}` endpoint: the id, the namespace check and the
    runner (403 and 503 are raised as `_Refusal`)."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    _check_namespace(request, principal, namespace)
    return await _runner(request, principal), f"{namespace}/{name}"


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "bad_body", "message": f"body is not JSON: {exc}"}),
                content_type="application/json",
            ) from exc
        if isinstance(body, dict):
            params.update(body)
    return params


def _flag(params: Mapping[str, Any], name: str, default: bool) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on")


def _integer(params: Mapping[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# -- releases --------------------------------------------------------------------------------


async def _list_releases(request: web.Request, principal: Principal) -> web.Response:
    runner = await _runner(request, principal)
    views = []
    for release_id in runner.release_ids():
        if principal.may(release_id.partition("/")[0]):
            try:
                views.append(runner.view(release_id))
            except ReleaseNotFound:
                continue
    return web.json_response({"releases": views})


async def _release_status(request: web.Request, principal: Principal) -> web.Response:
    runner, release_id = await _subject(request, principal)
    try:
        return web.json_response(runner.view(release_id))
    except ReleaseNotFound:
        return _error(404, "not_found", f"no release {release_id}")


async def _release_history(request: web.Request, principal: Principal) -> web.Response:
    runner, release_id = await _subject(request, principal)
    try:
        history = runner.history(release_id)
    except ReleaseNotFound:
        return _error(404, "not_found", f"no release {release_id}")
    revisions = [
        {
            "number": r.number,
            "at": r.at,
            "actor": r.actor,
            "reason": r.reason,
            "content": codec.encode(r.content),
        }
        for r in history.revisions
    ]
    return web.json_response({"subject": release_id, "revisions": revisions})


async def _release_action(request: web.Request, principal: Principal) -> web.Response:
    runner, release_id = await _subject(request, principal)
    verb = request.match_info["action"]
    action = _ACTIONS.get(verb)
    if action is None:
        return _error(404, "unknown_action", f"no release action {verb!r}")
    params = await _params(request)
    weight = _integer(params, "weight")
    if action == "set_weight" and weight is None:
        return _error(400, "weight_required", "set-weight needs an integer `weight`")
    if action == "promote" and _flag(params, "full", False):
        action = "promote_full"
    try:
        result = await runner.act(
            release_id,
            action,
            actor=principal.name,
            weight=weight,
            immediate=not _flag(params, "ramped", True),
        )
    except ReleaseNotFound:
        audit.info("refused actor=%s %s %s: not found", principal.name, action, release_id)
        return _error(404, "not_found", f"no release {release_id}")
    if isinstance(result, Refused):
        audit.info("refused actor=%s %s %s: %s", principal.name, action, release_id, result.reason)
        return _error(409, result.reason, result.message)
    audit.info(
        "actor=%s %s %s%s: %s",
        principal.name,
        action,
        release_id,
        f" weight={weight}" if action == "set_weight" else "",
        result.state.message,
    )
    return web.json_response({"ok": True, "release": runner.view(release_id)})


# -- policies --------------------------------------------------------------------------------


async def _list_policies(request: web.Request, principal: Principal) -> web.Response:
    runner = await _runner(request, principal)
    histories = runner.policies
    items = []
    for route_id in histories.ids():
        if not principal.may(route_id.partition("/")[0]):
            continue
        latest = histories.history(route_id).latest
        items.append(
            {
                "policy": route_id,
                "revision": latest.number if latest else None,
                "rolled_back": histories.overridden(route_id),
            }
        )
    return web.json_response({"policies": items})


async def _policy_history(request: web.Request, principal: Principal) -> web.Response:
    runner, route_id = await _subject(request, principal)
    try:
        history = runner.policies.history(route_id)
    except UnknownPolicy:
        return _error(404, "not_found", f"no history for policy {route_id}")
    with_content = _flag(request.query, "content", False)
    revisions = []
    for r in history.revisions:
        item: dict[str, Any] = {
            "number": r.number,
            "at": r.at,
            "actor": r.actor,
            "reason": r.reason,
        }
        if with_content:
            item["content"] = codec.encode(r.content)
        revisions.append(item)
    return web.json_response(
        {
            "subject": route_id,
            "revisions": revisions,
            "rolled_back": runner.policies.overridden(route_id),
        }
    )


async def _policy_rollback(request: web.Request, principal: Principal) -> web.Response:
    runner, route_id = await _subject(request, principal)
    params = await _params(request)
    number = _integer(params, "revision")
    if number is None:
        return _error(400, "revision_required", "rollback needs an integer `revision`")
    try:
        revision = await runner.rollback_policy(route_id, number, actor=principal.name)
    except UnknownPolicy:
        audit.info("refused actor=%s rollback %s: not found", principal.name, route_id)
        return _error(404, "not_found", f"no history for policy {route_id}")
    except RollbackRefused as exc:
        audit.info("refused actor=%s rollback %s: %s", principal.name, route_id, exc.reason)
        return _error(409, exc.reason, exc.message)
    audit.info(
        "actor=%s rollback %s to revision %d: now revision %d",
        principal.name,
        route_id,
        number,
        revision.number,
    )
    return web.json_response(
        {
            "ok": True,
            "policy": route_id,
            "revision": revision.number,
            "reason": revision.reason,
            "rolled_back": runner.policies.overridden(route_id),
        }
    )


async def _gateways(request: web.Request, principal: Principal) -> web.Response:
    publisher = request.app[BACKEND].publisher
    latest = publisher.latest
    return web.json_response(
        {
            "version": latest.version if latest else None,
            "rollout": str(publisher.rollout(latest.version)) if latest else None,
            "gateways": [dataclasses.asdict(view) for view in publisher.gateways()],
        }
    )
