"""TLS: SNI-chosen listener certificates, reload on file change, upstream TLS and mTLS per
member cluster. Certificates are made at test time by trustme."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from gateway import health
from gateway.settings import CertificateFiles, Listener
from gateway.tls import ServerTLS, UpstreamContexts
from policies.model import HealthCheck, UpstreamTLS
from policies.table import RoutingTable
from tests.conftest import eventually
from tests.fakes.upstream import upstream_app
from tests.gateway import tables, wire
from tests.gateway.conftest import EAST, EAST_2, StartGateway

ServeTLS = Callable[..., Awaitable[str]]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _files(tmp_path: Path, cert: trustme.LeafCert, name: str) -> CertificateFiles:
    chain, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    return CertificateFiles(str(chain), str(key))


def _tls_listener(*files: CertificateFiles) -> tuple[Listener, ...]:
    return (Listener("127.0.0.1", 0, certificates=files),)


async def _open(
    address: tuple[str, int], ca: trustme.CA, server_name: str | None
) -> tuple[wire.Conn, dict[str, object]]:
    """A TLS client connection (SNI `server_name`, none when None) and the peer certificate."""
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.check_hostname = server_name is not None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(*address, ssl=ctx, server_hostname=server_name or ""),
        wire.TIMEOUT_S,
    )
    peer = writer.get_extra_info("ssl_object").getpeercert()
    return wire.Conn(reader, writer), peer


def _names(peer: dict[str, object]) -> set[str]:
    return {value for kind, value in peer["subjectAltName"] if kind == "DNS"}  # type: ignore[attr-defined]


async def _served_names(gw_address: tuple[str, int], ca: trustme.CA, name: str | None) -> set[str]:
    conn, peer = await _open(gw_address, ca, name)
    await conn.close()
    return _names(peer)


@pytest.fixture
async def tls_upstream(ca: trustme.CA) -> AsyncIterator[ServeTLS]:
    """Start the echo app over TLS with a certificate from `ca` for `names`; "host:port"."""
    runners: list[web.AppRunner] = []

    async def start(
        name: str, host: str, names: tuple[str, ...], *, client_ca: trustme.CA | None = None
    ) -> str:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(ctx)
        if client_ca is not None:  # mTLS: a client certificate from `client_ca` is required
            client_ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        runner = web.AppRunner(upstream_app(name), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, 0, ssl_context=ctx).start()
        runners.append(runner)
        return f"{host}:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _secure(address: str, tls: UpstreamTLS) -> RoutingTable:
    cluster = tables.member("east", {tables.service(): [address]})
    return tables.table([dataclasses.replace(cluster, tls=tls)], [tables.rule(tables.ref())])


async def _get(gw_address: tuple[str, int]) -> wire.Response:
    conn = await wire.Conn.open(gw_address)
    response = await conn.request(wire.get("/api"))
    await conn.close()
    return response


# -- termination -------------------------------------------------------------------------------


async def test_sni_picks_the_certificate_and_no_sni_gets_the_default(
    gateway: StartGateway, ca: trustme.CA, tmp_path: Path
) -> None:
    shop = _files(tmp_path, ca.issue_cert("shop.test"), "shop")
    wild = _files(tmp_path, ca.issue_cert("*.books.test"), "books")
    gw = await gateway(tables.single("127.0.0.1:1"), listeners=_tls_listener(shop, wild))
    address = gw.addresses[0]
    assert await _served_names(address, ca, "shop.test") == {"shop.test"}
    assert await _served_names(address, ca, "api.books.test") == {"*.books.test"}
    assert await _served_names(address, ca, None) == {"shop.test"}  # no SNI: the first
    # an unknown name gets the default too (the client's own check would refuse it)
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(*address, ssl=ctx, server_hostname="other.test")


async def test_requests_over_tls_are_proxied_with_forwarded_proto_https(
    gateway: StartGateway,
    app_upstream: Callable[..., Awaitable[str]],
    ca: trustme.CA,
    tmp_path: Path,
) -> None:
    upstream = await app_upstream("east")
    shop = _files(tmp_path, ca.issue_cert("shop.test"), "shop")
    gw = await gateway(tables.single(upstream), listeners=_tls_listener(shop))
    conn, peer = await _open(gw.addresses[0], ca, "shop.test")
    first = await conn.request(wire.get("/a"))
    second = await conn.request(wire.get("/b"))  # keep-alive over the same TLS connection
    await conn.close()
    assert _names(peer) == {"shop.test"}
    assert first.status == second.status == 200
    seen = {k.lower(): v for k, v in json.loads(first.body)["headers"]}
    assert seen["x-forwarded-proto"] == "https"


async def test_replaced_certificate_files_serve_new_connections_without_restart(
    gateway: StartGateway, ca: trustme.CA, tmp_path: Path
) -> None:
    files = _files(tmp_path, ca.issue_cert("shop.test"), "shop")
    gw = await gateway(tables.single("127.0.0.1:1"), listeners=_tls_listener(files))
    address = gw.addresses[0]
    old_conn, old_peer = await _open(address, ca, "shop.test")
    _files(tmp_path, ca.issue_cert("shop.test", "www.shop.test"), "shop")  # same paths

    async def renewed() -> bool:
        return await _served_names(address, ca, "shop.test") == {"shop.test", "www.shop.test"}

    await eventually(renewed)
    # the connection opened before keeps its handshake and still works
    assert _names(old_peer) == {"shop.test"}
    response = await old_conn.request(wire.get("/"))
    await old_conn.close()
    assert response.status == 503  # nothing listens on the upstream address: answered anyway


def test_a_broken_new_file_keeps_the_previous_certificates(ca: trustme.CA, tmp_path: Path) -> None:
    files = _files(tmp_path, ca.issue_cert("shop.test"), "shop")
    listener = ServerTLS([files])
    before = listener.certificates
    Path(files.cert_file).write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    assert listener.refresh() is False
    assert listener.refresh() is False  # refused once per change, not retried every tick
    assert listener.certificates is before
    # a key that does not match the new chain is refused too
    other = ca.issue_cert("shop.test")
    Path(files.cert_file).write_bytes(b"".join(b.bytes() for b in other.cert_chain_pems))
    assert listener.refresh() is False
    assert listener.certificates is before
    other.private_key_pem.write_to_path(files.key_file)  # the pair is whole again
    assert listener.refresh() is True
    assert listener.certificates is not before
    assert listener.reloads == 1


async def test_plain_http_on_the_tls_port_is_closed_and_tls_still_works(
    gateway: StartGateway, ca: trustme.CA, tmp_path: Path
) -> None:
    shop = _files(tmp_path, ca.issue_cert("shop.test"), "shop")
    gw = await gateway(tables.single("127.0.0.1:1"), listeners=_tls_listener(shop))
    address = gw.addresses[0]
    plain = await wire.Conn.open(address)
    plain.writer.write(wire.get("/"))
    async with asyncio.timeout(wire.TIMEOUT_S):
        answer = await plain.reader.read()  # a TLS alert at most, then EOF
    await plain.close()
    assert b"HTTP/1" not in answer
    assert await _served_names(address, ca, "shop.test") == {"shop.test"}
    assert gw.counters.requests == 0


# -- upstream TLS ------------------------------------------------------------------------------


async def test_upstream_tls_verified_with_the_members_ca_and_server_name(
    gateway: StartGateway, tls_upstream: ServeTLS, ca: trustme.CA, tmp_path: Path
) -> None:
    upstream = await tls_upstream("east", EAST, ("east.shop.internal",))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = UpstreamTLS(ca_file=str(ca_file), server_name="east.shop.internal")
    gw = await gateway(_secure(upstream, tls))
    first, second = await _get(gw.addresses[0]), await _get(gw.addresses[0])
    assert first.status == second.status == 200
    assert first.header("x-upstream") == b"east"
    assert gw.counters.upstream_connects == 1  # the TLS connection was pooled and reused


async def test_upstream_tls_verifies_the_endpoint_address_without_a_server_name(
    gateway: StartGateway, tls_upstream: ServeTLS, ca: trustme.CA, tmp_path: Path
) -> None:
    upstream = await tls_upstream("east", EAST_2, (EAST_2,))  # an IP subjectAltName
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    gw = await gateway(_secure(upstream, UpstreamTLS(ca_file=str(ca_file))))
    assert (await _get(gw.addresses[0])).status == 200


async def test_upstream_with_a_certificate_from_another_ca_is_a_connect_failure(
    gateway: StartGateway, tls_upstream: ServeTLS, tmp_path: Path
) -> None:
    upstream = await tls_upstream("east", EAST, ("east.shop.internal",))
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    tls = UpstreamTLS(ca_file=str(stranger), server_name="east.shop.internal")
    gw = await gateway(_secure(upstream, tls))
    response = await _get(gw.addresses[0])
    assert response.status == 503
    assert response.header("x-gateway-reason") == b"upstream_connect_failed"
    assert gw.counters.upstream_connect_failed >= 1
    # insecure_skip_verify accepts it (encrypted, unauthenticated)
    skip = UpstreamTLS(insecure_skip_verify=True)
    gw2 = await gateway(_secure(upstream, skip))
    assert (await _get(gw2.addresses[0])).status == 200


async def test_mtls_upstream_accepts_the_gateways_client_certificate(
    gateway: StartGateway, tls_upstream: ServeTLS, ca: trustme.CA, tmp_path: Path
) -> None:
    clients = trustme.CA()
    upstream = await tls_upstream("east", EAST, ("east.shop.internal",), client_ca=clients)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    mine = _files(tmp_path, clients.issue_cert("gateway.fleet"), "client")
    tls = UpstreamTLS(
        ca_file=str(ca_file),
        cert_file=mine.cert_file,
        key_file=mine.key_file,
        server_name="east.shop.internal",
    )
    gw = await gateway(_secure(upstream, tls))
    response = await _get(gw.addresses[0])
    assert response.status == 200
    assert response.header("x-upstream") == b"east"
    # without the client certificate the upstream refuses the gateway
    anonymous = dataclasses.replace(tls, cert_file=None, key_file=None)
    gw2 = await gateway(_secure(upstream, anonymous))
    refused = await _get(gw2.addresses[0])
    assert refused.status in (502, 503)
    assert refused.header("x-gateway-reason") in (b"upstream_connect_failed", b"upstream_reset")


async def test_a_reload_that_turns_on_upstream_tls_stops_reusing_plain_connections(
    gateway: StartGateway,
    app_upstream: Callable[..., Awaitable[str]],
    tls_upstream: ServeTLS,
    ca: trustme.CA,
    tmp_path: Path,
) -> None:
    plain = await app_upstream("east")
    gw = await gateway(tables.single(plain))
    assert (await _get(gw.addresses[0])).status == 200
    assert gw.pools.idle_count() == 1
    secure = await tls_upstream("east-tls", EAST_2, ("east.shop.internal",))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    gw.swap(_secure(secure, UpstreamTLS(ca_file=str(ca_file), server_name="east.shop.internal")))
    assert gw.pools.idle_count() == 0  # the plain connection of cluster east is closed
    response = await _get(gw.addresses[0])
    assert response.header("x-upstream") == b"east-tls"
    assert gw.counters.upstream_connects == 2


async def test_health_probes_speak_tls_to_a_tls_member(
    tls_upstream: ServeTLS, ca: trustme.CA, tmp_path: Path
) -> None:
    upstream = await tls_upstream("east", EAST, ("east.shop.internal",))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    table = _secure(upstream, UpstreamTLS(ca_file=str(ca_file), server_name="east.shop.internal"))
    (target,) = next(iter(table.backends.values())).targets
    (endpoint,) = target.endpoints
    check = HealthCheck(path="/healthz", timeout_s=5.0)
    contexts = UpstreamContexts()
    contexts.follow(table)
    assert await health.probe(endpoint, check, contexts) == 200
    assert await health.probe(endpoint, check) is None  # plain HTTP to a TLS port: no answer
