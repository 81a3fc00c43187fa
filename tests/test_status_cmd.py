"""`fleetgate status`: the DNS names' table and their part in the exit status, from documents built
by controller.statusapi and served over a real socket. (The Kubernetes-mode document itself is
tested in tests/controller/test_status.py.)"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import Mapping
from typing import Any

import pytest
from aiohttp import web

from controller import statusapi
from controller.dns import DnsNameStatus, NameCondition
from controller.filesource import FileSourceStatus
from controller.publishing import Publisher
from controller.reconcile import ReconcileStatus
from fleetgate import status_cmd
from policies.model import MemberCluster, Origin, PolicySet, Problem, Route, RouteKind
from policies.table import Inventory

FRESH = DnsNameStatus(
    name="web.east.internal:8080",
    used_by=("east shop/web:80",),
    condition=NameCondition.FRESH,
    addresses=("127.0.5.1:8080", "127.0.5.2:8080"),
    ttl_s=30.0,
    answered_at=1_700_000_000.0,
    stale_since=None,
    error=None,
    failures=0,
)
STALE = DnsNameStatus(
    name="api.west.internal:9000",
    used_by=("west shop/api:80",),
    condition=NameCondition.STALE,
    addresses=("127.0.6.1:9000",),
    ttl_s=30.0,
    answered_at=1_700_000_000.0,
    stale_since=1_700_000_040.0,
    error="SERVFAIL from 127.0.0.53:53",
    failures=3,
)
FAILED = DnsNameStatus(
    name="SRV _http._tcp.gone.internal",
    used_by=("west shop/gone:80",),
    condition=NameCondition.FAILED,
    addresses=(),
    ttl_s=None,
    answered_at=None,
    stale_since=1_700_000_050.0,
    error="NXDOMAIN",
    failures=1,
)


def document(*names: DnsNameStatus, nested: bool = True) -> dict[str, Any]:
    """A status document as it travels (JSON round trip), every other part healthy."""
    section = statusapi.dns_section(names)
    doc = {
        "controller": {"id": "ctl-0", "leader": True},
        "snapshot": {"version": 7, "rollout": "1/1 gateways on v7"},
        "clusters": [{"name": "east", "state": "static", "services": []}],
        "gateways": [],
        "policies": [{"kind": "TrafficPolicy", "name": "store", "accepted": True}],
        "dns": {"names": section} if nested else section,
    }
    decoded: dict[str, Any] = json.loads(json.dumps(doc))
    return decoded


def rendered(doc: Mapping[str, Any]) -> list[str]:
    out = io.StringIO()
    status_cmd.render(doc, out)
    return out.getvalue().splitlines()


def row(lines: list[str], name: str) -> list[str]:
    [line] = [line for line in lines if line.startswith(name)]
    return line.split()


def test_each_name_shows_its_condition_addresses_and_last_error() -> None:
    lines = rendered(document(FRESH, STALE, FAILED))
    header = next(line for line in lines if line.startswith("DNS NAME"))
    assert header.split() == ["DNS", "NAME", "CONDITION", "ADDRESSES", "ERROR"]
    assert row(lines, FRESH.name) == [FRESH.name, "fresh", "127.0.5.1:8080,", "127.0.5.2:8080"]
    assert row(lines, STALE.name) == [
        STALE.name, "stale", "127.0.6.1:9000", "SERVFAIL", "from", "127.0.0.53:53", "(3", "in",
        "a", "row)",
    ]  # fmt: skip
    assert row(lines, "SRV") == ["SRV", "_http._tcp.gone.internal", "failed", "-", "NXDOMAIN"]
    # Columns line up like the other tables: the condition starts at the same offset everywhere.
    offsets = {line.index(word) for line, word in ((header, "CONDITION"),)} | {
        line.index(condition)
        for line in lines
        for condition in ("fresh", "stale", "failed")
        if f" {condition} " in line
    }
    assert len(offsets) == 1


@pytest.mark.parametrize("nested", [pytest.param(True, id="file-mode"), pytest.param(False)])
def test_the_section_is_read_as_a_list_or_under_names(nested: bool) -> None:
    assert FRESH.name in "\n".join(rendered(document(FRESH, nested=nested)))


def test_no_names_is_said_and_no_section_says_nothing() -> None:
    assert "DNS NAME: none" in rendered(document())
    without = {k: v for k, v in document().items() if k != "dns"}
    assert not [line for line in rendered(without) if line.startswith("DNS")]


@pytest.mark.parametrize(
    ("names", "healthy"),
    [
        pytest.param((FRESH,), True, id="fresh"),
        pytest.param((FRESH, STALE), False, id="stale"),
        pytest.param((FAILED,), False, id="failed"),
        pytest.param((), True, id="none"),
    ],
)
def test_a_name_that_is_not_fresh_makes_the_status_unhealthy(
    names: tuple[DnsNameStatus, ...], healthy: bool
) -> None:
    assert status_cmd.healthy(document(*names)) is healthy


async def test_fleetgate_status_shows_the_served_names_and_exits_1_for_a_stale_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    served = {"doc": document(FRESH, STALE)}
    app = web.Application()
    statusapi.add_routes(app, lambda: served["doc"])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        args = argparse.Namespace(controller=f"http://{host}:{port}", json=False, timeout=5.0)
        assert await asyncio.to_thread(status_cmd.main, args) == 1
        out = capsys.readouterr().out
        assert "stale" in out
        assert "SERVFAIL from 127.0.0.53:53 (3 in a row)" in out
        served["doc"] = document(FRESH)
        assert await asyncio.to_thread(status_cmd.main, args) == 0
        assert STALE.name not in capsys.readouterr().out
    finally:
        await runner.cleanup()


def test_a_refused_policy_directory_is_shown_above_the_routes_still_served() -> None:
    # File mode (`fleetgate controller -c DIR`): the last load was refused, the last good set
    # (one route) keeps being served, as a held generation is in Kubernetes mode.
    problem = Problem(Origin("policies/shop.yaml", 14, 9), "spec.rules[1].backendRefs[0].weight",
                      'must be an integer 0..1000000, got "ten"')  # fmt: skip
    source = FileSourceStatus("policies", False, 1, 2, 1, 1, 1, (problem,), None)
    route = Route(RouteKind.TRAFFIC_POLICY, "shop", "storefront", ("shop.test",), ())
    east = MemberCluster("east", {}, priority=1)
    reconcile = ReconcileStatus(None, None, 0, 0, 0, 0, 0, None, False)
    doc = statusapi.file_document(
        PolicySet(routes=(route,), clusters=(east,)), source, Publisher(), Inventory({}), (),
        reconcile,
    )  # fmt: skip
    lines = rendered(doc)
    assert row(lines, "PolicyDirectory")[:3] == ["PolicyDirectory", "policies", "no"]
    assert any('got "ten"' in line for line in lines)
    assert row(lines, "TrafficPolicy")[:3] == ["TrafficPolicy", "shop/storefront", "yes"]
    assert row(lines, "east")[:3] == ["east", "static", "1"]
    assert not status_cmd.healthy(doc)
