"""Query parameters and authorization of the snapshot API (`controller.publishing`). No I/O.

Each parser answers with the value or raises the aiohttp HTTP error the handler lets through
(400 with a one-line reason, 401 for a missing or wrong token).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping

from aiohttp import web
from yarl import URL

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,252}")
CHECKSUM_RE = re.compile(r"[0-9a-f]{64}")


def authorize(request: web.Request, token: str | None) -> None:
    """401 unless the request carries `Bearer <token>` (when a token is configured)."""
    if token is None:
        return
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        raise web.HTTPUnauthorized(text="a valid bearer token is required\n")


def int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise web.HTTPBadRequest(text=f"{name} must be a non-negative integer, got {raw[:64]!r}\n")
    return int(raw)


def id_param(query: Mapping[str, str], name: str) -> str | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not ID_RE.fullmatch(raw):
        raise web.HTTPBadRequest(
            text=f"{name} must be 1-253 characters of [A-Za-z0-9._:@/-], got {raw[:64]!r}\n"
        )
    return raw


def metrics_param(request: web.Request, token: str | None) -> str | None:
    """The reported metrics URL, when acceptable (see `controller.publishing`'s docstring)."""
    raw = request.query.get("metrics")
    if not raw or len(raw) > 512:
        return None
    try:
        url = URL(raw)
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.host or url.user or url.password:
        return None
    if token is None and url.host != request.remote:
        return None
    return raw


def wait_param(query: Mapping[str, str], default_s: float, max_s: float) -> float:
    """The long-poll length asked for (`default_s` when none), capped by `max_s`."""
    raw = query.get("wait")
    if raw is None or raw == "":
        return min(default_s, max_s)
    try:
        wait_s = float(raw)
    except ValueError:
        wait_s = -1.0
    if not 0.0 <= wait_s < float("inf"):
        raise web.HTTPBadRequest(text=f"wait must be a number of seconds, got {raw[:64]!r}\n")
    return min(wait_s, max_s)


def checksum_param(query: Mapping[str, str], name: str) -> str | None:
    """A content checksum (64 lower-case hex digits), or None when absent."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not CHECKSUM_RE.fullmatch(raw):
        raise web.HTTPBadRequest(text=f"{name} must be 64 hex digits, got {raw[:72]!r}\n")
    return raw
