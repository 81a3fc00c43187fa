"""The gateway process's data plane: listeners, the shared context, the tick, drain and close.

I/O: listening sockets (loop.create_server, TLS from gateway.tls) and, through the pools,
upstream connections.
`Gateway` is what the composition root (fleetgate run, a test) holds: `start()`, `swap(table)`
(also `apply`, the `gateway.sink.TableSink` capability), `drain()`, `close()`. Seams for the
next layers are constructor arguments: an `EndpointPicker` or a `HealthView` (health checks,
outlier ejection), an `ExchangeObserver` (access log, metrics), and `counters` (plain integers
the admin port reads).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping
from typing import Any

from gateway.context import ExchangeObserver, ProxyContext
from gateway.counters import Counters
from gateway.deadlines import check_downstream
from gateway.downstream import DownstreamProtocol
from gateway.frozen_tables import FrozenTables
from gateway.health import HealthMonitor
from gateway.limits import Limits
from gateway.listeners import BoundListener
from gateway.mirroring import Mirrors
from gateway.routing import AllHealthy, BalancingPicker, EndpointPicker, HealthView, Router
from gateway.settings import GatewaySettings
from gateway.table import TableHolder
from gateway.tls import ServerTLS
from gateway.upstreams import Pools
from policies.limits import Thresholds
from policies.model import RateLimit
from policies.table import RoutingTable

_SWEEP_EVERY_S = 1.0  # idle upstream connections are looked at this often


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        table: RoutingTable,
        *,
        picker: EndpointPicker | None = None,
        health: HealthView | None = None,
        observer: ExchangeObserver | None = None,
        counters: Counters | None = None,
        breaker: Thresholds | None = None,
        namespace_quotas: Mapping[str, RateLimit] | None = None,
        zone: str | None = None,
    ) -> None:
        self.settings = settings
        self.holder = TableHolder(table)
        self.counters = counters if counters is not None else Counters()
        self._tasks: asyncio.TaskGroup | None = None
        self._connects: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.Server] = []
        self._listeners: list[BoundListener] = []
        self._tls: list[ServerTLS] = []  # one per TLS listener; files polled on the sweep
        self._timer: asyncio.TimerHandle | None = None
        self._next_sweep = 0.0
        self.draining = False  # drain() has begun: readiness fails (listeners may stay a while)
        self.frozen = FrozenTables() if settings.freeze_tables else None
        # Active checks and outlier ejection, unless the caller brings its own health view.
        monitor = HealthMonitor(self.counters) if health is None and picker is None else None
        if monitor is not None:
            monitor.sync(table)
            health = monitor
        elif isinstance(health, HealthMonitor):
            monitor = health
        self.health = monitor
        balancer = BalancingPicker(health or AllHealthy(), zone=zone) if picker is None else None
        router = Router(self.holder, picker or balancer)  # type: ignore[arg-type]
        self.ctx = ProxyContext(settings, router, self.counters, now=0.0, observer=observer)
        self.ctx.pools = self.pools = Pools(self.ctx, self._spawn)
        self.pools.follow(table)
        self.ctx.mirrors = Mirrors(self.ctx)
        self.ctx.limits = Limits(
            self.counters, thresholds=breaker or Thresholds(), namespace_quotas=namespace_quotas
        )
        self.ctx.health = monitor
        if balancer is not None:
            balancer.active = self.pools.active  # least request reads in-flight counts

    @property
    def table(self) -> RoutingTable:
        return self.holder.current

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound `(host, port)` of each listener (ports chosen by the OS when 0)."""
        return [(listener.host, listener.port) for listener in self._listeners]

    async def start(self) -> None:
        """Bind every listener and start the tick. The caller's task owns the task group, so
        `close()` must be awaited before that task ends."""
        loop = asyncio.get_running_loop()
        self.ctx.now = loop.time()
        # Upstream connects run in this group. Entered by hand because the gateway's lifetime
        # spans start() and close(); the connect tasks never raise (each failure becomes a
        # local reply), so the group never cancels its owner.
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        if self.health is not None:
            await self.health.start()
        for configured in self.settings.listeners:
            tls = ServerTLS(configured.certificates) if configured.certificates else None
            scheme = "https" if tls is not None else configured.scheme
            bound = BoundListener(configured.host, configured.port, scheme)
            server = await loop.create_server(
                lambda bound=bound: DownstreamProtocol(self.ctx, bound),
                configured.host,
                configured.port,
                reuse_port=self.settings.reuse_port or None,
                backlog=self.settings.backlog,
                ssl=None if tls is None else tls.context,
                # a peer that never finishes its handshake is a slow head too
                ssl_handshake_timeout=None if tls is None else self.settings.header_timeout_s,
            )
            if tls is not None:
                self._tls.append(tls)
            bound.port = server.sockets[0].getsockname()[1]
            self._servers.append(server)
            self._listeners.append(bound)
        self._timer = loop.call_later(self.settings.tick_s, self._tick)
        if self.frozen is not None:
            self.frozen.installed()  # the table given at construction

    def swap(self, table: RoutingTable) -> RoutingTable:
        """Install a newer table whole; requests in flight keep the one they started with.
        Raises `StaleTableError` for a version that is not newer (the live table stays)."""
        previous = self.holder.swap(table)
        if self.health is not None:
            self.health.sync(table)  # new endpoints probed now; staying ones keep their state
        self.ctx.router.picker.forget()
        self.pools.follow(table)
        if self.frozen is not None:
            self.frozen.installed()
        return previous

    def apply(self, table: RoutingTable) -> None:
        """`gateway.sink.TableSink`: the controller's publisher hands tables here."""
        self.swap(table)

    async def drain(self, timeout_s: float) -> bool:
        """Fail readiness at once (`draining`), keep serving as usual for
        `settings.drain_delay_s` (load balancers polling `/readyz` stop sending meanwhile),
        then stop accepting: idle keep-alive connections close, responses say `Connection:
        close`, and in-flight requests get at most `timeout_s` more.

        Returns True when every client connection closed in time.
        """
        self.draining = True
        if self.settings.drain_delay_s > 0:
            await asyncio.sleep(self.settings.drain_delay_s)
        self.ctx.draining = True
        for server in self._servers:
            server.close()
        self._check(asyncio.get_running_loop().time())  # closes idle connections at once
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # arrives as the awaited event fires, and drain must stay cancellable.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.ctx.all_closed.wait()
        return not self.ctx.downstreams

    async def close(self) -> None:
        """Close everything now: listeners, client connections, pools, connects in flight."""
        for server in self._servers:
            server.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for down in list(self.ctx.downstreams):
            down.close()
        self.ctx.mirrors.close()
        self.pools.close()
        if self.health is not None:
            await self.health.close()
        for task in list(self._connects):
            task.cancel()
        if self._tasks is not None:
            tasks, self._tasks = self._tasks, None
            await tasks.__aexit__(None, None, None)
        for server in self._servers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.tick_s * 10):
                    await server.wait_closed()
        self._servers.clear()
        if self.frozen is not None:
            self.frozen.release()
        # Transports finish closing on the next loop iterations (connection_lost callbacks).
        await asyncio.sleep(0)

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._tasks is None:
            coro.close()
            raise RuntimeError("the gateway is not running")
        task = self._tasks.create_task(coro)
        self._connects.add(task)
        task.add_done_callback(self._connects.discard)

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._check(loop.time())
        if self._timer is not None:
            self._timer = loop.call_later(self.settings.tick_s, self._tick)

    def _check(self, now: float) -> None:
        self.ctx.now = now
        for down in list(self.ctx.downstreams):
            check_downstream(down, now)
        self.ctx.mirrors.check(now)
        if self.health is not None:
            self.health.sweep(now)
        if now >= self._next_sweep:
            self._next_sweep = now + _SWEEP_EVERY_S
            self.pools.sweep(now)
            for tls in self._tls:
                tls.refresh()  # certificate files changed on disk: new handshakes get them
