"""Tables out of the cycle collector's scans (gateway.frozen_tables): what is frozen, what a
frozen cycle costs and how long, and the gateway and its commands turning it on."""

from __future__ import annotations

import argparse
import gc
import weakref
from collections.abc import Iterator

import pytest

from gateway import frozen_tables, replica
from gateway.frozen_tables import FrozenTables
from tests.fakes.upstream import ok
from tests.gateway import tables, wire
from tests.gateway.conftest import StartGateway, StartRaw


class Node:
    """A tracked object that can sit in a reference cycle and be watched by a weak reference."""

    def __init__(self) -> None:
        self.other: object = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    """Freezing is process-wide: leave the test process as it was found."""
    yield
    gc.unfreeze()


def in_cycle() -> tuple[Node, weakref.ref[Node]]:
    node = Node()
    node.other = node
    return node, weakref.ref(node)


def test_an_install_freezes_what_is_alive_and_a_cycle_waits_for_the_next_full_collection() -> None:
    now = [0.0]
    frozen = FrozenTables(full_every_s=600.0, clock=lambda: now[0])
    node, alive = in_cycle()
    frozen.installed()  # the first install: collected once, then frozen
    assert frozen.full_collections == 1
    assert not any(o is node for o in gc.get_objects())  # frozen: no collection scans it
    del node
    gc.collect()
    assert alive() is not None  # garbage now, but frozen: not freed yet

    now[0] = 599.0
    frozen.installed()
    gc.collect()
    assert alive() is not None
    assert frozen.full_collections == 1

    now[0] = 600.0
    frozen.installed()  # full_every_s after the last full collection: unfreeze, collect
    assert alive() is None
    assert frozen.full_collections == 2
    assert frozen.freezes == 3


def test_the_first_install_collects_before_freezing() -> None:
    alive = in_cycle()[1]  # garbage from before the first table: not to be frozen
    FrozenTables().installed()
    assert alive() is None


def test_build_freezes_what_it_built_before_the_collector_is_back_on() -> None:
    frozen = FrozenTables()
    built = frozen_tables.build(frozen, Node)
    assert gc.isenabled()  # restored
    assert frozen.freezes == 1
    assert not any(o is built for o in gc.get_objects())


def test_build_without_freezing_only_pauses_the_collector() -> None:
    seen: list[bool] = []

    def make() -> Node:
        seen.append(gc.isenabled())
        return Node()

    built = frozen_tables.build(None, make)
    assert seen == [False]
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert any(o is built for o in gc.get_objects())


def test_release_puts_the_frozen_objects_back_under_the_collector() -> None:
    frozen = FrozenTables()
    node, alive = in_cycle()
    frozen.installed()
    assert gc.get_freeze_count() > 0
    frozen.release()
    assert gc.get_freeze_count() == 0
    del node
    gc.collect()
    assert alive() is None


async def test_a_gateway_freezes_each_table_it_installs_and_unfreezes_on_close(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address), freeze_tables=True)
    assert gw.frozen is not None
    assert gw.frozen.freezes == 1
    new = tables.single(upstream.address)
    entry = next(iter(new.hosts.values()))
    gw.apply(new)
    assert gw.frozen.freezes == 2
    assert not any(o is entry for o in gc.get_objects())  # the installed table is frozen
    conn = await wire.Conn.open(gw.addresses[0])
    assert (await conn.request(wire.get())).status == 200
    await conn.close()
    await gw.close()
    assert gc.get_freeze_count() == 0


async def test_gateways_built_as_a_library_do_not_freeze(
    raw_upstream: StartRaw, gateway: StartGateway
) -> None:
    upstream = await raw_upstream(ok())
    gw = await gateway(tables.single(upstream.address))
    gw.apply(tables.single(upstream.address))
    assert gw.frozen is None
    assert gc.get_freeze_count() == 0


def test_the_gateway_command_freezes_its_tables() -> None:
    parser = argparse.ArgumentParser()
    replica.add_arguments(parser)
    args = parser.parse_args(["--controller", "http://127.0.0.1:1"])
    assert replica.settings_from(args).process.gateway.freeze_tables
