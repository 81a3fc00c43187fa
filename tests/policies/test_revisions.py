"""Revision history: numbering, retention, replays and rollback as a new revision."""

from __future__ import annotations

from policies import revisions
from policies.revisions import History, Revision


def _history(*contents: str, retain: int = 10) -> History[str]:
    history: History[str] = History("shop/web")
    for i, content in enumerate(contents):
        history = revisions.append(
            history, content, at=100.0 + i, actor="alice", reason=f"edit {i}", retain=retain
        )
    return history


def test_an_empty_history_starts_at_one() -> None:
    history: History[str] = History("shop/web")
    assert history.latest is None
    assert history.next_number == 1
    assert revisions.find(history, 1) is None


def test_append_numbers_revisions_with_reason_time_and_actor() -> None:
    history = _history("v1", "v2")
    assert history.revisions == (
        Revision(1, 100.0, "alice", "edit 0", "v1"),
        Revision(2, 101.0, "alice", "edit 1", "v2"),
    )
    assert history.latest == Revision(2, 101.0, "alice", "edit 1", "v2")
    assert history.next_number == 3


def test_only_the_newest_revisions_are_retained_and_numbers_keep_growing() -> None:
    history = _history("v1", "v2", "v3", "v4", retain=2)
    assert [r.number for r in history.revisions] == [3, 4]
    assert revisions.find(history, 1) is None
    assert history.next_number == 5


def test_a_replayed_revision_changes_nothing() -> None:
    history = _history("v1", "v2")
    replay = Revision(2, 500.0, "controller", "resumed from state file", "v2")
    assert revisions.record(history, replay, retain=10) is history
    newer = Revision(7, 501.0, "controller", "step 3", "v7")
    assert revisions.record(history, newer, retain=10).latest == newer


def test_rollback_appends_the_old_content_as_a_new_revision() -> None:
    history = _history("v1", "v2", "v3")
    rolled = revisions.rollback(history, 1, at=200.0, actor="bob", retain=10)
    assert rolled is not None
    assert rolled.latest == Revision(4, 200.0, "bob", "rollback to revision 1", "v1")
    assert rolled.revisions[:3] == history.revisions  # the record of what happened stays


def test_rollback_to_a_revision_no_longer_retained_is_none() -> None:
    history = _history("v1", "v2", "v3", retain=2)
    assert revisions.rollback(history, 1, at=200.0, actor="bob", retain=2) is None
