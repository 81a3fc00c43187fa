"""Header work for the proxy path: hop-by-hop rules, forwarding headers, serialisation. Pure.

Headers travel as flat lists of byte strings, `[name, b": ", value, b"\r\n", ...]`, in the order
and case they arrived (some legacy backends are case-sensitive; RFC 9110 §5.1 says names compare
case-insensitively, so every test here lower-cases a copy). The flat form is what the wire needs:
re-serialising a head is one `b"".join`. `pairs` and `flatten` convert for the rare edits
(Connection-named headers, header modifiers). Nothing here touches sockets or the event loop.

Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded in either direction: Connection,
Keep-Alive, Proxy-Connection, TE (except the `trailers` token), Trailer, Transfer-Encoding (the
gateway re-frames bodies itself), Upgrade (re-added for a real upgrade), Proxy-Authenticate,
Proxy-Authorization, and every header the Connection header names.
"""

from __future__ import annotations

import http
from collections.abc import Iterable, Sequence

from policies import filters
from policies.model import HeaderModifier

Header = tuple[bytes, bytes]

# How a request's body is framed, as its head says (RFC 9112 §6.3): none, Content-Length, or
# chunked. Here, not in `gateway.exchange`, because modules that exchange imports (retries,
# upstream failures) test it too.
BODY_NONE, BODY_LENGTH, BODY_CHUNKED = 0, 1, 2

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

# How the downstream protocol treats a request header, by lower-cased name. Names not listed are
# end-to-end and forwarded untouched (kind 0).
REQ_PLAIN = 0
REQ_HOST = 1  # taken out; re-emitted first (or replaced by a URLRewrite hostname)
REQ_CONNECTION = 2  # hop-by-hop; its tokens name more hop-by-hop headers
REQ_DROP = 3  # hop-by-hop, or internal (INTERNAL_PREFIXES)
REQ_TRANSFER_ENCODING = 4  # hop-by-hop; only a plain `chunked` is accepted
REQ_UPGRADE = 5  # hop-by-hop; re-added when the request is a real upgrade
REQ_TE = 6  # hop-by-hop; `TE: trailers` is kept (gRPC needs it)
REQ_FORWARDED_FOR = 7  # replaced by the client's value with the peer appended
REQ_REQUEST_ID = 8  # kept; generated when absent
REQ_CONTENT_LENGTH = 9  # kept (the parser already refused duplicates and CL+TE)
REQ_EXPECT = 10  # kept (100-continue is passed through); a local reply then closes
REQ_FORWARDED_PROTO = 11  # kept from trusted proxies only; else set from the listener
REQ_FORWARDED_HOST = 12  # kept from trusted proxies only; else set from Host

# Header name prefixes the gateway itself speaks (replies, control, release cohorts): never
# accepted from clients, so nobody can forge them towards an upstream.
INTERNAL_PREFIXES = (b"x-gateway-", b"x-fleetgate-")

REQUEST_SPECIAL: dict[bytes, int] = {
    b"host": REQ_HOST,
    b"connection": REQ_CONNECTION,
    b"keep-alive": REQ_DROP,
    b"proxy-connection": REQ_DROP,
    b"trailer": REQ_DROP,
    b"proxy-authenticate": REQ_DROP,
    b"proxy-authorization": REQ_DROP,
    b"x-forwarded-proto": REQ_FORWARDED_PROTO,
    b"x-forwarded-host": REQ_FORWARDED_HOST,
    b"transfer-encoding": REQ_TRANSFER_ENCODING,
    b"upgrade": REQ_UPGRADE,
    b"te": REQ_TE,
    b"x-forwarded-for": REQ_FORWARDED_FOR,
    b"x-request-id": REQ_REQUEST_ID,
    b"content-length": REQ_CONTENT_LENGTH,
    b"expect": REQ_EXPECT,
}

RESP_PLAIN = 0
RESP_CONNECTION = 1  # hop-by-hop; its tokens name more hop-by-hop headers
RESP_DROP = 2  # hop-by-hop
RESP_CONTENT_LENGTH = 3  # kept; the body is passed through as framed
RESP_TRANSFER_ENCODING = 4  # hop-by-hop; the gateway re-chunks for the client
RESP_UPGRADE = 5  # hop-by-hop; a 101 re-adds the upgraded protocol explicitly
RESP_HEALTH_FAIL = 6  # IMMEDIATE_FAIL_HEADER: a signal to the gateway, removed

# An upstream that answers with this header (any value) asks to be taken out of rotation at
# once (Envoy's x-envoy-immediate-health-check-fail): gateway.health.HealthMonitor.immediate_fail.
IMMEDIATE_FAIL_HEADER = b"x-fleetgate-immediate-health-check-fail"

