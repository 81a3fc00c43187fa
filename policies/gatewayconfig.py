"""The gateway config file: limits a gateway process enforces that belong to the fleet
administrator, not to the developers who write policies. YAML text → model, with every problem
at file:line:column. Pure: the caller reads the file.

```yaml
apiVersion: fleetgate.io/v1alpha1
kind: GatewayConfig
spec:
  circuitBreaker: {maxRequests: 1024}
  namespaceQuotas:
    - {namespace: shop, requestsPerSecond: 100, burst: 200, maxConcurrent: 50}
```

Why a file next to the process rather than a policy kind: the limits are the gateway's own
(each process enforces them alone, like Envoy's local rate limit and its cluster circuit
breakers, set in Envoy's bootstrap or Envoy Gateway's EnvoyProxy resource), the people who set
them are the ones who run the gateways, and a developer who can publish policies in a namespace
must not be able to raise that namespace's quota. In Kubernetes the file is a ConfigMap mounted
into the gateway Deployment. Field tables: `policies.kinds.GATEWAY_CONFIG`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import yaml

from policies.kinds import GATEWAY_CONFIG
from policies.limits import Thresholds
from policies.model import Origin, Problem, RateLimit
from policies.reading import Fields, Reader, TooLarge, origin_of

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclasses.dataclass(frozen=True, slots=True)
class GatewayConfig:
    # Per backend; only `max_requests` is configurable (the pool does not queue for connections).
    breaker: Thresholds = dataclasses.field(default_factory=Thresholds)
    # Per namespace, over every route in it; a policy's own `rateLimit` applies as well.
    namespace_quotas: Mapping[str, RateLimit] = dataclasses.field(default_factory=dict)


def load_gateway_config(file: str, text: str) -> tuple[GatewayConfig | None, tuple[Problem, ...]]:
    """The config in `text`, or None with every problem found (the file must hold exactly one
    GatewayConfig document)."""
    try:
        nodes = [
            node
            for node in yaml.compose_all(text, Loader=_LOADER)
            if not (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"))
        ]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = Origin(file, mark.line + 1, mark.column + 1) if mark else Origin(file, 1, 1)
        return None, (Problem(where, "", f"YAML syntax error: {exc}"),)
    if len(nodes) != 1:
        message = f"must hold exactly one GatewayConfig document, got {len(nodes)}"
        return None, (Problem(Origin(file, 1, 1), "", message),)
    reader = Reader(file)
    reader.positions[""] = origin_of(file, nodes[0])
    try:
        fields = reader.read(nodes[0], GATEWAY_CONFIG, "")
    except TooLarge:
        return None, (Problem(reader.start, "", "the document is too large (YAML aliases)"),)
    if reader.problems or not isinstance(fields, Fields):
        return None, tuple(reader.problems)
    spec = fields.obj("spec") or Fields("spec", reader.start, {})
    breaker = spec.obj("circuitBreaker")
    default = Thresholds()
    thresholds = Thresholds(
        max_requests=breaker.integer("maxRequests", default.max_requests)
        if breaker
        else default.max_requests
    )
    quotas: dict[str, RateLimit] = {}
    first: dict[str, int] = {}
    for i, quota in enumerate(spec.objs("namespaceQuotas")):
        namespace = quota.text("namespace")
        if namespace in first:
            earlier = f"namespaceQuotas[{first[namespace]}]"
            reader.report(
                f"spec.namespaceQuotas[{i}].namespace",
                f'namespace "{namespace}" already has a quota ({earlier})',
            )
            continue
        first[namespace] = i
        rps = quota.number("requestsPerSecond")
        quotas[namespace] = RateLimit(
            rps, quota.integer("burst", math.ceil(rps)), quota.integer("maxConcurrent", 0)
        )
    if reader.problems:
        return None, tuple(reader.problems)
    return GatewayConfig(breaker=thresholds, namespace_quotas=quotas), ()
