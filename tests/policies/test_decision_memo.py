"""The table's memo of path-only decisions: the same answers as without it, and bounded."""

from __future__ import annotations

from policies import matching
from policies.matching import Forward
from tests.policies.routing_builders import compile_routes, head, prefix, route, rule


def test_memoized_decisions_equal_fresh_ones_and_the_memo_stays_bounded() -> None:
    table = compile_routes(route("web", ["shop.example.com"], rule(prefix("/"))))
    paths = [f"/item/{i}" for i in range(matching.DECISION_MEMO_SIZE + 10)]
    first = [matching.decide(table, head(p), roll=0.5) for p in paths]

    assert len(table.decisions) <= matching.DECISION_MEMO_SIZE  # emptied when full, never grown
    again = [matching.decide(table, head(p), roll=0.9) for p in paths[-5:]]
    assert again == first[-5:]
    assert all(isinstance(d, Forward) and d.path == p for d, p in zip(first, paths, strict=True))
