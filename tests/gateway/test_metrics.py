"""Metrics and the access log on a real gateway: what the recorder counts per exchange, how
snapshots of several workers add up, and one JSON access line per request. Both loops."""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import select
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import accesslog, metrics
from gateway.context import ExchangeObserver
from gateway.counters import Counters
from gateway.metrics import Recorder, Snapshot
from gateway.server import Gateway
from policies.model import ClusterWeight
from policies.table import RoutingTable
from tests.conftest import RefusingPort
from tests.gateway.conftest import EAST, TEST_SETTINGS, WEST, StartApp
from tests.gateway.tables import member, ref, rule, service, single, table

SHOP = {"Host": "shop.test"}


@pytest.fixture
async def observed() -> AsyncIterator[list[Gateway]]:
    gateways: list[Gateway] = []
    yield gateways
    for gw in gateways:
        await gw.close()


async def start(gateways: list[Gateway], live: RoutingTable, observer: ExchangeObserver) -> str:
    gw = Gateway(TEST_SETTINGS, live, observer=observer, counters=Counters())
    await gw.start()
    gateways.append(gw)
    host, port = gw.addresses[0]
    return f"http://{host}:{port}"


def snapshot(gw: Gateway, recorder: Recorder, worker: str = "0") -> Snapshot:
    return metrics.take_snapshot(
        gw.counters,
        recorder,
        worker=worker,
        table_version=gw.table.version,
        pool_idle=gw.pools.idle_count(),
    )


def parsed(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


async def test_recorder_counts_by_rule_cluster_backend_and_failure(
    observed: list[Gateway], app_upstream: StartApp, refusing_port: RefusingPort
) -> None:
    east = await app_upstream("east", EAST)
    clusters = [
        member("east", {service(): [east]}),
        member("west", {service(): [f"{WEST}:{refusing_port(WEST)}"]}),
    ]
    # One gateway per cluster, so each request's cluster is known in advance.
    live = table(clusters, [rule(ref(clusters=[ClusterWeight("east")]))])
    down = table(clusters, [rule(ref(clusters=[ClusterWeight("west")]))], hostnames=["down.test"])
    recorder = Recorder()
    base = await start(observed, live, recorder)
    other = await start(observed, down, recorder)
    async with aiohttp.ClientSession() as client:
        for _ in range(3):
            async with client.get(f"{base}/a", headers=SHOP) as resp:
                assert resp.status == 200
        async with client.get(f"{other}/a", headers={"Host": "down.test"}) as resp:
            assert resp.status == 503
        async with client.get(f"{base}/a", headers={"Host": "unknown.test"}) as resp:
            assert resp.status == 404
    rows = {(r["rule"], r["cluster"], r["backend"]): r for r in recorder.rows()}
    ok = rows[("shop/main#0", "east", "shop/web:80")]
    assert ok["route"] == "shop/main"
    assert ok["codes"][2] == 3
    assert sum(ok["buckets"]) == 3
    assert ok["sum_s"] > 0
    failed = rows[("shop/main#0", "west", "shop/web:80")]
    assert failed["codes"][5] == 1  # a connect failure counts against the backend and cluster
    unrouted = rows[("", "", "")]
    assert unrouted["codes"][4] == 1
    assert sum(unrouted["buckets"]) == 0  # no backend, no latency sample


async def test_snapshots_of_two_workers_add_up(
    observed: list[Gateway], app_upstream: StartApp
) -> None:
    east = await app_upstream("east", EAST)
    recorder = Recorder()
    gw_url = await start(observed, single(east), recorder)
    async with aiohttp.ClientSession() as client:
        for _ in range(4):
            async with client.get(f"{gw_url}/", headers=SHOP) as resp:
                assert resp.status == 200
    first = snapshot(observed[0], recorder, "0")
    second = copy.deepcopy(first)
    second["worker"] = "1"
    one = parsed(metrics.render([first]))
    both = parsed(metrics.render([first, second], metrics.ReloadStats(loads=3, rejected=1)))

    assert one[key("fleetgate_requests_total", worker="0", code_class="2xx")] == 4
    assert both[key("fleetgate_requests_total", worker="1", code_class="2xx")] == 4
    route = key(
        "fleetgate_route_requests_total",
        route="shop/main",
        rule="shop/main#0",
        cluster="east",
        code_class="2xx",
    )
    assert both[route] == 2 * one[route] == 8
    count = key(
        "fleetgate_backend_request_duration_seconds_count", backend="shop/web:80", cluster="east"
    )
    assert both[count] == 8
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in both.items()
        if name == "fleetgate_backend_request_duration_seconds_bucket"
    )
    assert [le for le, _ in buckets] == [*metrics.BOUNDS, float("inf")]
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    assert buckets[-1][1] == 8
    assert both[key("fleetgate_reload_errors_total", stage="validate")] == 1
    assert both[key("fleetgate_policy_loads_total")] == 3
    assert (
        both[key("fleetgate_downstream_connections_total")]
        == 2 * (one[key("fleetgate_downstream_connections_total")])
    )


@pytest.mark.parametrize("direct", [False, True], ids=["through-logging", "direct"])
async def test_access_log_writes_one_json_line_per_request(
    observed: list[Gateway], app_upstream: StartApp, direct: bool
) -> None:
    east = await app_upstream("east", EAST)
    stream = io.StringIO()
    handler = accesslog.install(stream)
    try:
        recorder = Recorder(then=accesslog.AccessLog(direct=handler if direct else None))
        gw_url = await start(observed, single(east), recorder)
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{gw_url}/items?page=2&q=%22x%5C", headers=SHOP) as resp:
                assert resp.status == 200
                body = await resp.read()
            async with client.get(f"{gw_url}/", headers={"Host": "unknown.test"}) as resp:
                assert resp.status == 404
        handler.flush()
    finally:
        accesslog.log.removeHandler(handler)
        accesslog.log.propagate = True
        accesslog.log.setLevel(logging.NOTSET)
    forwarded, local = (json.loads(line) for line in stream.getvalue().splitlines())
    assert forwarded["method"] == "GET"
    assert forwarded["host"] == "shop.test"
    assert forwarded["path"] == "/items?page=2&q=%22x%5C"
    assert forwarded["status"] == 200
    assert forwarded["bytes"] > len(body)  # head and body
    assert forwarded["route"] == "shop/main"
    assert forwarded["cluster"] == "east"
    assert forwarded["endpoint"] == east
    assert forwarded["client"] == "127.0.0.1"
    assert forwarded["reason"] is None
    assert forwarded["request_id"]
    assert forwarded["duration_ms"] >= 0
    assert forwarded["time"].endswith("Z")
    assert local["status"] == 404
    assert local["reason"] == "no_route"
    assert local["route"] is None
    assert local["cluster"] is None
    assert local["host"] == "unknown.test"


def test_buffered_access_lines_reach_a_pipe_whole() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "w") as writer, os.fdopen(read_fd, "rb") as reader:
        handler = accesslog.BufferedHandler(writer, capacity=10_000)
        handler.setFormatter(logging.Formatter("%(message)s"))
        sent = [json.dumps({"n": n, "pad": "x" * 300}) for n in range(40)]
        for line in sent:
            handler.emit(logging.LogRecord("gateway.access", logging.INFO, "", 0, line, None, None))
        handler.close()
        writer.close()
        assert reader.read().decode().splitlines() == sent
    chunks = list(accesslog._chunks(sent))
    assert len(chunks) > 1
    assert all(len(chunk) <= select.PIPE_BUF for chunk in chunks)
    assert all(chunk.endswith(b"\n") for chunk in chunks)
