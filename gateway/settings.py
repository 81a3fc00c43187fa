"""Process settings of one gateway: listeners, timeouts, buffer limits. Pure data.

Traffic policy (routes, per-rule timeouts) comes from the routing table; these are the knobs of
the process itself, passed explicitly to `gateway.server.Gateway` (STYLE.md §3.7).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class CertificateFiles:
    """A PEM certificate chain and its private key, served to the names the certificate holds."""

    cert_file: str
    key_file: str


@dataclasses.dataclass(frozen=True, slots=True)
class Listener:
    host: str = "127.0.0.1"
    port: int = 8080  # 0 = ephemeral (tests); see Gateway.addresses
    scheme: str = "http"  # what X-Forwarded-Proto and redirects say ("https" with TLS)
    # TLS termination (gateway.tls) when not empty: the certificate is chosen by SNI, the first
    # is the default (no SNI, unknown name); files are reloaded when they change.
    certificates: tuple[CertificateFiles, ...] = ()


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
    # -- hostile input (defaults from Envoy, see docs/THREAT_MODEL.md) --------------------------
    # Request line plus header fields above this many bytes: 431 and close (Envoy
    # max_request_headers_kb 60; aiohttp 8190 per line). Bounds the parser's memory per client.
    max_header_bytes: int = 60 * 1024
    # More header fields than this: 431 and close (Envoy max_headers_count 100; aiohttp 128).
    max_headers: int = 100
    # A request body above this: 413 (up front for Content-Length; mid-stream for chunked, and
    # then the upstream never sees the request complete). 0 = no limit. Bodies stream with
    # back-pressure whatever their size, so this is a policy cap, not a memory guard.
    max_body_bytes: int = 1024 * 1024 * 1024
    # The request head must be complete this long after its first byte (or after accept for a
    # connection's first request), else 408 and close: the slowloris defence. Envoy leaves
    # request_headers_timeout off; NGINX client_header_timeout is 60 s, HAProxy's usual
    # `timeout http-request` 10 s.
    header_timeout_s: float = 30.0
    # Client connections open at once; over the cap a new connection is accepted and closed at
    # once (no bytes), so a flood cannot exhaust file descriptors. Counted in
    # `downstream_refused`.
    max_downstream_connections: int = 10_000
    # Peers (CIDRs) whose X-Forwarded-For/-Proto/-Host are believed: a front load balancer. For
    # any other peer those headers are dropped and replaced by the peer address, the listener's
    # scheme and the Host header (Envoy xff_num_trusted_hops 0).
    trusted_proxies: tuple[str, ...] = ()
    # Lingering close (nginx's): when the gateway closes a connection whose client may still be
    # sending (a 400/408/413/431 refusal, an upstream that answered before the request body
    # ended), it half-closes after the response and reads and drops what still arrives, so the
    # kernel does not answer those bytes with a reset that can destroy the response before the
    # client reads it. The connection is closed when the client closes, after
    # `lingering_time_s` in all, or after `lingering_timeout_s` without a byte (nginx 30 s, 5 s).
    lingering_time_s: float = 30.0
    lingering_timeout_s: float = 5.0
    # On drain: readiness fails at once, the listeners stay open this long (so load balancers
    # polling /readyz stop sending first), then close. Kubernetes' readiness period is 10 s.
    drain_delay_s: float = 0.0
    # Freeze the heap after each table install, so the cycle collector never rescans a table
    # (gateway.frozen_tables). Process-wide, so only the gateway commands turn it on.
    freeze_tables: bool = False
