"""A Kubernetes API server simulator for one cluster: aiohttp on 127.0.0.1. Network I/O (server).

Speaks the protocol the real kubernetes_asyncio client uses: CRUD with Status errors, LIST with a
real resourceVersion, WATCH as a chunked stream of JSON lines (`watch` parsed case-insensitively,
as the client sends `watch=True`), replay from a resourceVersion, 410 Expired for compacted
history, BOOKMARK events, `timeoutSeconds`, label and field selectors, `/readyz`, `/version` and
API discovery. State lives in `tests.fakes.kube_store.Store`.

Test hooks: `store` (write objects directly; watches see the same events), `inject`, `compact`,
`drop_watches`, `freeze_watches`, `fail_next`, `latency_s`, `ready`, `stop`/`start` on the same
port. `tests.fakes.kube_config` describes several simulators to a client, one context each.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from tests.fakes import kube_discovery
from tests.fakes.kube_store import (
    JSON,
    KINDS_BY_PATH,
    ApiError,
    Change,
    Kind,
    Store,
    selectors,
    status_body,
)

_PUBLIC_PATHS = frozenset({"/readyz", "/livez", "/healthz", "/version", "/version/"})
_DROP = object()  # queue sentinel: end this watch stream


@dataclasses.dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the simulator saw it, for assertions about what the client sent."""

    method: str
    path: str
    query: Mapping[str, str]

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch", "").lower() in ("true", "1")


@dataclasses.dataclass(slots=True)
class _Failure:
    status: int
    remaining: int
    match: Callable[[RequestRecord], bool]


