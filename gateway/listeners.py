"""What a client connection learns when it is accepted: which listener took it (`BoundListener`)
and whether its peer is a trusted proxy (`trusted_peer`). No I/O.

Its own module because it is accept-time code, not request code: a `BoundListener` is built
once per bound socket by `gateway.server`, and `trusted_peer` runs once per connection in
`DownstreamProtocol.connection_made`, whose result (`trusted`) is all the per-header code reads.
Keeping the CIDR parsing and its cache here leaves `gateway.downstream` to the parser callbacks.
"""

from __future__ import annotations

import functools
import ipaddress


class BoundListener:
    """What a connection needs to know about the listener that accepted it."""

    __slots__ = ("forwarded", "host", "port", "scheme")

    def __init__(self, host: str, port: int, scheme: str) -> None:
        self.host = host
        self.port = port  # the bound port (known after binding when configured as 0)
        self.scheme = scheme
        self.forwarded = b"\r\nX-Forwarded-Proto: " + scheme.encode() + b"\r\n"


@functools.lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def trusted_peer(peer: str, cidrs: tuple[str, ...]) -> bool:
    """Whether `peer` (an IP address) lies in one of `cidrs` (GatewaySettings.trusted_proxies)."""
    if not cidrs:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in net for net in _networks(cidrs))
