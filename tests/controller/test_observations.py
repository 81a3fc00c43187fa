"""Analysis inputs: gateway /metrics text and the Prometheus HTTP API give the same samples."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from controller.observations import (
    DURATION_BUCKET,
    REQUESTS,
    Observations,
    ObservationSettings,
    Side,
    parse_metrics,
    sides,
)
from policies import analysis
from policies.analysis import Sample
from policies.model import Analysis, ClusterWeight, MemberCluster, Release
from tests.controller.release_rig import CLUSTERS, load, release_yaml

Serve = Callable[[web.Application], Awaitable[str]]
CANARY, STABLE = "shop/web-v2:80", "shop/web:80"
CONFIG = Analysis(interval_s=30, min_requests=50, min_success_rate=0.95, max_latency_p99_s=0.5)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


def exposition(
    counters: dict[tuple[str, str, str], float], buckets: dict[tuple[str, str], float]
) -> str:
    """Prometheus text as docs/metrics.md specifies it."""
    lines = [f"# TYPE {REQUESTS} counter"]
    for (backend, cluster, code_class), value in counters.items():
        labels = f'backend="{backend}",cluster="{cluster}",code_class="{code_class}"'
        lines.append(f"{REQUESTS}{{{labels}}} {value:g}")
    lines.append("# TYPE fleetgate_backend_request_duration_seconds histogram")
    for (backend, le), value in buckets.items():
        lines.append(f'{DURATION_BUCKET}{{backend="{backend}",cluster="east",le="{le}"}} {value:g}')
    return "\n".join(lines) + "\n"


class FakeGateway:
    """A gateway admin port whose counters a test sets between scrapes."""

    def __init__(self) -> None:
        self.text = ""

    def app(self) -> web.Application:
        async def metrics(request: web.Request) -> web.Response:
            return web.Response(text=self.text, content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return app

    def set(self, canary: tuple[float, float], stable: tuple[float, float], slow: float) -> None:
        """(requests, 5xx) per side; `slow` canary requests took over 0.25 s."""
        counters = {
            (CANARY, "east", "2xx"): canary[0] - canary[1],
            (CANARY, "east", "5xx"): canary[1],
            (STABLE, "east", "2xx"): stable[0] - stable[1],
            (STABLE, "east", "5xx"): stable[1],
            ("shop/other:80", "east", "5xx"): 1000.0,
        }
        buckets = {
            (CANARY, "0.1"): canary[0] - slow,
            (CANARY, "0.25"): canary[0] - slow,
            (CANARY, "1"): canary[0],
            (CANARY, "+Inf"): canary[0],
        }
        self.text = exposition(counters, buckets)


def release() -> Release:
    return load(CLUSTERS, release_yaml("[{setWeight: 10}]")).releases[0]


def test_parse_sums_code_classes_and_clusters_and_keeps_only_the_sides_backends() -> None:
    text = exposition(
        {
            (CANARY, "east", "2xx"): 90,
            (CANARY, "west", "2xx"): 5,
            (CANARY, "east", "5xx"): 5,
            (CANARY, "east", "4xx"): 7,
            (STABLE, "east", "2xx"): 300,
            ("shop/other:80", "east", "5xx"): 50,
        },
        {(CANARY, "0.1"): 80, (CANARY, "+Inf"): 107},
    )
    samples = parse_metrics(text, {"canary": Side(CANARY), "stable": Side(STABLE)})
    assert samples["canary"] == Sample(
        requests=107, errors=5, latency_buckets=((0.1, 80.0), (float("inf"), 107.0))
    )
    assert samples["stable"] == Sample(requests=300, errors=0)
    east_only = parse_metrics(text, {"canary": Side(CANARY, frozenset({"east"}))})
    assert (east_only["canary"].requests, east_only["canary"].errors) == (102, 5)
    not_east = parse_metrics(text, {"canary": Side(CANARY, frozenset({"east"}), exclude=True)})
    assert not_east["canary"].requests == 5


def test_a_canary_in_a_new_cluster_is_told_apart_by_the_cluster_label() -> None:
    spec = release()
    members = [
        MemberCluster("east", {"region": "us-east"}),
        MemberCluster("west", {"region": "us-west"}),
    ]
    same_service = dataclasses.replace(
        spec, canary=dataclasses.replace(spec.stable, clusters=(ClusterWeight("west"),))
    )
    selected = sides(same_service, members)
    assert selected["canary"] == Side(STABLE, frozenset({"west"}))
    assert selected["stable"] == Side(STABLE, frozenset({"west"}), exclude=True)
    by_label = dataclasses.replace(
        spec, canary=dataclasses.replace(spec.stable, cluster_selector={"region": "us-west"})
    )
    assert sides(by_label, members)["canary"] == Side(STABLE, frozenset({"west"}))
    assert sides(spec, members) == {"canary": Side(CANARY), "stable": Side(STABLE)}


async def test_gateway_counters_give_each_gateways_increase_summed(
    serve: Serve, closed_port: int
) -> None:
    one, two = FakeGateway(), FakeGateway()
    urls = (
        await serve(one.app()) + "/metrics",
        await serve(two.app()) + "/metrics",
        f"http://127.0.0.1:{closed_port}/metrics",  # a gateway that is down: left out
    )
    one.set(canary=(100, 1), stable=(1000, 0), slow=0)
    two.set(canary=(5000, 100), stable=(9000, 9), slow=0)
    observations = Observations(ObservationSettings(metrics_urls=urls, timeout_s=2.0))
    await observations.start()
    try:
        spec = dataclasses.replace(release(), analysis=CONFIG)
        baseline = await observations.begin(spec, ())
        one.set(canary=(300, 11), stable=(2000, 0), slow=1)  # +200 requests, +10 errors
        two.set(canary=(60, 2), stable=(500, 5), slow=1)  # restarted: all of it is new
        observed = await observations.measure(spec, (), since=0, until=30, baseline=baseline)
    finally:
        await observations.close()
    assert (observed.canary.requests, observed.canary.errors) == (260, 12)
    assert observed.stable is not None
    assert (observed.stable.requests, observed.stable.errors) == (1500, 5)
    assert dict(observed.canary.latency_buckets)[float("inf")] == 260
    verdict = analysis.judge(CONFIG, observed)
    assert verdict.verdict is analysis.Verdict.PASS  # 248/260 = 0.954 ≥ 0.95


def fake_prometheus(answers: dict[str, Any], queries: list[dict[str, str]]) -> web.Application:
    """/api/v1/query answering by the metric (and code class) in the query."""

    async def query(request: web.Request) -> web.Response:
        params = dict(request.query)
        queries.append(params)
        text = params["query"]
        side = "canary" if CANARY in text else "stable"
        if "status_error" in answers:
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": "parse error"}, status=400
            )
        if DURATION_BUCKET in text:
            result = [
                {"metric": {"le": le}, "value": [1.0, str(v)]} for le, v in answers[side]["buckets"]
            ]
        else:
            key = "errors" if 'code_class="5xx"' in text else "requests"
            result = [{"metric": {}, "value": [1.0, str(answers[side][key])]}]
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    return app


async def test_prometheus_fills_the_same_samples_and_the_same_verdict(serve: Serve) -> None:
    answers = {
        "canary": {
            "requests": 260.0,
            "errors": 12.0,
            "buckets": [("0.1", 258.0), ("0.25", 258.0), ("1", 260.0), ("+Inf", 260.0)],
        },
        "stable": {"requests": 1500.0, "errors": 5.0, "buckets": []},
    }
    queries: list[dict[str, str]] = []
    address = await serve(fake_prometheus(answers, queries))
    config = dataclasses.replace(
        CONFIG, prometheus_address=address, prometheus_query='job="fleetgate"'
    )
    spec = dataclasses.replace(release(), analysis=config)
    observations = Observations()
    await observations.start()
    try:
        assert await observations.begin(spec, ()) == {"source": "prometheus"}
        observed = await observations.measure(spec, (), since=100.0, until=130.0, baseline=None)
    finally:
        await observations.close()
    assert observed.canary == Sample(
        requests=260,
        errors=12,
        latency_buckets=((0.1, 258.0), (0.25, 258.0), (1.0, 260.0), (float("inf"), 260.0)),
    )
    assert queries[0] == {
        "query": f'sum(increase({REQUESTS}{{backend="{CANARY}",job="fleetgate"}}[30s]))',
        "time": "130.000",
    }
    assert queries[1]["query"] == (
        f'sum(increase({REQUESTS}{{backend="{CANARY}",job="fleetgate",code_class="5xx"}}[30s]))'
    )
    assert queries[2]["query"] == (
        f'sum by (le) (increase({DURATION_BUCKET}{{backend="{CANARY}",job="fleetgate"}}[30s]))'
    )
    from_counters = Sample(
        requests=260,
        errors=12,
        latency_buckets=((0.1, 258.0), (0.25, 258.0), (1.0, 260.0), (float("inf"), 260.0)),
    )
    same = analysis.judge(CONFIG, analysis.Observation(canary=from_counters))
    measured = analysis.judge(config, observed)
    assert (measured.verdict, measured.reason, measured.message) == (
        same.verdict,
        same.reason,
        same.message,
    )


async def test_a_prometheus_that_cannot_answer_is_inconclusive_never_a_pass(
    serve: Serve,
) -> None:
    address = await serve(fake_prometheus({"status_error": True}, []))
    config = dataclasses.replace(CONFIG, prometheus_address=address, prometheus_query="")
    spec = dataclasses.replace(release(), analysis=config)
    observations = Observations()
    await observations.start()
    try:
        observed = await observations.measure(spec, (), since=0.0, until=30.0, baseline=None)
    finally:
        await observations.close()
    measured = analysis.judge(config, observed)
    assert measured.verdict is analysis.Verdict.INCONCLUSIVE
    assert measured.reason == "not_enough_traffic"
