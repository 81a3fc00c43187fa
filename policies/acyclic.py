"""Building big acyclic structures without the cycle collector. Pure (touches only the `gc` flag).

A table of 10,000 routes is a few hundred thousand frozen dataclasses, tuples and dicts. None of
them form reference cycles, so reference counting frees them all; the cycle collector, triggered
every 700 allocations, only rescans the growing heap, which doubled compile and load times. The
collector is paused while a table is built or (de)serialised and restored to its previous state.
Decisions a table keeps (its rules' `settled` decisions and the path memo of `policies.matching`)
keep it acyclic too (`Forward.split`), and gateway processes rely on that: they keep their tables
out of the collector altogether (`gateway.frozen_tables`), so a cycle in a table would never be
freed there.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_collector() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
