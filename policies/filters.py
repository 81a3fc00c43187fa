"""Gateway API filter arithmetic: header edits, path rewrites, redirect Locations. Pure.

The gateway applies `edit_headers` to the request and response headers named by a decision;
`policies.matching` uses the path and Location helpers to build `Forward` and `Redirect`.

Choices where the HTTPRoute spec is silent (gateway_api_rules.md §3):
* a modifier runs `set`, then `add`, then `remove` (the order the spec lists them); since a name may
  appear in only one action, the order matters only for invalid documents;
* `add` appends to an existing header in the comma-list form the spec suggests, joining with ","
  onto the last occurrence (`foo` + `bar` -> `foo,bar`, as the conformance suite expects); a name
  that is absent becomes a new header at the end;
* `set` keeps the position of the first occurrence and drops the others;
* a redirect keeps the request's query string (the spec says nothing; Envoy, nginx and the
  Gateway API conformance suite all keep it).
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.model import HeaderModifier, PathModifier, PathModifierKind, RequestRedirect

DEFAULT_PORTS = {"http": 80, "https": 443}


def edit_headers(
    headers: Sequence[tuple[str, str]], modifiers: Sequence[HeaderModifier]
) -> list[tuple[str, str]]:
    """Apply `modifiers` in order to `headers`; names compare case-insensitively.

    Headers the modifiers do not touch keep their position and the case of their name; a header
    that a modifier creates or sets carries the modifier's (lower-cased) name.
    """
    out = list(headers)
    for modifier in modifiers:
        for name, value in modifier.set:
            out = _set(out, name, value)
        for name, value in modifier.add:
            out = _add(out, name, value)
        if modifier.remove:
            removed = {name.lower() for name in modifier.remove}
            out = [(n, v) for n, v in out if n.lower() not in removed]
    return out


def _set(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    key = name.lower()
    out: list[tuple[str, str]] = []
    placed = False
    for n, v in headers:
        if n.lower() != key:
            out.append((n, v))
        elif not placed:
            out.append((name, value))
            placed = True
    if not placed:
        out.append((name, value))
    return out


def _add(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    key = name.lower()
    for i in range(len(headers) - 1, -1, -1):
        n, v = headers[i]
        if n.lower() == key:
            headers[i] = (n, f"{v},{value}" if v else value)
            return headers
    headers.append((name, value))
    return headers


def replace_prefix(path: str, matched_prefix: str, replacement: str) -> str:
    """ReplacePrefixMatch on whole segments (gateway_api_rules.md §4, every table row).

    `path` must already match `matched_prefix` as a PathPrefix (segment boundary checked).
    Never returns an empty path or one that starts with `//`.
    """
    rest = path[len(matched_prefix.rstrip("/")) :]
    return (replacement.rstrip("/") + rest) or "/"


def rewrite_path(path: str, modifier: PathModifier | None, matched_prefix: str) -> str:
    """The upstream (or redirect) path for `path` under `modifier`; None keeps the path."""
    if modifier is None:
        return path
    if modifier.kind is PathModifierKind.FULL:
        return modifier.value
    return replace_prefix(path, matched_prefix, modifier.value)


def redirect_location(
    redirect: RequestRedirect,
    *,
    scheme: str,
    host: str,
    listener_port: int,
    path: str,
    query: str,
    matched_prefix: str,
) -> str:
    """The absolute Location for a RequestRedirect (gateway_api_rules.md §3).

    `scheme`, `host` (port stripped) and `listener_port` describe the request as it arrived.
    Without a configured port, a configured scheme brings its well-known port and otherwise the
    listener's port is used; the port is left out when it is the scheme's default.
    """
    out_scheme = redirect.scheme or scheme
    if redirect.port is not None:
        port = redirect.port
    elif redirect.scheme is not None:
        port = DEFAULT_PORTS.get(redirect.scheme, listener_port)
    else:
        port = listener_port
    authority = redirect.hostname or host
    if DEFAULT_PORTS.get(out_scheme) != port:
        authority = f"{authority}:{port}"
    location = f"{out_scheme}://{authority}{rewrite_path(path, redirect.path, matched_prefix)}"
    return f"{location}?{query}" if query else location
