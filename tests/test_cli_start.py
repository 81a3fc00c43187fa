"""Commands that serve policies refuse to start without a valid table, saying why on stderr:
invalid policy files (each problem as `fleetgate validate` prints it) or a damaged release state
file (starting without it would move every live weight back to stable)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetgate import cli

BAD_POLICY = """\
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {name: storefront, namespace: shop}
spec:
  hostnames: [shop.test]
  rules:
    - backendRefs:
        - {name: web, port: 80, weight: ten}
"""

GOOD_POLICY = """\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: east}
spec:
  services:
    - namespace: shop
      name: web
      ports:
        - {port: 80, endpoints: ["127.0.1.1:8080"]}
"""

COMMANDS = {
    "run": ["run", "--listen", "127.0.0.1:0", "--admin", "none"],
    "controller": ["controller", "--listen", "127.0.0.1:0"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_invalid_policies_are_listed_and_exit_1(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "shop.yaml").write_text(BAD_POLICY)
    assert cli.main([*COMMANDS[command], "-c", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"fleetgate {command}: no valid policies in {tmp_path}:" in err
    assert "shop.yaml:8:41: spec.rules[0].backendRefs[0].weight:" in err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_damaged_release_state_file_stops_the_start(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "fleet.yaml").write_text(GOOD_POLICY)
    state = tmp_path / "releases.json"
    state.write_text("{not json")
    argv = [*COMMANDS[command], "-c", str(policies), "--state", str(state)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"fleetgate {command}: state file {state} is not valid JSON" in err.splitlines()[-1]
