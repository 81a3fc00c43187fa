"""What every connection of one gateway shares: settings, router, pools, counters, the clock.

No I/O of its own. One `ProxyContext` per gateway process (per worker); the protocols reach
everything through it, so a test can build a gateway without globals.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from typing import TYPE_CHECKING, Protocol

from gateway.counters import Counters
from gateway.retrying import RetryBudget
from gateway.routing import Router
from gateway.settings import GatewaySettings

if TYPE_CHECKING:
    from gateway.downstream import DownstreamProtocol
    from gateway.exchange import Exchange
    from gateway.health import HealthMonitor
    from gateway.limits import Limits
    from gateway.mirroring import Mirrors
    from gateway.upstreams import Pools


class ExchangeObserver(Protocol):
    """Told about every finished exchange (access log, latency histograms, outlier detection).

    Called on the event loop right after the response (or local reply) is handed to the client's
    transport; it must not block. Read what it needs from the exchange's public attributes.
    """

    def exchange_done(self, exchange: Exchange) -> None: ...


class ProxyContext:
    __slots__ = (
        "_ids",
        "all_closed",
        "budget",
        "counters",
        "downstreams",
        "draining",
        "health",
        "limits",
        "mirrors",
        "now",
        "observer",
        "pools",
        "router",
        "settings",
    )

    def __init__(
        self,
        settings: GatewaySettings,
        router: Router,
        counters: Counters,
        *,
        now: float,
        observer: ExchangeObserver | None = None,
    ) -> None:
        self.settings = settings
        self.router = router
        self.counters = counters
        self.observer = observer
        self.now = now  # coarse loop time, refreshed every tick (and when a connection opens)
        self.draining = False  # responses say `Connection: close`; idle connections close
        self.downstreams: set[DownstreamProtocol] = set()
        self.all_closed = asyncio.Event()  # set whenever the last client connection closes
        self.all_closed.set()
        # Filled in by the gateway once the task group exists:
        self.pools: Pools
        self.mirrors: Mirrors
        self.limits: Limits  # circuit breakers and tenant quotas
        self.health: HealthMonitor | None = None  # active checks and outlier ejection
        self.budget = RetryBudget()
        # Request ids: a random per-process prefix and a counter. Unique and cheap (no uuid4
        # per request); they are identifiers, not secrets.
        template = secrets.token_hex(8).encode() + b"-%x"
        self._ids = map(template.__mod__, itertools.count(1))

    def new_request_id(self) -> bytes:
        return next(self._ids)
