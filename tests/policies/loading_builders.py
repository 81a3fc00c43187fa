"""Documents and helpers shared by the `policies.loading` tests: a MemberCluster, a TrafficPolicy
around a spec, and a load that reports problems as the CLI prints them."""

from __future__ import annotations

import textwrap
from pathlib import Path

from policies import loading

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "fleet"

CLUSTER = """\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: east, labels: {region: us-east}}
spec:
  services:
    - namespace: shop
      name: web
      ports:
        - port: 80
          endpoints: ["127.0.1.1:8080"]
"""


def load(*texts: str, file: str = "p.yaml") -> loading.LoadResult:
    return loading.load_documents([(file, textwrap.dedent(t)) for t in texts])


def lines(result: loading.LoadResult) -> list[str]:
    return [str(p) for p in result.problems]


def policy(spec: str, *, name: str = "web", namespace: str = "shop") -> str:
    head = f"""\
apiVersion: fleetgate.io/v1alpha1
kind: TrafficPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
"""
    return head + textwrap.indent(textwrap.dedent(spec).rstrip("\n") + "\n", "  ")


def examples() -> list[tuple[str, str]]:
    return [(str(p), p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]
