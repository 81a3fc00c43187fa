"""Process settings of one gateway: listeners, timeouts, buffer limits. Pure data.

Traffic policy (routes, per-rule timeouts) comes from the routing table; these are the knobs of
the process itself, passed explicitly to `gateway.server.Gateway` (STYLE.md §3.7).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class Listener:
    host: str = "127.0.0.1"
    port: int = 8080  # 0 = ephemeral (tests); see Gateway.addresses
    scheme: str = "http"  # what X-Forwarded-Proto and redirects say; TLS comes with resilience


@dataclasses.dataclass(frozen=True, slots=True)
class GatewaySettings:
    listeners: tuple[Listener, ...] = (Listener(),)
    reuse_port: bool = False  # SO_REUSEPORT, for N worker processes on one port
    backlog: int = 1024
    # Idle upstream keep-alive connections are closed after this long. It must stay below every
    # upstream's own idle timeout (uvicorn 5 s, Node.js 5 s, nginx 75 s, aiohttp 75 s), or the
    # upstream closes a connection just as we reuse it (the stale keep-alive race).
    upstream_idle_s: float = 4.0
    max_idle_per_endpoint: int = 512  # idle connections kept per endpoint; extras are closed
    # Idle client keep-alive connections: above the usual front load balancer's (GCP 600 s,
    # AWS ALB 60 s by default), so the load balancer, not us, closes idle connections.
    downstream_idle_s: float = 650.0
    # Transport write buffer watermarks, both sides. Above `high` the other side stops reading
    # until the buffer drains below `low`: per-connection memory stays near 2 x high per stream.
    write_high_bytes: int = 64 * 1024
    write_low_bytes: int = 16 * 1024
    # Timers (deadlines, idle connections) are checked by one periodic tick, not one timer per
    # request; a timeout fires up to one tick late.
    tick_s: float = 0.1
    # Mirrors: bodiless requests are always eligible; a request body is copied only up to this
    # size (larger requests are not mirrored). At most `mirror_max_inflight` copies at a time.
    mirror_max_body_bytes: int = 64 * 1024
    mirror_max_inflight: int = 256
    mirror_timeout_s: float = 15.0
