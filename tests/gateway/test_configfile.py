"""Following the gateway config file on disk: valid changes are applied, invalid ones keep the
limits in force."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.configfile import ConfigFollower
from policies.gatewayconfig import GatewayConfig
from policies.model import RateLimit

HEAD = "apiVersion: fleetgate.io/v1alpha1\nkind: GatewayConfig\n"


def _replace(path: Path, text: str) -> None:
    """As a ConfigMap update or an editor does: a new file renamed over the old one."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    temp.replace(path)


def test_changes_are_applied_and_bad_ones_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(HEAD + "spec: {}\n")
    applied: list[GatewayConfig] = []
    follower = ConfigFollower(path, applied.append)
    follower.check()
    assert applied == []  # unchanged since start-up

    _replace(path, HEAD + "spec:\n  namespaceQuotas: [{namespace: shop, requestsPerSecond: 5}]\n")
    follower.check()
    assert [c.namespace_quotas for c in applied] == [{"shop": RateLimit(5.0, 5, 0)}]
    follower.check()
    assert len(applied) == 1

    _replace(path, HEAD + "spec:\n  circuitBreaker: {maxRequests: 0}\n")
    follower.check()
    assert len(applied) == 1
    assert follower.refused == 1
    assert "spec.circuitBreaker.maxRequests: must be an integer >= 1" in caplog.text

    path.unlink()
    follower.check()
    assert follower.refused == 2  # gone: the limits in force stay

    _replace(path, HEAD + "spec:\n  circuitBreaker: {maxRequests: 7}\n")
    follower.check()
    assert applied[-1].breaker.max_requests == 7
    assert follower.applied == 2
