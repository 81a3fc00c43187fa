"""The "resilience on" benchmark table is a valid policy set with every feature switched on."""

from __future__ import annotations

from pathlib import Path

from benchmarks import route_table, servers
from benchmarks.sidebyside import parse_args
from policies.loading import load_documents


def test_the_resilient_table_loads_with_checks_retries_and_outlier_detection(
    tmp_path: Path,
) -> None:
    aim = route_table.write_policy_dir(
        tmp_path, routes=10, endpoint="127.0.0.1:9001", resilience=True
    )
    files = sorted(tmp_path.glob("*.yaml"))
    result = load_documents([(str(path), path.read_text()) for path in files])
    assert result.ok, [str(p) for p in result.problems]
    (cluster,) = result.policies.clusters
    assert cluster.health_check is not None
    assert cluster.health_check.path == "/healthz"
    assert len(result.policies.routes) == 10
    for route in result.policies.routes:
        assert route.kind.value == "TrafficPolicy"
        for rule in route.rules:
            assert rule.settings.retry is not None
            assert "gateway-error" in rule.settings.retry.on
            assert rule.settings.outlier_detection is not None
    assert aim.host in {h for route in result.policies.routes for h in route.hostnames}


def test_the_resilience_flag_reaches_haproxy_and_the_options(tmp_path: Path) -> None:
    assert parse_args(["--resilience"]).resilience
    assert not parse_args([]).resilience
    launch = servers.haproxy(
        tmp_path, port=1, backend_port=2, workers=1, access_log=False, resilience=True
    )
    conf = Path(launch.argv[-1]).read_text()
    assert "server s1 127.0.0.1:2 maxconn 4000 check inter 5s" in conf
