"""Field tables for routes: Gateway API HTTPRoute vocabulary and fleetgate traffic settings. Pure.

Gateway API names and limits are kept where they exist (HTTPRouteMatch, HTTPRouteFilter,
BackendRef, Duration); fleetgate's own fields follow the same camelCase style. `policies.kinds`
assembles the document kinds from these; the prose reference is docs/policy-reference.md.
"""

from __future__ import annotations

import ipaddress

from policies.shapes import (
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
    Variant,
)

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
RETRY_ON = ("connect-failure", "reset", "gateway-error", "retriable-status-codes")
MAX_WEIGHT = 1_000_000
MULTICLUSTER_GROUP = "multicluster.x-k8s.io"

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = rf"{_LABEL}(\.{_LABEL})*"
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_HEADER_NAME = r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+"


def _not_an_ip(name: str) -> str | None:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return None
    return f'must be a DNS name, not an IP address, got "{name}"'


NAME = Str(pattern=_SUBDOMAIN, max_length=253, hint="a lower-case DNS subdomain name")
NAMESPACE = Str(pattern=_LABEL, max_length=63, hint="a lower-case DNS label")
SERVICE = Str(pattern=r"[a-z]([-a-z0-9]*[a-z0-9])?", max_length=63, hint="a Service name")
PORT = Int(1, 65535)
WEIGHT = Int(0, MAX_WEIGHT)
PERCENT = Num(0, 100)
HEADER_NAME = Str(pattern=_HEADER_NAME, max_length=256, hint="an HTTP header name")
COOKIE_NAME = Str(pattern=_HEADER_NAME, hint="a cookie name")
HOSTNAME = Str(
    pattern=rf"(\*\.)?{_SUBDOMAIN}",
    max_length=253,
    check=_not_an_ip,
    hint='a lower-case DNS name, optionally starting with "*."',
)
PRECISE_HOSTNAME = Str(
    pattern=_SUBDOMAIN, max_length=253, check=_not_an_ip, hint="a lower-case DNS name"
)
LABELS = MapOf(
    values=Str(pattern=rf"({_LABEL_NAME})?", max_length=63, hint="a label value"),
    key=Str(pattern=rf"({_SUBDOMAIN}/)?{_LABEL_NAME}", hint="a label key"),
)


# ---------------------------------------------------------------------------------------------
# Gateway API HTTPRoute vocabulary

_VALUE_MATCH = {
    "type": Field(Str(enum=("Exact", "RegularExpression")), doc="Defaults to Exact."),
    "value": Field(Str(max_length=4096), required=True),
}
HEADER_MATCH = Obj(
    {"name": Field(HEADER_NAME, required=True), **_VALUE_MATCH}, name="HTTPHeaderMatch"
)
QUERY_MATCH = Obj(
    {"name": Field(HEADER_NAME, required=True), **_VALUE_MATCH}, name="HTTPQueryParamMatch"
)
PATH_MATCH = Obj(
    {
        "type": Field(Str(enum=("Exact", "PathPrefix", "RegularExpression"))),
        "value": Field(Str(max_length=1024), doc='Defaults to "/".'),
    },
    name="HTTPPathMatch",
)
MATCH = Obj(
    {
        "path": Field(PATH_MATCH, doc="Defaults to PathPrefix /."),
        "headers": Field(ListOf(HEADER_MATCH, max_items=16)),
        "queryParams": Field(ListOf(QUERY_MATCH, max_items=16)),
        "method": Field(Str(enum=METHODS)),
    },
    name="HTTPRouteMatch",
    doc="Conditions ANDed together; a rule's matches are ORed.",
)

