"""Session affinity and sticky release cohorts on the proxy path. No I/O.

A rule with `TrafficSettings.affinity` (set by the policy's `sessionAffinity`, or by a sticky
release overlay, which uses the `fleetgate-cohort` cookie) keeps a client where it was:

* The key is the named header's value, or the named cookie's. A client without the cookie gets
  a random id, used at once and set on the response (`Set-Cookie`, `Path=/`, `HttpOnly`,
  `Max-Age` when the affinity has a TTL), so its next request carries it.
* The backendRef is picked with `policies.cohorts.roll_for(key, salt=route id)` instead of a
  random roll: with a release's canary first, that is "the user's point is below the canary
  weight", so raising the weight moves only the users it must (docs/releases.md).
* The cluster within the backend is picked with `policies.hashring.key_roll(key)`, and the
  endpoint on a consistent-hash ring over the cluster's endpoints (`gateway.routing`): a client
  keeps its cluster while weights change unless its roll leaves its cluster's slice, and keeps
  its endpoint unless that endpoint goes away or out of rotation.
A header-keyed client without the header has no key: it is balanced like any other request.
"""

from __future__ import annotations

import secrets
from http.cookies import CookieError, SimpleCookie

from policies import cohorts, matching
from policies.matching import Forward, RequestHead
from policies.model import HeaderModifier, SessionAffinity


def cookie_value(head: RequestHead, name: str) -> str | None:
    """The value of cookie `name` in the request's Cookie header(s), if any."""
    raw = head.headers.get("cookie")
    if not raw or name not in raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    for part in raw.replace(",", ";").split(";"):
        try:
            jar.load(part.strip())
        except CookieError:
            continue  # one malformed pair must not hide the others
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def set_cookie(affinity: SessionAffinity, value: str) -> HeaderModifier:
    """The response header that gives a new client its key."""
    attributes = "; Path=/; HttpOnly"
    if affinity.ttl_s > 0:
        attributes += f"; Max-Age={int(affinity.ttl_s)}"
    return HeaderModifier(add=(("set-cookie", f"{affinity.name}={value}{attributes}"),))


def stick(fwd: Forward, head: RequestHead) -> tuple[Forward, str | None, HeaderModifier | None]:
    """The sticky decision for a forward whose rule has affinity: `(forward, key, set-cookie)`.

    `key` is None when the client has none (header affinity without the header); the
    set-cookie modifier is not None when a key was minted for this client.
    """
    affinity = fwd.settings.affinity
    assert affinity is not None
    minted: HeaderModifier | None = None
    if affinity.kind == "Header":
        key = head.headers.get(affinity.name)
        if not key:
            return fwd, None, None
    else:
        found = cookie_value(head, affinity.name)
        if found:
            key = found
        else:
            key = secrets.token_hex(16)
            minted = set_cookie(affinity, key)
    rule = fwd.split
    if rule is not None:
        again = matching.act(rule, head, roll=cohorts.roll_for(key, salt=rule.route_id))
        if isinstance(again, Forward):
            fwd = again
    return fwd, key, minted
