"""deploy/ checked offline: every manifest against the Kubernetes schemas, CRDs in step with the
policy schema, and the example policies accepted by the CRDs' OpenAPI schemas."""

from __future__ import annotations

import pathlib
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from controller import api_tokens
from fleetgate import cli, crds
from policies import schema
from policies.gatewayconfig import load_gateway_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBERNETES_VERSION = "1.30"

MANIFESTS = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def _documents(path: pathlib.Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize(
    "path", [pytest.param(p, id=str(p.relative_to(DEPLOY))) for p in MANIFESTS]
)
def test_manifest_passes_the_kubernetes_schema(path: pathlib.Path) -> None:
    docs = _documents(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_files_that_exist() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    missing = [r for r in kustomization["resources"] if not (DEPLOY / r).is_file()]
    assert missing == []


@pytest.mark.parametrize("kind", sorted(crds.CRD_KINDS))
def test_crds_are_generated_from_the_policy_schema(kind: str) -> None:
    on_disk = (DEPLOY / "crds" / crds.file_name(kind)).read_text()
    assert on_disk == crds.render(kind), "run `python -m fleetgate.crds deploy/crds`"


def _crd_validator(kind: str) -> jsonschema.Draft4Validator:
    # Kubernetes' OpenAPI v3.0 subset has draft-4 semantics (boolean exclusiveMinimum).
    version = crds.crd(kind)["spec"]["versions"][0]
    return jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"])


def test_example_policies_are_accepted_by_the_crds() -> None:
    seen = set()
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in _documents(path):
            if doc.get("kind") in crds.CRD_KINDS:
                _crd_validator(doc["kind"]).validate(doc)
                seen.add(doc["kind"])
    assert seen == set(crds.CRD_KINDS)


def test_a_wrongly_typed_field_is_refused_by_the_crd() -> None:
    bad = {
        "apiVersion": "fleetgate.io/v1alpha1",
        "kind": "MemberCluster",
        "metadata": {"name": "east"},
        "spec": {"priority": "first"},
    }
    errors = list(_crd_validator("MemberCluster").iter_errors(bad))
    assert [list(e.path) for e in errors] == [["spec", "priority"]]


def _gateway_documents() -> dict[str, dict[str, Any]]:
    docs = _documents(DEPLOY / "gateway" / "deployment.yaml")
    docs += _documents(DEPLOY / "gateway" / "gateway-config.yaml")
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def test_the_example_gateway_config_is_valid() -> None:
    config_map = _gateway_documents()["ConfigMap/fleetgate-gateway-config"]
    text = config_map["data"]["gateway.yaml"]
    config, problems = load_gateway_config("gateway.yaml", text)
    assert problems == ()
    assert config is not None
    assert config.namespace_quotas  # an example worth copying, not an empty file
    jsonschema.Draft202012Validator(schema.json_schema("GatewayConfig")).validate(
        yaml.safe_load(text)
    )


def test_the_gateways_read_the_mounted_gateway_config() -> None:
    docs = _gateway_documents()
    pod = docs["Deployment/fleetgate-gateway"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = cli.build_parser().parse_args(container["args"])
    assert args.command == "gateway"
    path = pathlib.PurePosixPath(str(args.gateway_config))
    [mount] = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert "subPath" not in mount  # a subPath file would never see ConfigMap updates
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = docs[f"ConfigMap/{volume['configMap']['name']}"]
    assert str(path.relative_to(mount["mountPath"])) in config_map["data"]


def test_the_controllers_serve_the_operator_api_with_the_mounted_tokens(
    tmp_path: pathlib.Path,
) -> None:
    docs = {
        f"{d['kind']}/{d['metadata']['name']}": d
        for name in ("deployment.yaml", "api-tokens.yaml")
        for d in _documents(DEPLOY / "controller" / name)
    }
    pod = docs["Deployment/fleetgate-controller"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    args = cli.build_parser().parse_args(container["args"])
    assert args.command == "controller"
    assert args.api.endswith(":8081")
    assert {"name": "api", "containerPort": 8081} in container["ports"]
    path = pathlib.PurePosixPath(str(args.tokens))
    [mount] = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert "subPath" not in mount
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = docs[f"Secret/{volume['secret']['secretName']}"]
    text = secret["stringData"][str(path.relative_to(mount["mountPath"]))]
    (tmp_path / "tokens.yaml").write_text(text)
    tokens = api_tokens.Tokens.from_file(
        tmp_path / "tokens.yaml"
    )  # the example loads as the API reads it
    assert tokens.authenticate("replace-me") is None  # locked until an operator adds a token
