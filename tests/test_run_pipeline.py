"""The embedded pipeline (`fleetgate run`'s controller half) compiles each policy load once: the
release runner rebuilds at once, and reconcile's loop, which runs for DNS answers, does not build
the same inputs again."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from fleetgate.pipeline import PolicyPipeline
from tests.conftest import eventually
from tests.running import policy_text, write_atomically

EAST, WEST = "127.0.1.1:8080", "127.0.2.1:8080"


async def test_each_policy_load_is_compiled_once(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(policy_text(east=EAST, west=WEST, edit=1))
    pipeline = PolicyPipeline(tmp_path, poll_interval_s=0.01, debounce_s=0.01)
    assert await pipeline.load_first() == ()
    assert pipeline.reconciler.status.builds == 1
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(feed(), name="pipeline.feed") for feed in pipeline.feeders()]
        try:
            for edit in (2, 3, 4):
                write_atomically(fleet, policy_text(east=EAST, west=WEST, edit=edit))

                def published(count: int = edit) -> bool:
                    status = pipeline.reconciler.status
                    return pipeline.source.status.loads == count == status.published

                await eventually(published)
            # Each load also wakes reconcile's loop; it finds the inputs compiled and builds none.
            write_atomically(fleet, policy_text(east=EAST, west=WEST, edit=5))
            await eventually(lambda: pipeline.reconciler.status.published == 5)
            status = pipeline.reconciler.status
        finally:
            for task in tasks:
                task.cancel()
    assert (status.builds, status.published, status.unchanged, status.failures) == (5, 5, 0, 0)
    assert pipeline.source.status.loads == 5
    assert pipeline.status()["compile_failures"] == 0


async def test_a_pipeline_that_serves_its_tables_freezes_each_as_it_is_built(
    tmp_path: Path,
) -> None:
    """`fleetgate run` and `demo` (gateway.frozen_tables): the compiled table is out of the cycle
    collector's scans before the collector is back on, so no collection traverses it."""
    (tmp_path / "fleet.yaml").write_text(policy_text(east=EAST, west=WEST, edit=1))
    try:
        served = PolicyPipeline(tmp_path, poll_interval_s=0.01, debounce_s=0.01, freeze_tables=True)
        assert await served.load_first() == ()
        latest = served.publisher.latest
        assert latest is not None
        rule = next(iter(latest.table.hosts.values())).rules[0]
        assert not any(o is rule for o in gc.get_objects())  # frozen
        gc.unfreeze()

        plain = PolicyPipeline(tmp_path, poll_interval_s=0.01, debounce_s=0.01)
        assert await plain.load_first() == ()
        latest = plain.publisher.latest
        assert latest is not None
        rule = next(iter(latest.table.hosts.values())).rules[0]
        assert any(o is rule for o in gc.get_objects())  # `fleetgate controller -c`: not frozen
    finally:
        gc.unfreeze()
