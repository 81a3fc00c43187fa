"""The document kinds and their field tables: one source for the loader and the JSON Schema. Pure.

Route vocabulary (matches, filters, backendRefs, traffic settings) is in `policies.kinds_routes`;
the prose reference for people is docs/policy-reference.md.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from policies.kinds_routes import (
    COOKIE_NAME,
    HEADER_NAME,
    HOSTNAME,
    HTTP_RULE,
    LABELS,
    NAME,
    NAMESPACE,
    PERCENT,
    POLICY_BACKEND_REF,
    POLICY_RULE,
    PORT,
    PRECISE_HOSTNAME,
    REF_FIELDS,
    SERVICE,
    SETTINGS_FIELDS,
    WEIGHT,
)
from policies.model import FLEETGATE_API, GATEWAY_API, GATEWAY_API_BETA
from policies.shapes import (
    Anything,
    Bool,
    Choice,
    Duration,
    Field,
    Int,
    ListOf,
    MapOf,
    Num,
    Obj,
    Str,
    Timestamp,
)

_ENDPOINT = r"(\[[0-9A-Fa-f:.]+\]|[0-9]{1,3}(\.[0-9]{1,3}){3}):[0-9]{1,5}"
STATUS_CODE = Int(100, 599)


def _endpoint(text: str) -> str | None:
    host, _, port = text.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f'must be "ip:port" with a valid IP address, got "{text}"'
    if not 1 <= int(port) <= 65535:
        return f'must have a port 1..65535, got "{text}"'
    return None


def _metadata(*, namespaced: bool) -> Obj:
    fields = {
        "name": Field(NAME, required=True),
        **({"namespace": Field(NAMESPACE, doc='Defaults to "default".')} if namespaced else {}),
        "labels": Field(LABELS),
        "annotations": Field(MapOf(values=Str())),
        "creationTimestamp": Field(Timestamp(), doc="Older routes win precedence ties."),
        "uid": Field(Str()),
        "resourceVersion": Field(Str()),
        "generation": Field(Int(0)),
        "finalizers": Field(ListOf(Str())),
        "ownerReferences": Field(Anything()),
        "managedFields": Field(Anything()),
    }
    notes = {} if namespaced else {"namespace": "this kind is cluster-scoped"}
    name = "ObjectMeta" if namespaced else "ClusterObjectMeta"
    return Obj(fields, name=name, notes=notes)


HEADER_VALUE = Obj(
    {"exact": Field(Str()), "regex": Field(Str())},
    name="StringMatch",
    choices=(Choice((("exact",), ("regex",))),),
)
HEADER_ROUTE = Obj(
    {
        "headerName": Field(HEADER_NAME),
        "headerValue": Field(HEADER_VALUE),
        "cookieName": Field(COOKIE_NAME),
        "cookieValue": Field(HEADER_VALUE),
    },
    name="HeaderRoute",
    choices=(Choice((("headerName", "headerValue"), ("cookieName", "cookieValue"))),),
)
RELEASE_BACKEND = Obj(
    {
        "backendRef": Field(
            Obj(
                {
                    **REF_FIELDS,
                    **{k: POLICY_BACKEND_REF.fields[k] for k in ("clusters", "clusterSelector")},
                },
                name="ReleaseBackendRef",
                choices=POLICY_BACKEND_REF.choices,
            ),
            required=True,
        )
    },
    name="ReleaseSide",
)
STEP = Obj(
    {
        "setWeight": Field(Int(0, 100), doc="Canary share in percent."),
        "pause": Field(
            Obj({"duration": Field(Duration())}, name="Pause", doc="{} waits for promote.")
        ),
        "setHeaderRoute": Field(
            Obj({"match": Field(ListOf(HEADER_ROUTE, 1, 1), required=True)}, name="SetHeaderRoute")
        ),
        "setMirror": Field(Obj({"percent": Field(PERCENT, required=True)}, name="SetMirror")),
        "analysis": Field(Obj({}, name="AnalysisStep", doc="Run spec.analysis as a gate.")),
    },
    name="CanaryStep",
    choices=(
        Choice((("setWeight",), ("pause",), ("setHeaderRoute",), ("setMirror",), ("analysis",))),
    ),
)
ANALYSIS = Obj(
    {
        "interval": Field(Duration()),
        "count": Field(Int(1)),
        "failureLimit": Field(Int(0)),
        "minRequests": Field(Int(0)),
        "successRate": Field(Obj({"min": Field(Num(0, 1), required=True)}, name="SuccessRate")),
        "latency": Field(Obj({"p99": Field(Duration(), required=True)}, name="Latency")),
        "maxSuccessRateDrop": Field(Num(0, 1)),
        "prometheus": Field(
            Obj(
                {"address": Field(Str(), required=True), "query": Field(Str(), required=True)},
                name="PrometheusQuery",
            )
        ),
    },
    name="Analysis",
)
RELEASE_SPEC = Obj(
    {
        "target": Field(NAME, required=True, doc="A route name in the same namespace."),
        "stable": Field(RELEASE_BACKEND, required=True),
        "canary": Field(RELEASE_BACKEND, required=True),
        "strategy": Field(
            Obj(
                {
                    "canary": Field(
                        Obj(
                            {
                                "steps": Field(ListOf(STEP, min_items=1), required=True),
                                "stickiness": Field(Bool(), doc="Keep a client on its side."),
                            },
                            name="CanaryStrategy",
                        )
                    ),
                    "blueGreen": Field(
                        Obj(
                            {
                                "previewHeader": Field(HEADER_ROUTE),
                                "previewHostname": Field(PRECISE_HOSTNAME),
                            },
                            name="BlueGreenStrategy",
                        )
                    ),
                },
                name="Strategy",
                choices=(Choice((("canary",), ("blueGreen",))),),
            ),
            required=True,
        ),
        "analysis": Field(ANALYSIS),
        "abort": Field(
            Obj(
                {
                    "rampSteps": Field(ListOf(Int(0, 100)), doc="Canary weights; [] = at once."),
                    "rampInterval": Field(Duration(), doc="Dwell on each ramp weight (10s)."),
                },
                name="Abort",
            )
        ),
    },
    name="ReleaseSpec",
)

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_NAME = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"


def _dns_name(name: str) -> str | None:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return f'must be a DNS name, not an IP address (list it under "endpoints"), got "{name}"'
    long = next((label for label in name.split(".") if len(label) > 63), None)
    if long is not None:
        return f'must have DNS labels of at most 63 characters, got one of {len(long)} in "{name}"'
    return None


DNS_NAME = Obj(
    {
        "hostname": Field(
            Str(pattern=_DNS_NAME, max_length=253, check=_dns_name, hint="a lower-case DNS name"),
            doc="Use the A and AAAA records of this name (with port).",
        ),
        "port": Field(PORT, doc="The port of every address the hostname has."),
        "srv": Field(
            Str(
                pattern=rf"_{_DNS_LABEL}\._{_DNS_LABEL}\.{_DNS_NAME}",
                max_length=253,
                check=_dns_name,
                hint='an SRV name like "_https._tcp.web.example.com"',
            ),
            doc="Use the SRV records of this name: their targets, ports and priorities.",
        ),
    },
    name="DnsName",
    doc="Endpoints from DNS, looked up again as their TTL runs out.",
    choices=(Choice((("srv",), ("hostname", "port"))),),
)
SERVICE_PORT = Obj(
    {
        "port": Field(PORT, required=True),
        "endpoints": Field(ListOf(Str(pattern=_ENDPOINT, check=_endpoint, hint='"ip:port"'))),
        "dns": Field(DNS_NAME, doc="Endpoints from DNS, besides or instead of the listed ones."),
    },
    name="ServicePort",
)
MEMBER_CLUSTER_SPEC = Obj(
    {
        "priority": Field(Int(0), doc="Failover tier; 0 is tried first."),
        "weight": Field(WEIGHT, doc="Capacity weight within its tier; defaults to 1."),
        "services": Field(
            ListOf(
                Obj(
                    {
                        "namespace": Field(NAMESPACE, doc='Defaults to "default".'),
                        "name": Field(SERVICE, required=True),
                        "ports": Field(ListOf(SERVICE_PORT, min_items=1), required=True),
                    },
                    name="StaticService",
                )
            )
        ),
        "kubeconfig": Field(Str(), doc="Discover Services through this cluster's API."),
        "tls": Field(
            Obj(
                {
                    "caFile": Field(Str()),
                    "certFile": Field(Str()),
                    "keyFile": Field(Str()),
                    "serverName": Field(PRECISE_HOSTNAME),
                    "insecureSkipVerify": Field(Bool()),
                },
                name="UpstreamTLS",
                choices=(Choice((("certFile", "keyFile"),), required=False),),
            )
        ),
        "healthCheck": Field(
            Obj(
                {
                    "path": Field(Str(pattern=r"/.*", hint='a path starting with "/"')),
                    "interval": Field(Duration(), doc="Between probes (5s)."),
                    "unhealthyInterval": Field(
                        Duration(),
                        doc="Between probes of an endpoint that is out; defaults to interval.",
                    ),
                    "timeout": Field(Duration()),
                    "jitterPercent": Field(PERCENT),
                    "unhealthyThreshold": Field(Int(1)),
                    "healthyThreshold": Field(Int(1)),
                    "expectedStatuses": Field(ListOf(STATUS_CODE, min_items=1)),
                    "hostname": Field(PRECISE_HOSTNAME),
                },
                name="HealthCheck",
            )
        ),
    },
    name="MemberClusterSpec",
)
TRAFFIC_POLICY_SPEC = Obj(
    {
        "hostnames": Field(ListOf(HOSTNAME, max_items=16), doc="Omitted: any host."),
        "rules": Field(ListOf(POLICY_RULE, min_items=1), required=True),
        **SETTINGS_FIELDS,
    },
    name="TrafficPolicySpec",
    notes={"parentRefs": "fleetgate is the gateway; TrafficPolicy has no parents"},
)
HTTP_ROUTE_SPEC = Obj(
    {
        "parentRefs": Field(Anything(), doc="Accepted and ignored: fleetgate is the gateway."),
        "hostnames": Field(ListOf(HOSTNAME, max_items=16)),
        "rules": Field(ListOf(HTTP_RULE, max_items=16)),
    },
    name="HTTPRouteSpec",
)
_GRANT_FROM = Obj(
    {
        "group": Field(Str(), required=True),
        "kind": Field(Str(), required=True),
        "namespace": Field(NAMESPACE, required=True),
    },
    name="ReferenceGrantFrom",
)
_GRANT_TO = Obj(
    {
        "group": Field(Str(enum=("", "core")), required=True),
        "kind": Field(Str(enum=("Service",)), required=True),
        "name": Field(SERVICE, doc="Omitted: every Service in the namespace."),
    },
    name="ReferenceGrantTo",
)
REFERENCE_GRANT_SPEC = Obj(
    {
        "from": Field(ListOf(_GRANT_FROM, min_items=1), required=True),
        "to": Field(ListOf(_GRANT_TO, min_items=1), required=True),
    },
    name="ReferenceGrantSpec",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    name: str
    api_versions: tuple[str, ...]  # the first is the one to write
    namespaced: bool
    spec: Obj

    @property
    def document(self) -> Obj:
        return Obj(
            {
                "apiVersion": Field(Str(enum=self.api_versions), required=True),
                "kind": Field(Str(enum=(self.name,)), required=True),
                "metadata": Field(_metadata(namespaced=self.namespaced), required=True),
                "spec": Field(self.spec, required=True),
                "status": Field(Anything(), doc="Written by the controller; ignored here."),
            },
            name=self.name,
        )


_RATE_LIMIT = SETTINGS_FIELDS["rateLimit"].shape
assert isinstance(_RATE_LIMIT, Obj)
# The gateway config file (`--gateway-config`): limits of the gateway process that the fleet
# administrator sets, next to the process flags rather than in the policies developers write.
# Not a policy kind: policy directories refuse it (policies.gatewayconfig reads it).
GATEWAY_CONFIG_SPEC = Obj(
    {
        "circuitBreaker": Field(
            Obj(
                {
                    "maxRequests": Field(
                        Int(1),
                        doc="Requests in flight to one backend; more get 503 circuit_open (1024).",
                    )
                },
                name="CircuitBreaker",
            )
        ),
        "namespaceQuotas": Field(
            ListOf(
                Obj(
                    {
                        "namespace": Field(NAMESPACE, required=True),
                        **_RATE_LIMIT.fields,
                    },
                    name="NamespaceQuota",
                    doc="Every route of the namespace together: 429 with Retry-After over it.",
                )
            )
        ),
    },
    name="GatewayConfigSpec",
)
GATEWAY_CONFIG = Obj(
    {
        "apiVersion": Field(Str(enum=(FLEETGATE_API,)), required=True),
        "kind": Field(Str(enum=("GatewayConfig",)), required=True),
        "metadata": Field(_metadata(namespaced=False), doc="Optional; only for people."),
        "spec": Field(GATEWAY_CONFIG_SPEC, required=True),
    },
    name="GatewayConfig",
)

KINDS = {
    kind.name: kind
    for kind in (
        Kind("MemberCluster", (FLEETGATE_API,), False, MEMBER_CLUSTER_SPEC),
        Kind("TrafficPolicy", (FLEETGATE_API,), True, TRAFFIC_POLICY_SPEC),
        Kind("HTTPRoute", (GATEWAY_API, GATEWAY_API_BETA), True, HTTP_ROUTE_SPEC),
        Kind("ReferenceGrant", (GATEWAY_API_BETA, GATEWAY_API), True, REFERENCE_GRANT_SPEC),
        Kind("Release", (FLEETGATE_API,), True, RELEASE_SPEC),
    )
}
