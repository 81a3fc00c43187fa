"""The replica's flags become its process settings: zone, gateway config, admin token, drain
delay (what `fleetgate gateway` and each `--workers N` worker run with)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from gateway import replica
from policies.model import RateLimit


def _settings(*argv: str) -> replica.ReplicaSettings:
    parser = argparse.ArgumentParser()
    replica.add_arguments(parser)
    return replica.settings_from(parser.parse_args(["--controller", "http://127.0.0.1:1", *argv]))


def test_zone_config_token_and_drain_delay_reach_the_process_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEETGATE_ADMIN_TOKEN", raising=False)
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "apiVersion: fleetgate.io/v1alpha1\nkind: GatewayConfig\nspec:\n"
        "  circuitBreaker: {maxRequests: 9}\n"
        "  namespaceQuotas: [{namespace: shop, requestsPerSecond: 3}]\n"
    )
    settings = _settings(
        "--zone", "z1", "--gateway-config", str(config),
        "--admin-token", "t0ken", "--drain-delay", "2.5",
    )  # fmt: skip
    process = settings.process
    assert process.zone == "z1"
    assert settings.subscriber.zone == "z1"  # also reported to the controller
    assert process.config.breaker.max_requests == 9
    assert process.config.namespace_quotas == {"shop": RateLimit(3.0, 3, 0)}
    assert process.config_path == config
    assert process.admin_token == "t0ken"
    assert process.gateway.drain_delay_s == 2.5


def test_defaults_and_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETGATE_ADMIN_TOKEN", "from-env")
    process = _settings().process
    assert process.admin_token == "from-env"
    assert process.zone is None
    assert process.config_path is None
    assert process.config.namespace_quotas == {}
    assert process.gateway.drain_delay_s == 0.0


def test_an_unreadable_config_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--gateway-config .*missing\.yaml: No such file"):
        _settings("--gateway-config", str(tmp_path / "missing.yaml"))