_HEADER_VALUE = Obj(
    {"name": Field(HEADER_NAME, required=True), "value": Field(Str(), required=True)},
    name="HTTPHeader",
)
HEADER_FILTER = Obj(
    {
        "set": Field(ListOf(_HEADER_VALUE, max_items=16)),
        "add": Field(ListOf(_HEADER_VALUE, max_items=16)),
        "remove": Field(ListOf(HEADER_NAME, max_items=16)),
    },
    name="HTTPHeaderFilter",
)
PATH_MODIFIER = Obj(
    {
        "type": Field(Str(enum=("ReplaceFullPath", "ReplacePrefixMatch")), required=True),
        "replaceFullPath": Field(Str(max_length=1024)),
        "replacePrefixMatch": Field(Str(max_length=1024)),
    },
    name="HTTPPathModifier",
    discriminator="type",
    variants={
        "ReplaceFullPath": Variant(required=("replaceFullPath",)),
        "ReplacePrefixMatch": Variant(required=("replacePrefixMatch",)),
    },
)
REDIRECT = Obj(
    {
        "scheme": Field(Str(enum=("http", "https"))),
        "hostname": Field(PRECISE_HOSTNAME),
        "path": Field(PATH_MODIFIER),
        "port": Field(PORT),
        "statusCode": Field(Int(choices=REDIRECT_STATUSES), doc="Defaults to 302."),
    },
    name="HTTPRequestRedirectFilter",
)
REWRITE = Obj(
    {"hostname": Field(PRECISE_HOSTNAME), "path": Field(PATH_MODIFIER)},
    name="HTTPURLRewriteFilter",
)
REF_FIELDS = {
    "group": Field(Str(enum=("", "core", MULTICLUSTER_GROUP)), doc='"" for Service.'),
    "kind": Field(Str(enum=("Service", "ServiceImport")), doc="Defaults to Service."),
    "name": Field(SERVICE, required=True),
    "namespace": Field(NAMESPACE, doc="Defaults to the route's namespace."),
    "port": Field(PORT, required=True),
}
MIRROR = Obj(
    {
        "backendRef": Field(Obj(REF_FIELDS, name="BackendObjectReference"), required=True),
        "percent": Field(Int(0, 100)),
        "fraction": Field(
            Obj(
                {
                    "numerator": Field(Int(0), required=True),
                    "denominator": Field(Int(1), doc="Defaults to 100."),
                },
                name="Fraction",
            )
        ),
    },
    name="HTTPRequestMirrorFilter",
    choices=(Choice((("percent",), ("fraction",)), required=False),),
)
FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "RequestMirror": "requestMirror",
}
FILTER = Obj(
    {
        "type": Field(Str(enum=tuple(FILTER_FIELDS)), required=True),
        "requestHeaderModifier": Field(HEADER_FILTER),
        "responseHeaderModifier": Field(HEADER_FILTER),
        "requestRedirect": Field(REDIRECT),
        "urlRewrite": Field(REWRITE),
        "requestMirror": Field(MIRROR),
    },
    name="HTTPRouteFilter",
    discriminator="type",
    variants={kind: Variant(required=(field,)) for kind, field in FILTER_FIELDS.items()},
)

_EXTENSION = "a fleetgate extension: use a TrafficPolicy for it"
HTTP_BACKEND_REF = Obj(
    {
        **REF_FIELDS,
        "weight": Field(WEIGHT, doc="Relative share; defaults to 1, 0 = no traffic."),
        "filters": Field(ListOf(FILTER)),
    },
    name="HTTPBackendRef",
    notes={"clusters": _EXTENSION, "clusterSelector": _EXTENSION},
)
CLUSTER_WEIGHT = Obj(
    {
        "name": Field(NAME, required=True, doc="A MemberCluster name."),
        "weight": Field(WEIGHT, doc="Share within its priority tier; defaults to 1."),
        "priority": Field(Int(0), doc="Failover tier (lower first); defaults to the cluster's."),
    },
    name="ClusterWeight",
)
POLICY_BACKEND_REF = Obj(
    {
        **HTTP_BACKEND_REF.fields,
        "clusters": Field(ListOf(CLUSTER_WEIGHT, min_items=1)),
        "clusterSelector": Field(
            Obj({"matchLabels": Field(LABELS, required=True)}, name="ClusterSelector")
        ),
    },
    name="PolicyBackendRef",
    doc="Without clusters or clusterSelector: every member cluster that has the service.",
    choices=(Choice((("clusters",), ("clusterSelector",)), required=False),),
)

