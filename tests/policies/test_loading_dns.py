"""MemberCluster service ports naming DNS: the YAML form, its errors with positions, its schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml

from policies import loading, schema
from policies.model import DnsName

HEAD = """\
apiVersion: fleetgate.io/v1alpha1
kind: MemberCluster
metadata: {name: east}
spec:
  services:
    - namespace: shop
      name: web
      ports:
"""


def cluster(*ports: str) -> str:
    """A MemberCluster whose one service has `ports`, each given as the YAML of one list item."""
    return HEAD + "".join(f"        - {port}\n" for port in ports)


def load(text: str) -> loading.LoadResult:
    return loading.load_documents([("east.yaml", text)])


def test_hostname_and_srv_ports_load_besides_listed_endpoints() -> None:
    text = cluster(
        '{port: 80, endpoints: ["127.0.1.1:8080"], dns: {hostname: web.east.internal, port: 8080}}',
        "{port: 443, dns: {srv: _https._tcp.web.east.internal}}",
    )
    result = load(text)
    assert result.problems == ()
    (port_80, port_443) = result.policies.clusters[0].services[0].ports
    assert port_80.endpoints == ("127.0.1.1:8080",)
    assert port_80.dns == DnsName(hostname="web.east.internal", port=8080)
    assert port_443.endpoints == ()
    assert port_443.dns == DnsName(srv="_https._tcp.web.east.internal")
    assert str(port_80.dns) == "web.east.internal:8080"
    assert str(port_443.dns) == "SRV _https._tcp.web.east.internal"


def test_the_block_form_loads_too() -> None:
    text = HEAD + (
        "        - port: 80\n"
        "          dns:\n"
        "            hostname: web.east.internal\n"
        "            port: 8080\n"
    )
    result = load(text)
    assert result.ok
    assert result.policies.clusters[0].services[0].ports[0].dns == DnsName(
        hostname="web.east.internal", port=8080
    )


def test_a_port_without_dns_has_none() -> None:
    result = load(cluster('{port: 80, endpoints: ["127.0.1.1:8080"]}'))
    assert result.ok
    assert result.policies.clusters[0].services[0].ports[0].dns is None


# Line 9 is the first port; column 27 is where its `dns` mapping starts ("- {port: 80, dns: {").
P = "east.yaml:9"
DNS = "spec.services[0].ports[0].dns"


@pytest.mark.parametrize(
    ("dns", "expected"),
    [
        pytest.param(
            "{hostname: web.east.internal}",
            f'{P}:27: {DNS}: "hostname" needs "port" too',
            id="hostname-without-port",
        ),
        pytest.param(
            "{port: 8080}",
            f'{P}:27: {DNS}: "port" needs "hostname" too',
            id="port-without-hostname",
        ),
        pytest.param(
            "{srv: _http._tcp.web.east.internal, port: 8080}",
            f'{P}:63: {DNS}: give only one of "srv" or "hostname" with "port"',
            id="srv-with-port",
        ),
        pytest.param(
            "{hostname: web.east.internal, port: 80, srv: _http._tcp.web.east.internal}",
            f'{P}:28: {DNS}: give only one of "srv" or "hostname" with "port"',
            id="both",
        ),
        pytest.param(
            "{}",
            f'{P}:27: {DNS}: needs one of "srv" or "hostname" with "port"',
            id="neither",
        ),
        pytest.param(
            "{hostname: Web.East, port: 80}",
            f'{P}:38: {DNS}.hostname: must be a lower-case DNS name, got "Web.East"',
            id="upper-case",
        ),
        pytest.param(
            "{hostname: web_1.east, port: 80}",
            f'{P}:38: {DNS}.hostname: must be a lower-case DNS name, got "web_1.east"',
            id="underscore",
        ),
        pytest.param(
            "{hostname: 127.0.1.1, port: 80}",
            f"{P}:38: {DNS}.hostname: must be a DNS name, not an IP address "
            '(list it under "endpoints"), got "127.0.1.1"',
            id="ip-address",
        ),
        pytest.param(
            f"{{hostname: {'a' * 64}.east, port: 80}}",
            f"{P}:38: {DNS}.hostname: must have DNS labels of at most 63 characters, "
            f'got one of 64 in "{"a" * 64}.east"',
            id="long-label",
        ),
        pytest.param(
            "{hostname: web.east.internal, port: 0}",
            f"{P}:63: {DNS}.port: must be an integer 1..65535, got 0",
            id="port-zero",
        ),
        pytest.param(
            "{hostname: web.east.internal, port: 65536}",
            f"{P}:63: {DNS}.port: must be an integer 1..65535, got 65536",
            id="port-too-big",
        ),
        pytest.param(
            '{hostname: web.east.internal, port: "80"}',
            f'{P}:63: {DNS}.port: must be an integer 1..65535, got "80"',
            id="port-as-text",
        ),
        pytest.param(
            "{srv: web.east.internal}",
            f'{P}:33: {DNS}.srv: must be an SRV name like "_https._tcp.web.example.com", '
            'got "web.east.internal"',
            id="srv-without-service-labels",
        ),
        pytest.param(
            "{hostname: web.east.internal, port: 80, ttl: 5}",
            f'{P}:67: {DNS}.ttl: unknown field "ttl"',
            id="unknown-field",
        ),
        pytest.param(
            "{hostnme: web.east.internal, port: 80}",
            f'{P}:28: {DNS}.hostnme: unknown field "hostnme"; did you mean "hostname"?',
            id="misspelt",
        ),
    ],
)
def test_dns_errors_name_the_field_and_its_position(dns: str, expected: str) -> None:
    result = load(cluster(f"{{port: 80, dns: {dns}}}"))
    assert not result.ok
    assert result.policies.clusters == ()  # the bad document is left out
    assert expected in [str(p) for p in result.problems]


def test_dns_must_be_a_mapping() -> None:
    result = load(cluster("{port: 80, dns: web.east.internal}"))
    assert [str(p) for p in result.problems] == [
        f'{P}:27: {DNS}: must be a mapping, got "web.east.internal"'
    ]


# ---------------------------------------------------------------------------------------------
# The JSON Schema (and so the CRD) says the same


def member_cluster(dns: dict[str, Any]) -> Any:
    document = yaml.safe_load(cluster("{port: 80}"))
    document["spec"]["services"][0]["ports"][0]["dns"] = dns
    return document


@pytest.mark.parametrize(
    ("dns", "valid"),
    [
        pytest.param({"hostname": "web.east.internal", "port": 8080}, True, id="hostname"),
        pytest.param({"srv": "_https._tcp.web.east.internal"}, True, id="srv"),
        pytest.param({"hostname": "web.east.internal"}, False, id="hostname-without-port"),
        pytest.param({"srv": "_https._tcp.web.east.internal", "port": 1}, False, id="srv-port"),
        pytest.param({"port": 1}, False, id="port-alone"),
        pytest.param({"hostname": "Web", "port": 1}, False, id="upper-case"),
    ],
)
def test_the_json_schema_agrees_with_the_loader(dns: dict[str, Any], valid: bool) -> None:
    validator = jsonschema.Draft202012Validator(schema.json_schema("MemberCluster"))
    document = member_cluster(dns)
    assert validator.is_valid(document) is valid
    assert load(yaml.safe_dump(document)).ok is valid
