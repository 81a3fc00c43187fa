"""Sticky cohorts: a user key → a fixed point in [0, 100) that decides canary or stable. Pure.

With stickiness on, a user goes to canary iff their point is below the canary weight. Releases
only raise the weight while they progress, so a canary user stays canary and a stable user
flips at most once, when the weight passes their point — never back. Because the points are
uniform, the canary share equals the weight (Flagger's `sessionAffinity` gives stickiness but not
a fair split; Argo Rollouts has no cohort notion at all).

The hash is BLAKE2b over the salt and the key: identical in every gateway process and replica
(Python's `hash()` is salted per process and would scatter users on every restart). The salt is
the route id, so two releases on different routes choose independent cohorts instead of always
sending the same unlucky users first.

How the gateway uses it: the overlay (`policies.overlays`) puts the canary backendRef right before
the stable one and gives the rule a session-affinity key. For such a rule the gateway passes
`roll=roll_for(key, salt=route_id)` to the weighted pick instead of a random roll: with the
canary first, `roll·100 < weight` is exactly "point below the weight". Where the key is a cookie
the user does not have yet, the gateway mints a random id and sets the cookie.
"""

from __future__ import annotations

import hashlib
import math

DEFAULT_COOKIE = "fleetgate-cohort"  # used when the target rule has no session affinity key

_BELOW_100 = math.nextafter(100.0, 0.0)


def roll_for(key: str, *, salt: str) -> float:
    """The deterministic `roll` in [0, 1) that replaces the random one for a sticky user."""
    digest = hashlib.blake2b(
        salt.encode() + b"\x00" + key.encode(), digest_size=8, person=b"fleetgate-cohort"
    ).digest()
    # 53 bits: every value is an exact float and the largest stays below 1.0.
    return (int.from_bytes(digest, "big") >> 11) / float(1 << 53)


def point(key: str, *, salt: str) -> float:
    """The user's fixed point in [0, 100)."""
    return min(roll_for(key, salt=salt) * 100.0, _BELOW_100)


def in_canary(key: str, canary_weight: float, *, salt: str) -> bool:
    """Whether this user belongs to canary at this weight (0..100)."""
    return point(key, salt=salt) < canary_weight
