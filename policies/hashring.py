"""Consistent hashing for session affinity: a Ketama-style ring and stable key hashes. Pure.

Every gateway replica must send the same affinity key to the same endpoint, so nothing here uses
Python's per-process `hash()`: ring points come from BLAKE2b over the member ids (paid once, when
a ring is built) and request keys from CRC-32 followed by the SplitMix64 finaliser (a few hundred
nanoseconds per request, and well spread even for keys that differ in one character).

A ring places `replicas` points per member, independent of the other members. Hence the two
properties affinity relies on: removing a member moves only the keys that were on it, and adding
one moves only the keys that now land on it (about 1/(N+1) of them). Unhealthy members are
skipped at lookup time (`usable`), which maps a key exactly as a ring rebuilt without them
would, so health flapping never reshuffles the keys of the members that stay up.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import zlib
from collections.abc import Sequence

_MASK64 = (1 << 64) - 1
_POINTS_PER_DIGEST = 4  # one 32-byte BLAKE2b digest gives four 64-bit points
DEFAULT_REPLICAS = 160  # Ketama's count: the arc share of each member is within ~8 % of 1/N


def _mix64(value: int) -> int:
    """SplitMix64's finaliser: a bijection on 64-bit integers with full avalanche."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def hash_key(key: str | int) -> int:
    """A 64-bit hash of an affinity key (cookie value, header value, client address as int).

    Stable across processes and releases: changing it would move every client.
    """
    if isinstance(key, int):
        return _mix64((key ^ (key >> 64)) & _MASK64)
    data = key.encode()
    return _mix64(zlib.crc32(data) | (len(data) << 32))


def key_roll(key: str | int) -> float:
    """Map a key to a stable roll in [0, 1).

    Used as the `roll` of a weighted pick, it keeps a client on the same choice while weights
    change: moving weight from one entry to its neighbour only moves the clients whose roll falls
    in the slice that changed hands.
    """
    return hash_key(key) / 18446744073709551616.0  # 2**64


@dataclasses.dataclass(frozen=True, slots=True)
class HashRing:
    """Points on a 64-bit circle, each owned by a member index; built once per member set."""

    members: tuple[str, ...]  # ids in the caller's order; lookups return indexes into this
    points: tuple[int, ...]  # sorted positions
    owners: tuple[int, ...]  # parallel to points: index into members

    @classmethod
    def build(cls, members: Sequence[str], *, replicas: int = DEFAULT_REPLICAS) -> HashRing:
        """A ring over `members` (e.g. `Endpoint.id`s of one cluster target, in table order)."""
        digests = -(-replicas // _POINTS_PER_DIGEST)
        placed: list[tuple[int, str, int]] = []
        for index, member in enumerate(members):
            count = 0
            for round_ in range(digests):
                digest = hashlib.blake2b(f"{member}-{round_}".encode(), digest_size=32).digest()
                for offset in range(0, 32, 8):
                    if count == replicas:
                        break
                    placed.append(
                        (int.from_bytes(digest[offset : offset + 8], "big"), member, index)
                    )
                    count += 1
        # Ties (vanishingly rare in 64 bits) break on the id, so member order never matters.
        placed.sort()
        return cls(
            members=tuple(members),
            points=tuple(point for point, _, _ in placed),
            owners=tuple(index for _, _, index in placed),
        )

    def lookup(self, key: str | int, usable: Sequence[bool] | None = None) -> int | None:
        """The member index owning `key`: the first point clockwise from its hash.

        With `usable` (parallel to `members`), members marked False are skipped, exactly as if
        the ring had been built without them. None when no member is usable (or the ring is
        empty).
        """
        points = self.points
        if not points:
            return None
        size = len(points)
        start = bisect.bisect_left(points, hash_key(key))
        if usable is None:
            return self.owners[start % size]
        owners = self.owners
        for step in range(size):
            owner = owners[(start + step) % size]
            if usable[owner]:
                return owner
        return None