@dataclasses.dataclass(eq=False, slots=True)
class _WatchStream:
    kind: Kind
    namespace: str | None
    labels_ok: Callable[[Mapping[str, str]], bool]
    fields_ok: Callable[[Mapping[str, Any]], bool]
    queue: asyncio.Queue[object] = dataclasses.field(default_factory=asyncio.Queue)
    frozen: bool = False  # a silent connection: nothing more is sent, not even bookmarks
    abort: bool = False  # on drop, reset the connection instead of ending the stream cleanly

    def matches(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return self.labels_ok(meta.get("labels") or {}) and self.fields_ok(obj)

    def event_for(self, change: Change) -> JSON | None:
        """The event this stream sees; a selector change turns MODIFIED into ADDED/DELETED."""
        if change.kind != self.kind:
            return None
        now, before = self.matches(change.obj), self.matches(change.old)
        if change.type != "MODIFIED":
            return {"type": change.type, "object": change.obj} if now else None
        if now and before:
            return {"type": "MODIFIED", "object": change.obj}
        if now:
            return {"type": "ADDED", "object": change.obj}
        if before:
            return {"type": "DELETED", "object": change.obj}
        return None


class KubeApiSimulator:
    """One simulated cluster API server. Its port is chosen at the first start and kept."""

    def __init__(
        self,
        name: str = "cluster",
        *,
        host: str = "127.0.0.1",
        token: str | None = None,
        bookmark_interval_s: float | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.token = token if token is not None else f"token-{name}"  # "" disables auth
        self.bookmark_interval_s = bookmark_interval_s  # None: no bookmarks even when allowed
        self.store = Store()
        self.store.listeners.append(self._fan_out)
        self.latency_s = 0.0  # added before every request is handled
        self.ready = True  # what /readyz answers
        self.requests: deque[RequestRecord] = deque(maxlen=10_000)
        self._failures: list[_Failure] = []
        self._streams: set[_WatchStream] = set()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Serve on the port of the previous start, if any (an outage ends with the same URL)."""
        app = web.Application(middlewares=[self._hooks])
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/healthz", self._livez)
        app.router.add_get("/version", self._version)
        app.router.add_get("/version/", self._version)  # VersionApi.get_code asks for this one
        # The generated discovery calls ask for these paths with a trailing slash.
        for slash in ("", "/"):
            app.router.add_get(f"/api{slash}", self._core_versions)
            app.router.add_get(f"/apis{slash}", self._groups)
            app.router.add_get(f"/api/{{version}}{slash}", self._resource_list)
            app.router.add_get(f"/apis/{{group}}/{{version}}{slash}", self._resource_list)
        app.router.add_route("*", "/api/{version}/{tail:.+}", self._resource)
        app.router.add_route("*", "/apis/{group}/{version}/{tail:.+}", self._resource)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """A cluster outage: watches end, the port refuses connections until `start`."""
        if self._runner is None:
            return
        self.drop_watches(abort=True)
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> KubeApiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- test hooks ------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        match: Callable[[RequestRecord], bool] | None = None,
    ) -> None:
        """Answer the next `count` requests (those `match` accepts) with a Status of `status`."""
        self._failures.append(_Failure(status, count, match or (lambda _: True)))

    def inject(self, kind: Kind, event: JSON) -> None:
        """Send `event` as is to every live watch of `kind` (e.g. an ERROR with a 410 Status)."""
        for stream in list(self._streams):
            if stream.kind == kind:
                stream.queue.put_nowait(event)

    def compact(self, up_to: int | None = None) -> None:
        self.store.compact(up_to)

    def drop_watches(self, *, abort: bool = False) -> None:
        """End every live watch: cleanly (like a server-side timeout) or by resetting it."""
        for stream in list(self._streams):
            stream.abort = abort
            stream.queue.put_nowait(_DROP)

    def freeze_watches(self) -> None:
        """Make every live watch silent (no events, no bookmarks): a half-dead connection."""
        for stream in self._streams:
            stream.frozen = True

    @property
    def watch_count(self) -> int:
        return len(self._streams)

    # -- plumbing --------------------------------------------------------------------------

    def _fan_out(self, change: Change) -> None:
        for stream in self._streams:
            if stream.kind == change.kind:
                stream.queue.put_nowait(change)

    @web.middleware
    async def _hooks(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        record = RequestRecord(request.method, request.path, dict(request.query))
        self.requests.append(record)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        for failure in self._failures:
            if failure.remaining > 0 and failure.match(record):
                failure.remaining -= 1
                return _status(ApiError(failure.status, _reason(failure.status), "injected"))
        if (
            self.token
            and request.path not in _PUBLIC_PATHS
            and request.headers.get("Authorization") != f"Bearer {self.token}"
        ):
            return _status(ApiError(401, "Unauthorized", "Unauthorized"))
        response: web.StreamResponse = await handler(request)
        return response

    async def _not_found(self, request: web.Request) -> web.Response:
        return _status(
            ApiError(404, "NotFound", "the server could not find the requested resource")
        )

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ok")
        return web.Response(status=500, text="[-]etcd failed: reason withheld\nreadyz check failed")

    async def _livez(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response(kube_discovery.VERSION)

    async def _core_versions(self, request: web.Request) -> web.Response:
        return web.json_response(kube_discovery.core_versions(f"{self.host}:{self._port}"))

    async def _groups(self, request: web.Request) -> web.Response:
        return web.json_response(kube_discovery.group_list())

    async def _resource_list(self, request: web.Request) -> web.Response:
        group, version = request.match_info.get("group", ""), request.match_info["version"]
        body = kube_discovery.resource_list(group, version)
        if body is None:
            return _status(
                ApiError(404, "NotFound", "the server could not find the requested resource")
            )
        return web.json_response(body)

    async def _resource(self, request: web.Request) -> web.StreamResponse:
        try:
            kind, namespace, name, subresource = _route(request)
            query = request.query
            if request.method == "GET" and name is None:
                if query.get("watch", "").lower() in ("true", "1"):
                    return await self._watch(request, kind, namespace)
                items, rv = self.store.list_objects(
                    kind,
                    namespace,
                    label_selector=query.get("labelSelector", ""),
                    field_selector=query.get("fieldSelector", ""),
                )
                return web.json_response(
                    {
                        "kind": f"{kind.kind}List",
                        "apiVersion": kind.api_version,
                        "metadata": {"resourceVersion": str(rv)},
                        "items": items,
                    }
                )
            if kind.namespaced and namespace is None and request.method != "GET":
                raise ApiError(405, "MethodNotAllowed", "a namespace is required")
            status = subresource == "status"
            if subresource not in (None, "status") or (status and not kind.status_subresource):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            if request.method == "POST" and name is None:
                return web.json_response(
                    self.store.create(kind, namespace, await _body(request)), status=201
                )
            if name is None:
                raise ApiError(405, "MethodNotAllowed", f"{request.method} needs an object name")
            if request.method == "GET":
                return web.json_response(self.store.get(kind, namespace, name))
            if request.method == "PUT":
                body = await _body(request)
                return web.json_response(
                    self.store.replace(kind, namespace, name, body, status=status)
                )
            if request.method == "PATCH":
                patch = json.loads(await request.text() or "null")
                content_type = request.headers.get("Content-Type", "")
                return web.json_response(
                    self.store.patch(kind, namespace, name, content_type, patch, status=status)
                )
            if request.method == "DELETE":
                options = json.loads(await request.text() or "{}") or {}
                precondition = (options.get("preconditions") or {}).get("resourceVersion")
                return web.json_response(
                    self.store.delete(kind, namespace, name, precondition_rv=precondition)
                )
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not served")
        except ApiError as exc:
            return _status(exc)
        except json.JSONDecodeError as exc:
            return _status(ApiError(400, "BadRequest", f"the body is not JSON: {exc}"))

    async def _watch(
        self, request: web.Request, kind: Kind, namespace: str | None
    ) -> web.StreamResponse:
        query = request.query
        stream = _WatchStream(
            kind,
            namespace,
            *selectors(query.get("labelSelector", ""), query.get("fieldSelector", "")),
        )
        timeout = query.get("timeoutSeconds")
        deadline = time.monotonic() + float(timeout) if timeout else None
        bookmarks = (
            query.get("allowWatchBookmarks", "").lower() in ("true", "1")
            and self.bookmark_interval_s is not None
        )
        # Subscribe before reading history or state: with no await in between, nothing is missed.
        self._streams.add(stream)
        try:
            rv = query.get("resourceVersion", "")
            error: ApiError | None = None
            initial: list[JSON] = []
            changes: list[Change] = []
            if rv in ("", "0"):
                objects, _ = self.store.list_objects(kind, namespace)
                initial = [{"type": "ADDED", "object": o} for o in objects if stream.matches(o)]
            else:
                try:
                    changes = self.store.changes_since(int(rv))
                except ValueError:
                    raise ApiError(400, "BadRequest", f"invalid resourceVersion {rv!r}") from None
                except ApiError as exc:
                    error = exc
                initial = [e for c in changes if (e := stream.event_for(c)) is not None]
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                if error is not None:  # kube-apiserver answers 200, then one ERROR event
                    await _send(response, {"type": "ERROR", "object": error.status()})
                    return response
                for event in initial:
                    await _send(response, event)
                await self._stream_live(request, response, stream, deadline, bookmarks)
            except ConnectionError:
                pass  # the client went away
            return response
        finally:
            self._streams.discard(stream)

    async def _stream_live(
        self,
        request: web.Request,
        response: web.StreamResponse,
        stream: _WatchStream,
        deadline: float | None,
        bookmarks: bool,
    ) -> None:
        interval = self.bookmark_interval_s
        next_bookmark = time.monotonic() + interval if bookmarks and interval else None
        while True:
            now = time.monotonic()
            waits = [t - now for t in (deadline, next_bookmark) if t is not None]
            try:
                item = await asyncio.wait_for(
                    stream.queue.get(), max(0.0, min(waits, default=3600))
                )
            except TimeoutError:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    return
                if next_bookmark is not None and now >= next_bookmark and interval:
                    next_bookmark = now + interval
                    if not stream.frozen:
                        await _send(response, self._bookmark(stream.kind))
                continue
            if item is _DROP:
                if stream.abort and request.transport is not None:
                    request.transport.abort()
                return
            if stream.frozen:
                continue
            event = stream.event_for(item) if isinstance(item, Change) else item
            if isinstance(event, dict):
                await _send(response, event)

    def _bookmark(self, kind: Kind) -> JSON:
        # The queue is empty here, so every change up to the counter has been sent (or filtered).
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": kind.kind,
                "apiVersion": kind.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
            },
        }


def _route(request: web.Request) -> tuple[Kind, str | None, str | None, str | None]:
    """(kind, namespace, name, subresource) from `.../namespaces/NS/PLURAL/NAME/SUB`."""
    group, version = request.match_info.get("group", ""), request.match_info["version"]
    parts = request.match_info["tail"].strip("/").split("/")
    namespace: str | None = None
    if parts[0] == "namespaces" and len(parts) >= 3 and (group, version, parts[2]) in KINDS_BY_PATH:
        namespace, parts = parts[1], parts[2:]
    kind = KINDS_BY_PATH.get((group, version, parts[0]))
    if kind is None or len(parts) > 3:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    name = parts[1] if len(parts) > 1 else None
    subresource = parts[2] if len(parts) > 2 else None
    if not kind.namespaced and namespace is not None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return kind, namespace, name, subresource


async def _body(request: web.Request) -> JSON:
    body = json.loads(await request.text() or "null")
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body must be a JSON object")
    return body


async def _send(response: web.StreamResponse, event: JSON) -> None:
    await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")


def _status(exc: ApiError) -> web.Response:
    return web.json_response(exc.status(), status=exc.code)


def _reason(status: int) -> str:
    reasons = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "Conflict",
        410: "Expired",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }
    return reasons.get(status, "Unknown")


__all__ = [
    "JSON",
    "ApiError",
    "KubeApiSimulator",
    "RequestRecord",
    "status_body",
]
