"""Demo member-cluster app servers (aiohttp web on loopback sockets): what `fleetgate demo` and e2e
tests put behind the gateway in place of real pods.

Each server answers every path with JSON naming its cluster, version and pod (also as `x-cluster`,
`x-version`, `x-pod` headers), serves `/healthz` and a WebSocket echo at `/ws`. Faults are knobs
changed at run time: a deterministic error rate, added latency, a failing health check. Not the
hot path, so aiohttp is fine here; the servers bind only the address they are given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from fractions import Fraction

from aiohttp import WSMsgType, web

HEALTH_PATH = "/healthz"
WEBSOCKET_PATH = "/ws"
# Echoed request headers whose values are credentials: presence is shown, the value never is.
REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_BODY_CHUNK = 64 * 1024
# A stopped demo pod goes away promptly: in-flight handlers get this long, then are cancelled.
_STOP_GRACE_S = 0.25


@dataclasses.dataclass(frozen=True, slots=True)
class BackendSpec:
    """What one demo server stands for and where it listens."""

    cluster: str
    version: str = "v1"
    host: str = "127.0.0.1"  # a loopback address: 127.0.1.x for cluster A, 127.0.2.x for B, ...
    port: int = 0  # 0 = any free port; the bound one is `DemoBackend.port`
    pod: str | None = None  # None = "<cluster>-<version>-<port>"
    service: str = "web"  # echoed only, so a demo can tell services apart


class DemoBackend:
    """One running server and its fault knobs.

    Knobs take effect on the next request. The error pattern is counter-based so tests are exact:
    after `set_error_rate(r)`, request n (counting from 1, excluding health probes and WebSocket
    upgrades) fails with 500 iff floor(n*r) > floor((n-1)*r); rate 1/4 fails requests 4, 8, 12...
    """

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.latency_s = 0.0
        self.healthy = True
        self.requests = 0  # answered application requests (errors included), health excluded
        self.errors = 0
        self.health_probes = 0
        self._error_rate = Fraction(0)
        self._counted = 0  # requests counted for the error pattern since the last set_error_rate
        self._port = spec.port
        self._runner: web.AppRunner | None = None

    # -- knobs ---------------------------------------------------------------------------------

    @property
    def error_rate(self) -> float:
        return float(self._error_rate)

    def set_error_rate(self, rate: float) -> None:
        """Fail this fraction (0..1) of application requests with 500, restarting the pattern."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"error rate must be within 0..1, got {rate}")
        self._error_rate = Fraction(rate).limit_denominator(1_000_000)
        self._counted = 0

    def drain(self) -> None:
        """Answer 503 on /healthz (as a pod does before its listener closes); keep serving."""
        self.healthy = False

    def fail_health(self, failing: bool = True) -> None:
        self.healthy = not failing

    # -- addresses -----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.spec.host

    @property
    def port(self) -> int:
        """The bound port (the spec's, or the one the kernel chose at the first start)."""
        return self._port

    @property
    def address(self) -> str:
        return f"{self.spec.host}:{self._port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def pod(self) -> str:
        return self.spec.pod or f"{self.spec.cluster}-{self.spec.version}-{self._port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen (again, on the same port after a `stop`, so a returning pod keeps its address)."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_get(WEBSOCKET_PATH, self._websocket)
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=_STOP_GRACE_S,
            handler_cancellation=True,  # a client that gives up cancels its (delayed) answer
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.spec.host, self._port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        """Close the listener and every open connection (a pod going away)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- handlers ------------------------------------------------------------------------------

    def _identity_headers(self) -> dict[str, str]:
        return {"x-cluster": self.spec.cluster, "x-version": self.spec.version, "x-pod": self.pod}

    async def _health(self, request: web.Request) -> web.Response:
        self.health_probes += 1
        status, state = (200, "ok") if self.healthy else (503, "draining")
        return web.json_response(
            {"status": state, "cluster": self.spec.cluster, "pod": self.pod},
            status=status,
            headers=self._identity_headers(),
        )

    def _next_is_error(self) -> bool:
        self._counted += 1
        n, rate = self._counted, self._error_rate
        return math.floor(n * rate) > math.floor((n - 1) * rate)

    async def _answer(self, request: web.Request) -> web.Response:
        # Read the body in bounded chunks so a 100 MiB upload costs 64 KiB of memory here.
        digest = hashlib.sha256()
        body_bytes = 0
        async for chunk in request.content.iter_chunked(_BODY_CHUNK):
            digest.update(chunk)
            body_bytes += len(chunk)
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        failing = self._next_is_error()
        self.requests += 1
        self.errors += failing
        payload = {
            "cluster": self.spec.cluster,
            "version": self.spec.version,
            "pod": self.pod,
            "service": self.spec.service,
            "path": request.raw_path,
            "method": request.method,
            "headers": echoed_headers(request.headers.items()),
            "body_bytes": body_bytes,
            "body_sha256": digest.hexdigest(),
        }
        if failing:
            payload["error"] = "injected failure"
        return web.json_response(
            payload, status=500 if failing else 200, headers=self._identity_headers()
        )

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("upgrade", "").lower() != "websocket":
            return await self._answer(request)
        ws = web.WebSocketResponse(heartbeat=None, autoping=True)
        await ws.prepare(request)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type is WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            else:  # CLOSE / ERROR end the echo; aiohttp answers the close handshake itself
                break
        return ws


def echoed_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Request headers as a JSON object: names lower-cased, repeated fields joined with ", "
    (RFC 9110 §5.3), credential values replaced by "<redacted>"."""
    echoed: dict[str, str] = {}
    for raw_name, value in headers:
        name = raw_name.lower()
        shown = "<redacted>" if name in REDACTED_HEADERS else value
        echoed[name] = f"{echoed[name]}, {shown}" if name in echoed else shown
    return echoed


@asynccontextmanager
async def start_backends(specs: Sequence[BackendSpec]) -> AsyncIterator[list[DemoBackend]]:
    """Start one server per spec (in order) and stop them all on exit, even after a failure."""
    backends = [DemoBackend(spec) for spec in specs]
    try:
        for backend in backends:
            await backend.start()
        yield backends
    finally:
        for backend in reversed(backends):
            await backend.stop()
