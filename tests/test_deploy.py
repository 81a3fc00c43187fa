"""deploy/ checked offline: every manifest against the Kubernetes schemas, CRDs in step with the
policy schema, and the example policies accepted by the CRDs' OpenAPI schemas."""

from __future__ import annotations

import pathlib
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from fleetgate import crds

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
