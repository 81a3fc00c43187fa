"""Routing tables out of the cycle collector's way: no event-loop stall after a table arrives.

A decoded table of 10,000 routes is about 190,000 objects the cycle collector tracks (frozen
dataclasses: rules, matches, path matches). Installed, they are young, so the next collection of
generation 0 traverses all of them, then generation 1 does, then a full collection does: measured
four or five pauses of 46 to 192 ms after every full table load of that size, about 0.4 s in all
with the event loop stopped and every request in flight waiting. Yet the collector can find
nothing in a table: tables hold no reference cycles (`policies.acyclic`; the test in
tests/policies/test_decision_memo.py), so reference counting frees a replaced table whole.

So the gateway moves every object the collector tracks into its permanent generation
(`gc.freeze`, a list splice: microseconds) as soon as a table is built, before the collector is
back on (`build`: the subscriber decodes snapshots and applies deltas in a worker thread, and
the first allocation after a decode with the collector on would start a collection over the
whole new table; `fleetgate run` and `demo` compile theirs through `build` too, in
`fleetgate.pipeline`), and again when the gateway installs it (`Gateway.swap`, whatever built
it). Later collections scan only what was allocated since.

The price: an object alive at an install that later dies in a reference cycle (a closed
connection's exception and traceback, say) is not freed while it stays frozen. That
garbage is bounded in time: on the first install `full_every_s` after the last full collection,
the frozen objects are put back (`gc.unfreeze`), collected once, and frozen again: one pause
every ten minutes by default instead of several after every table. Counting the frozen objects
to decide would cost more than the collection saves (`gc.get_freeze_count` walks the whole list:
25 ms for a 10,000-route table), hence a clock.

This is process-wide state, so only the processes that serve tables turn it on
(`GatewaySettings.freeze_tables` and `PolicyPipeline(freeze_tables=True)`, set by `fleetgate
gateway`, `run` and `demo`), never a library user or a test process by default.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import TypeVar

from policies import acyclic

T = TypeVar("T")
FULL_EVERY_S = 600.0  # the most a cyclic garbage object waits while frozen, about


class FrozenTables:
    """Freezes the heap after each table install; a full collection at most every `full_every_s`."""

    def __init__(
        self, *, full_every_s: float = FULL_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.full_every_s = full_every_s
        self._clock = clock
        self._last_full: float | None = None  # None: no install yet
        self.full_collections = 0  # how many installs ended in a full collection (for /status)
        self.freezes = 0

    def installed(self) -> None:
        """Call once the new table is in place and the old one released."""
        now = self._clock()
        if self._last_full is None or now - self._last_full >= self.full_every_s:
            # The first install collects too: whatever startup left cyclic is not frozen.
            gc.unfreeze()
            gc.collect()
            self._last_full = now
            self.full_collections += 1
        gc.freeze()
        self.freezes += 1

    def release(self) -> None:
        """Put the frozen objects back under the collector (the gateway is closing)."""
        gc.unfreeze()


def build(frozen: FrozenTables | None, make: Callable[[], T]) -> T:
    """`make()` (a snapshot decode, a delta applied) with the collector paused and, when `frozen`,
    what it built frozen before the collector is back on. Safe in a worker thread."""
    with acyclic.paused_collector():
        made = make()
        if frozen is not None:
            frozen.installed()
    return made
