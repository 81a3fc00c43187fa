"""`fleetgate gateway` tells the controller where its metrics are: `--metrics-url`, or the admin
address when others can reach it by that address."""

from __future__ import annotations

import argparse

import pytest

from gateway import replica


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(["--admin", "127.0.0.1:9901"], "http://127.0.0.1:9901/metrics", id="admin"),
        pytest.param(["--admin", "[::1]:9901"], "http://[::1]:9901/metrics", id="ipv6"),
        pytest.param(["--admin", "0.0.0.0:9901"], None, id="wildcard"),
        pytest.param(["--admin", "127.0.0.1:0"], None, id="any-port"),
        pytest.param(["--admin", "unix:/run/gw.sock"], None, id="unix"),
        pytest.param(["--admin", "none"], None, id="no-admin"),
        pytest.param(
            ["--admin", "0.0.0.0:9901", "--metrics-url", "http://10.0.0.7:9901/metrics"],
            "http://10.0.0.7:9901/metrics",
            id="explicit",
        ),
    ],
)
def test_the_reported_metrics_url(extra: list[str], expected: str | None) -> None:
    parser = argparse.ArgumentParser()
    replica.add_arguments(parser)
    args = parser.parse_args(["--controller", "http://127.0.0.1:9080", *extra])
    assert replica.settings_from(args).subscriber.metrics_url == expected
