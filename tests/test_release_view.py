"""`fleetgate release status` text: times in UTC, and the time left in a timed pause."""

from __future__ import annotations

import pytest

from fleetgate import release_view


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(-3.0, "0s", id="over"),
        pytest.param(9.4, "9s", id="seconds"),
        pytest.param(250.0, "4m10s", id="minutes"),
        pytest.param(3720.0, "1h02m", id="hours"),
    ],
)
def test_duration(seconds: float, text: str) -> None:
    assert release_view.duration(seconds) == text


def test_a_timed_pause_shows_when_it_ends_in_utc_and_how_long_is_left() -> None:
    view = {
        "release": "shop/web-v2",
        "strategy": "Canary",
        "target": "shop/storefront",
        "stable": "shop/web:80",
        "canary": "shop/web-v2:80",
        "steps": ["setWeight 20", "pause 60s"],
        "started": True,
        "phase": "Paused",
        "pause_reason": "pause_step",
        "message": "step 2: paused until 1970-01-01T00:01:30Z",
        "pause_until": 90.0,
        "canary_weight": 20,
        "step": 1,
        "revision": 1,
        "applied_revision": 1,
    }
    text = release_view.status(view, now=30.0)
    assert "resumes at 1970-01-01 00:01:30 UTC (in 1m00s)" in text
    assert "paused until 1970-01-01T00:01:30Z" in text
