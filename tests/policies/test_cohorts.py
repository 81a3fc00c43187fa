"""Sticky cohorts: stable hashing, no flip-back while the weight grows, and a fair split."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
from hypothesis import given, settings

from policies import cohorts

SALT = "shop/web"


def test_points_are_the_same_in_every_process() -> None:
    # Golden values: a change here would scatter every sticky user of a running release.
    assert cohorts.point("alice", salt=SALT) == 25.158850852268742
    assert cohorts.roll_for("alice", salt=SALT) == 0.25158850852268742
    assert cohorts.in_canary("alice", 26, salt=SALT)
    assert not cohorts.in_canary("alice", 25, salt=SALT)


def test_the_salt_chooses_an_independent_cohort() -> None:
    keys = [f"user-{i}" for i in range(4000)]
    first = {k for k in keys if cohorts.in_canary(k, 50, salt="shop/web")}
    second = {k for k in keys if cohorts.in_canary(k, 50, salt="shop/api")}
    # Independent halves overlap on about a quarter of the users, not on all of them.
    assert 0.2 < len(first & second) / len(keys) < 0.3


@given(key=st.text(max_size=64), salt=st.text(max_size=32))
def test_point_and_roll_stay_in_range(key: str, salt: str) -> None:
    assert 0.0 <= cohorts.point(key, salt=salt) < 100.0
    assert 0.0 <= cohorts.roll_for(key, salt=salt) < 1.0


@given(
    key=st.text(max_size=64),
    weights=st.lists(st.integers(0, 100), min_size=2, max_size=12).map(sorted),
)
def test_a_user_flips_at_most_once_and_never_back_while_the_weight_grows(
    key: str, weights: list[int]
) -> None:
    sides = [cohorts.in_canary(key, w, salt=SALT) for w in weights]
    flips = sum(1 for a, b in itertools.pairwise(sides) if a != b)
    assert flips <= 1
    assert sides == sorted(sides)  # False (stable) ... then True (canary), never back


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32), weight=st.integers(0, 100))
def test_the_canary_share_matches_the_weight(seed: int, weight: int) -> None:
    keys = [f"{seed}:{i}" for i in range(4000)]
    share = sum(cohorts.in_canary(k, weight, salt=SALT) for k in keys) / len(keys) * 100
    # Binomial spread at n=4000 is at most 0.8 percentage points; allow four of them.
    assert abs(share - weight) <= 3.2
