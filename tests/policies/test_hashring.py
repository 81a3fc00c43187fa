"""Consistent hashing: stable across processes, minimal disruption when members change."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from policies.hashring import HashRing, hash_key, key_roll

PROPERTY = settings(deadline=None, database=None, max_examples=40)
KEYS = [f"session-{n}" for n in range(3000)]


def owners(ring: HashRing, keys: list[str] = KEYS) -> dict[str, str]:
    result = {}
    for key in keys:
        index = ring.lookup(key)
        assert index is not None
        result[key] = ring.members[index]
    return result


def test_key_hashes_are_pinned() -> None:
    # Every gateway replica and every release must agree, or affinity breaks fleet-wide.
    assert hash_key("abc") == 0xDDE657116D6F9E2A
    assert hash_key(42) == 0xA759EA27D4727622
    assert 0.0 <= key_roll("abc") < 1.0
    assert key_roll("abc") == hash_key("abc") / 2**64


def test_int_keys_fold_wide_values() -> None:
    ipv6 = 0x20010DB8000000000000000000000001
    assert hash_key(ipv6) != hash_key(ipv6 & (2**64 - 1))
    assert len({hash_key(n) for n in range(1000)}) == 1000


def test_member_order_does_not_matter() -> None:
    ids = [f"127.0.1.{n}:8080@east" for n in range(1, 6)]
    forward, backward = HashRing.build(ids), HashRing.build(ids[::-1])
    assert owners(forward) == owners(backward)
    assert len(forward.points) == 5 * 160


def test_replicas_need_not_be_a_multiple_of_four() -> None:
    assert len(HashRing.build(["a", "b"], replicas=7).points) == 14


def test_keys_spread_evenly() -> None:
    ring = HashRing.build([f"127.0.1.{n}:8080@east" for n in range(1, 5)])
    counts = Counter(owners(ring).values())
    assert all(600 < count < 900 for count in counts.values())


def test_empty_ring_and_nothing_usable() -> None:
    assert HashRing.build([]).lookup("k") is None
    assert HashRing.build(["a", "b"]).lookup("k", usable=[False, False]) is None


def test_int_and_str_keys_both_work() -> None:
    ring = HashRing.build(["a", "b", "c"])
    assert ring.lookup(3232235777) in (0, 1, 2)


members = st.lists(
    st.text("abcdefghij0123456789.:@", min_size=1, max_size=12), min_size=1, max_size=12
).map(lambda ids: sorted(set(ids)))


@PROPERTY
@given(members, st.text("xyz0123456789", min_size=1, max_size=8))
def test_adding_a_member_moves_only_its_share(ids: list[str], new: str) -> None:
    new = "new-" + new
    before = owners(HashRing.build(ids))
    after = owners(HashRing.build([*ids, new]))
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == new for key in moved)  # keys only ever move to the newcomer
    expected = len(KEYS) / (len(ids) + 1)
    assert 0.4 * expected < len(moved) < 2.0 * expected


@PROPERTY
@given(members.filter(lambda ids: len(ids) >= 2), st.data())
def test_removing_a_member_moves_only_its_keys(ids: list[str], data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(ids))
    before = owners(HashRing.build(ids))
    after = owners(HashRing.build([i for i in ids if i != gone]))
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == gone}


@PROPERTY
@given(members.filter(lambda ids: len(ids) >= 2), st.data())
def test_skipping_unusable_members_equals_rebuilding_without_them(
    ids: list[str], data: st.DataObject
) -> None:
    usable = data.draw(st.lists(st.booleans(), min_size=len(ids), max_size=len(ids)).filter(any))
    ring = HashRing.build(ids)
    smaller = HashRing.build([i for i, ok in zip(ids, usable, strict=True) if ok])
    for key in KEYS[:300]:
        skipped = ring.lookup(key, usable)
        rebuilt = smaller.lookup(key)
        assert skipped is not None
        assert rebuilt is not None
        assert ring.members[skipped] == smaller.members[rebuilt]