# ---------------------------------------------------------------------------------------------
# fleetgate traffic settings (policy level and rule level)

GATEWAY_TIMEOUTS = {
    "request": Field(Duration(), doc="Whole client transaction; 0s disables."),
    "backendRequest": Field(Duration(), doc="One try against a backend."),
}
TIMEOUTS = Obj(
    {
        **GATEWAY_TIMEOUTS,
        "connect": Field(Duration()),
        "idle": Field(Duration(), doc="No bytes either way for this long ends the stream."),
    },
    name="Timeouts",
)
RETRY = Obj(
    {
        "attempts": Field(Int(0, 10), doc="Retries, not tries."),
        "retryOn": Field(ListOf(Str(enum=RETRY_ON))),
        "codes": Field(ListOf(Int(400, 599))),
        "backoff": Field(Duration()),
        "maxBackoff": Field(Duration()),
        "perTryTimeout": Field(Duration()),
        "allowNonIdempotent": Field(Bool()),
        "budgetPercent": Field(PERCENT),
        "minRetryConcurrency": Field(Int(0)),
        "maxBodyBytes": Field(Int(0)),
    },
    name="Retry",
)
SETTINGS_FIELDS = {
    "loadBalancer": Field(
        Obj(
            {"type": Field(Str(enum=("LeastRequest", "RoundRobin", "RingHash")), required=True)},
            name="LoadBalancer",
        )
    ),
    "sessionAffinity": Field(
        Obj(
            {
                "type": Field(Str(enum=("Cookie", "Header")), required=True),
                "cookieName": Field(COOKIE_NAME),
                "headerName": Field(HEADER_NAME),
                "ttl": Field(Duration(), doc="Cookie Max-Age; omit for a session cookie."),
            },
            name="SessionAffinity",
            discriminator="type",
            variants={
                "Cookie": Variant(required=("cookieName",), optional=("ttl",)),
                "Header": Variant(required=("headerName",)),
            },
        )
    ),
    "timeouts": Field(TIMEOUTS),
    "retry": Field(RETRY),
    "outlierDetection": Field(
        Obj(
            {
                "consecutiveErrors": Field(Int(1)),
                "interval": Field(Duration()),
                "baseEjectionTime": Field(Duration()),
                "maxEjectionTime": Field(Duration()),
                "maxEjectionPercent": Field(PERCENT),
            },
            name="OutlierDetection",
        )
    ),
    "rateLimit": Field(
        Obj(
            {
                "requestsPerSecond": Field(Num(0, exclusive_minimum=True), required=True),
                "burst": Field(Int(1), doc="Defaults to requestsPerSecond rounded up."),
                "maxConcurrent": Field(Int(0), doc="0 = unlimited."),
            },
            name="RateLimit",
        )
    ),
}

# ---------------------------------------------------------------------------------------------
# Kinds

RULE_FIELDS = {
    "name": Field(NAME),
    "matches": Field(ListOf(MATCH, max_items=64), doc="Omitted: match every request."),
    "filters": Field(ListOf(FILTER, max_items=16)),
}
POLICY_RULE = Obj(
    {
        **RULE_FIELDS,
        "backendRefs": Field(ListOf(POLICY_BACKEND_REF, max_items=16)),
        **SETTINGS_FIELDS,
    },
    name="TrafficPolicyRule",
    doc="Traffic settings here override the policy's, field by field.",
)
HTTP_RULE = Obj(
    {
        **RULE_FIELDS,
        "backendRefs": Field(ListOf(HTTP_BACKEND_REF, max_items=16)),
        "timeouts": Field(Obj(GATEWAY_TIMEOUTS, name="HTTPRouteTimeouts")),
        "retry": Field(
            Obj(
                {
                    "attempts": Field(Int(0, 10)),
                    "codes": Field(ListOf(Int(400, 599))),
                    "backoff": Field(Duration()),
                },
                name="HTTPRouteRetry",
            )
        ),
    },
    name="HTTPRouteRule",
    notes={k: _EXTENSION for k in SETTINGS_FIELDS if k not in ("timeouts", "retry")},
)
