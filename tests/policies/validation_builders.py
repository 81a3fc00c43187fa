"""Documents and helpers shared by the `policies.validation` tests: a two-cluster fleet, documents
of any kind around a spec, and the problems of a load as "field: message" lines."""

from __future__ import annotations

import textwrap

from policies import loading
from policies.model import Severity

FLEET = """\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: east, labels: {region: us-east}}
spec:
  services:
    - {namespace: shop, name: web, ports: [{port: 80, endpoints: ["127.0.1.1:8080"]}]}
    - {namespace: shop, name: web-v2, ports: [{port: 80, endpoints: ["127.0.1.1:8081"]}]}
    - {namespace: other, name: db, ports: [{port: 5432, endpoints: ["127.0.1.1:5432"]}]}
---
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: west, labels: {region: us-west}}
spec:
  priority: 1
  services:
    - {namespace: shop, name: web, ports: [{port: 80, endpoints: ["127.0.2.1:8080"]}]}
"""


def doc(kind: str, name: str, spec: str, *, namespace: str = "shop", extra: str = "") -> str:
    api = {
        "HTTPRoute": "gateway.networking.k8s.io/v1",
        "ReferenceGrant": "gateway.networking.k8s.io/v1beta1",
    }.get(kind, "fleetgate.io/v1alpha1")
    return (
        f"apiVersion: {api}\nkind: {kind}\n"
        f"metadata: {{name: {name}, namespace: {namespace}{extra}}}\nspec:\n"
        + textwrap.indent(textwrap.dedent(spec).rstrip("\n") + "\n", "  ")
    )


def rule_policy(rule: str, *, name: str = "web") -> str:
    """A TrafficPolicy with one rule (given as YAML for the rule's fields)."""
    body = textwrap.indent(textwrap.dedent(rule).rstrip("\n") + "\n", "    ")
    return doc("TrafficPolicy", name, "rules:\n  -\n" + body)


def load(*documents: str) -> loading.LoadResult:
    return loading.load_documents([("f.yaml", "---\n".join((FLEET, *documents)))])


def messages(result: loading.LoadResult, severity: Severity = Severity.ERROR) -> list[str]:
    return [f"{p.path}: {p.message}" for p in result.problems if p.severity is severity]
