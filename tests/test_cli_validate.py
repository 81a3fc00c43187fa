"""`fleetgate validate` and `fleetgate schema`, in-process and once as the installed script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controller import sources
from fleetgate import cli
from policies.errors import PolicyError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "fleet"

BAD = """\
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {name: web, namespace: shop}
spec:
  rules:
    - backendRefs:
        - {name: web, port: 80, weight: ten}
---
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {name: other, namespace: shop}
spec:
  rules:
    - backendRefs: [{name: nowhere, port: 80}]
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def test_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "validate", str(EXAMPLES))
    assert status == 0
    assert out == [
        "ok: 7 documents (3 MemberCluster, 1 TrafficPolicy, 1 HTTPRoute, 1 ReferenceGrant, "
        "1 Release)"
    ]
    assert err == ""


def test_errors_and_warnings_one_per_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    status, out, err = run(capsys, "validate", str(bad))
    assert status == 1
    assert out == [
        f"{bad}:7:41: spec.rules[0].backendRefs[0].weight: "
        'must be an integer 0..1000000, got "ten"',
        f"{bad}:14:21: warning: spec.rules[0].backendRefs[0]: no MemberCluster is known to have "
        "Service shop/nowhere: its share of requests gets 500",
    ]
    assert err == "failed: 1 error, 1 warning\n"


def test_warnings_alone_pass_with_a_count(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "only-warnings.yml").write_text(BAD.split("---\n")[1])
    (tmp_path / "notes.txt").write_text("not a policy")
    status, out, _ = run(capsys, "validate", str(tmp_path))
    assert status == 0
    assert out[-1] == "ok: 1 document (1 TrafficPolicy), 1 warning"


def test_unreadable_paths_are_problems_not_tracebacks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    missing = tmp_path / "missing.yaml"
    status, out, err = run(capsys, "validate", str(binary), str(missing), str(EXAMPLES))
    assert status == 1
    assert out == [
        f"{binary}: cannot read: not UTF-8 text (invalid start byte at byte 0)",
        f"{missing}: cannot read: No such file or directory",
    ]
    assert err == "failed: 2 errors\n"


def test_empty_directory_is_a_warning(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.yaml").write_text(BAD)
    status, out, _ = run(capsys, "validate", str(tmp_path))
    assert status == 0
    assert out == [
        f"{tmp_path}: warning: no *.yaml or *.yml files here",
        "ok: 0 documents, 1 warning",
    ]


def test_read_policy_files_walks_directories_in_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.yaml").write_text("z")
    (tmp_path / "b" / "a.yml").write_text("a")
    (tmp_path / "c.yaml").write_text("c")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("x")
    (tmp_path / "README.md").write_text("readme")
    named = tmp_path / "README.md"
    files = sources.read_policy_files([tmp_path, named])
    assert [(Path(name).relative_to(tmp_path).as_posix(), text) for name, text in files] == [
        ("c.yaml", "c"),
        ("b/a.yml", "a"),
        ("b/z.yaml", "z"),
        ("README.md", "readme"),
    ]


def test_read_policy_files_raises_with_every_unreadable_path(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as raised:
        sources.read_policy_files([tmp_path / "a.yaml", tmp_path / "b.yaml", EXAMPLES])
    assert [p.origin.file for p in raised.value.problems] == [
        str(tmp_path / "a.yaml"),
        str(tmp_path / "b.yaml"),
    ]


def test_schema_command(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "schema")
    document = json.loads("\n".join(out))
    assert status == 0
    assert len(document["oneOf"]) == 5
    status, out, _ = run(capsys, "schema", "--kind", "Release")
    assert json.loads("\n".join(out))["$ref"] == "#/$defs/Release"


def test_schema_command_refuses_unknown_kinds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["schema", "--kind", "Gateway"])
    assert exited.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_installed_script_validates_the_examples() -> None:
    script = Path(sys.executable).parent / "fleetgate"
    done = subprocess.run(
        [str(script), "validate", "examples/fleet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 7 documents (3 MemberCluster")


GATEWAY_CONFIG = """\
apiVersion: fleetgate.io/v1alpha1
kind: GatewayConfig
spec:
  circuitBreaker: {maxRequests: 64}
  namespaceQuotas:
    - {namespace: shop, requestsPerSecond: 100, burst: 200}
"""


def test_a_gateway_config_file_is_checked_with_its_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = tmp_path / "gateway.yaml"
    good.write_text(GATEWAY_CONFIG)
    status, out, err = run(capsys, "validate", str(EXAMPLES), "--gateway-config", str(good))
    assert status == 0
    assert out == [
        "ok: 7 documents (3 MemberCluster, 1 TrafficPolicy, 1 HTTPRoute, 1 ReferenceGrant, "
        "1 Release); 1 GatewayConfig"
    ]
    assert err == ""
    assert run(capsys, "validate", "--gateway-config", str(good))[:2] == (
        0,
        ["ok: 1 GatewayConfig"],
    )

    bad = tmp_path / "bad-gateway.yaml"
    bad.write_text(GATEWAY_CONFIG.replace("64", "0").replace("burst: 200", "burst: many"))
    missing = tmp_path / "missing.yaml"
    status, out, err = run(
        capsys, "validate", *(f"--gateway-config={p}" for p in (good, bad, missing, tmp_path))
    )
    assert status == 1
    assert out == [
        f"{bad}:4:33: spec.circuitBreaker.maxRequests: must be an integer >= 1, got 0",
        f'{bad}:6:56: spec.namespaceQuotas[0].burst: must be an integer >= 1, got "many"',
        f"{missing}: cannot read: No such file or directory",
        f"{tmp_path}: is a directory; --gateway-config takes a file",
    ]
    assert err == "failed: 4 errors\n"


def test_a_gateway_config_among_the_policies_is_refused_with_a_hint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "gateway.yaml").write_text(GATEWAY_CONFIG)
    status, out, err = run(capsys, "validate", str(tmp_path))
    assert status == 1
    assert out == [
        f"{tmp_path / 'gateway.yaml'}:2:7: kind: must be one of HTTPRoute, MemberCluster, "
        'ReferenceGrant, Release, TrafficPolicy, got "GatewayConfig"'
    ]
    assert "check it with --gateway-config FILE" in err


def test_validate_needs_something_to_check(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["validate"])
    assert exited.value.code == 2
    assert "give a policy PATH or --gateway-config FILE" in capsys.readouterr().err


def test_schema_command_publishes_the_gateway_config_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "schema", "--kind", "GatewayConfig")
    document = json.loads("\n".join(out))
    assert status == 0
    assert document["$ref"] == "#/$defs/GatewayConfig"
    assert set(document["$defs"]["GatewayConfigSpec"]["properties"]) == {
        "circuitBreaker",
        "namespaceQuotas",
    }
