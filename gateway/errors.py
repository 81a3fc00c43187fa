"""Data-plane errors and the stable reason codes of local replies. Pure.

Every failure on the proxy path becomes exactly one local reply `(status, reason)`: the reason is
a stable snake_case code shared by the `x-gateway-reason` header, the counters and the logs
(STYLE.md §3.5). Most failures never raise: the protocols reply with a code from `REASONS`
directly. Exceptions exist where a caller branches on them (connect failures, stale tables).
"""

from __future__ import annotations

from collections.abc import Mapping

# Every reason code a local reply can carry, with its status. Decisions from `policies.matching`
# (`Reject.reason`) use the same vocabulary; an unknown code from there is replied as given.
REASONS: Mapping[str, int] = {
    "bad_request": 400,  # malformed request, smuggling attempt (CL+TE), bad Host
    "request_timeout": 408,  # the request head did not arrive within the header timeout
    "body_too_large": 413,  # request body above GatewaySettings.max_body_bytes
    "headers_too_large": 431,  # above max_header_bytes or max_headers
    "no_route": 404,  # no rule matches host + path (+ headers, query, method)
    "rate_limited": 429,  # a tenant quota (rate or concurrency) is exhausted; with Retry-After
    "invalid_backend": 500,  # the matched rule points at a backendRef that does not resolve
    "no_backend": 500,  # the matched rule has no backendRefs with weight
    "internal_error": 500,  # a bug in the gateway (logged with its traceback)
    "upstream_reset": 502,  # the upstream closed or reset before a complete response
    "upstream_protocol_error": 502,  # the upstream sent something that is not HTTP/1.1
    "upstream_status": 502,  # an error answer dropped for a retry that could not start (its status)
    "no_healthy_backend": 503,  # no endpoint to send to in any tier
    "upstream_connect_failed": 503,  # connect refused, unreachable or timed out
    "circuit_open": 503,  # the backend's circuit breaker (max requests in flight) is open
    "upstream_timeout": 504,  # no complete response within the rule's timeout
}


class GatewayError(Exception):
    """Base of the data plane's errors: carries the local reply it stands for."""

    status: int = 502
    reason: str = "gateway_error"


class UpstreamConnectError(GatewayError):
    status, reason = 503, "upstream_connect_failed"

    def __init__(self, cluster: str, address: str, cause: BaseException) -> None:
        detail = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        super().__init__(f"cannot connect to {address} in cluster {cluster!r}: {detail}")
        self.cluster, self.address = cluster, address


class StaleTableError(GatewayError):
    """A table that is not newer than the live one was offered to the gateway."""

    status, reason = 409, "stale_table"