RESPONSE_SPECIAL: dict[bytes, int] = {
    b"connection": RESP_CONNECTION,
    b"keep-alive": RESP_DROP,
    b"proxy-connection": RESP_DROP,
    b"te": RESP_DROP,
    b"trailer": RESP_DROP,
    b"transfer-encoding": RESP_TRANSFER_ENCODING,
    b"upgrade": RESP_UPGRADE,
    b"proxy-authenticate": RESP_DROP,
    b"proxy-authorization": RESP_DROP,
    b"content-length": RESP_CONTENT_LENGTH,
    IMMEDIATE_FAIL_HEADER: RESP_HEALTH_FAIL,
}

# Header names as clients and servers usually spell them, mapped to their kind, so the common
# case is one dict probe on the raw name; a miss falls back to lower-casing and the tables above.
_COMMON = (
    b"accept",
    b"accept-encoding",
    b"accept-language",
    b"accept-ranges",
    b"age",
    b"authorization",
    b"cache-control",
    b"content-encoding",
    b"content-type",
    b"cookie",
    b"date",
    b"etag",
    b"expires",
    b"last-modified",
    b"location",
    b"origin",
    b"referer",
    b"server",
    b"set-cookie",
    b"user-agent",
    b"vary",
)


def _spellings(names: dict[bytes, int]) -> dict[bytes, int]:
    table = dict.fromkeys(_COMMON, 0) | names
    title = {b"-".join(p.capitalize() for p in n.split(b"-")): k for n, k in table.items()}
    return table | title


REQUEST_KINDS = _spellings(REQUEST_SPECIAL)
RESPONSE_KINDS = _spellings(RESPONSE_SPECIAL)

# Connection tokens that are hop-by-hop anyway or are options, not header names.
_PLAIN_TOKENS = HOP_BY_HOP | {b"close"}
# Connection values that name no extra header: the common case skips token parsing.
PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"upgrade"})

PHRASES: dict[int, bytes] = {s.value: s.phrase.encode() for s in http.HTTPStatus}


def connection_tokens(values: Iterable[bytes]) -> set[bytes]:
    """Lower-cased tokens of one or more Connection header values (RFC 9110 §7.6.1)."""
    tokens: set[bytes] = set()
    for value in values:
        tokens.update(t.strip().lower() for t in value.split(b","))
    tokens.discard(b"")
    return tokens


def named_by_connection(tokens: set[bytes]) -> set[bytes]:
    """The header names among `tokens` that must be dropped besides the usual hop-by-hop set."""
    return tokens - _PLAIN_TOKENS


def pairs(lines: Sequence[bytes]) -> list[Header]:
    """`(name, value)` pairs of a flat header list."""
    return list(zip(lines[0::4], lines[2::4], strict=True))


def flatten(headers: Iterable[Header]) -> list[bytes]:
    lines: list[bytes] = []
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    return lines


def drop_named(lines: list[bytes], names: set[bytes]) -> list[bytes]:
    """`lines` without the headers whose (case-insensitive) name is in `names`."""
    return flatten((n, v) for n, v in pairs(lines) if n.lower() not in names)


def apply_modifiers(lines: list[bytes], modifiers: Sequence[HeaderModifier]) -> list[bytes]:
    """Gateway API RequestHeaderModifier/ResponseHeaderModifier on a flat byte header list
    (latin-1 round trip, so any byte survives)."""
    text = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in pairs(lines)]
    edited = filters.edit_headers(text, modifiers)
    return flatten((n.encode("latin-1"), v.encode("latin-1")) for n, v in edited)


def status_line(status: int, phrase: bytes) -> bytes:
    """`HTTP/1.1 <status> <phrase>CRLF`, cached for the phrases upstreams actually send."""
    line = _STATUS_LINES.get((status, phrase))
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
        if len(_STATUS_LINES) < 512:
            _STATUS_LINES[(status, phrase)] = line
    return line


_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def host_of(value: bytes) -> str:
    """The routing host of a Host header: lower-cased, port stripped, IPv6 brackets kept."""
    host = value.decode("latin-1").strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    colon = host.find(":")
    return host if colon < 0 else host[:colon]


def local_reply(
    status: int,
    reason: str,
    *,
    close: bool,
    request_id: bytes | None = None,
    extra: Sequence[bytes] = (),
    head: bool = False,
) -> bytes:
    """A complete local reply: short text body naming the reason, `x-gateway-reason` header.

    `head` (a reply to HEAD) keeps the Content-Length but sends no body (RFC 9110 §9.3.2).
    """
    body = reason.encode() + b"\n"
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, PHRASES.get(status, b"Unknown"))]
    parts += extra
    parts.append(b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body))
    parts.append(b"x-gateway-reason: " + reason.encode() + b"\r\n")
    if request_id is not None:
        parts.append(b"x-request-id: " + request_id + b"\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head:
        parts.append(body)
    return b"".join(parts)


def redirect_reply(
    status: int, location: bytes, *, close: bool, extra: Sequence[bytes] = ()
) -> bytes:
    """A RequestRedirect answer: status, Location, no body. `extra` is a flat header list."""
    parts = [b"HTTP/1.1 %d %s\r\nlocation: " % (status, PHRASES.get(status, b"Redirect"))]
    parts += (location, b"\r\n")
    parts += extra
    parts.append(b"content-length: 0\r\n")
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
