"""TLS flags: `fleetgate run --tls-listen --tls-cert --tls-key` serves HTTPS by SNI as a real
process, with one worker or several; unpaired or orphan flags are refused before anything
binds."""

from __future__ import annotations

import argparse
import re
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme

from gateway import replica
from gateway.settings import CertificateFiles
from tests.fakes.upstream import RawUpstream
from tests.running import FleetgateProcess, policy_text

TLS_BANNER = re.compile(r"listening on http://\S+?, https://(\S+?)(?:,| )")


def _write(tmp_path: Path, cert: trustme.LeafCert, name: str) -> tuple[str, str]:
    chain, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    return str(chain), str(key)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_run_serves_https_with_the_certificate_chosen_by_sni(
    tmp_path: Path, workers: str
) -> None:
    ca = trustme.CA()
    shop_cert, shop_key = _write(tmp_path, ca.issue_cert("shop.test"), "shop")
    other_cert, other_key = _write(tmp_path, ca.issue_cert("other.test"), "other")
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\neast"
    east = await RawUpstream(lambda request: ok, "127.0.1.1").start()
    west = await RawUpstream(lambda request: ok, "127.0.2.1").start()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "fleet.yaml").write_text(
        policy_text(east=east.address, west=west.address, edit=1, weights=(1, 0))
    )
    run = FleetgateProcess(
        ["run", "-c", str(policies), "--listen", "127.0.0.1:0", "--admin", "none",
         "--tls-listen", "127.0.0.1:0",
         "--tls-cert", other_cert, "--tls-key", other_key,
         "--tls-cert", shop_cert, "--tls-key", shop_key, "--workers", workers],
        tmp_path / "run.log",
    )  # fmt: skip
    try:
        await run.start(banner=TLS_BANNER)
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        # SNI "shop.test", checked against the certificate served: the default (first) pair is
        # other.test's, so an answer at all shows the SNI choice.
        host = run.listen.rsplit(":", 1)[0]
        url = f"https://{run.listen}/"
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as client,
            client.get(url, server_hostname="shop.test", headers={"Host": "shop.test"}) as resp,
        ):
            body = await resp.text()
            status = resp.status
    finally:
        await run.close()
        await east.close()
        await west.close()
    assert host == "127.0.0.1"
    assert status == 200
    assert body == "east"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    replica.add_tls_arguments(parser)
    return parser.parse_args(list(argv))


def test_tls_flags_pair_up_in_order_and_the_first_is_the_default() -> None:
    args = _parse("--tls-listen", "0.0.0.0:8443", "--tls-cert", "a.pem", "--tls-key", "a.key",
                  "--tls-cert", "b.pem", "--tls-key", "b.key")  # fmt: skip
    plain, secure = replica.listeners_from(args, ("127.0.0.1", 8080))
    assert (plain.host, plain.port, plain.certificates) == ("127.0.0.1", 8080, ())
    assert (secure.host, secure.port, secure.scheme) == ("0.0.0.0", 8443, "https")
    assert secure.certificates == (
        CertificateFiles("a.pem", "a.key"),
        CertificateFiles("b.pem", "b.key"),
    )
    assert replica.listeners_from(_parse(), ("127.0.0.1", 8080))[1:] == ()


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (("--tls-listen", "127.0.0.1:8443"), "needs at least one"),
        (("--tls-cert", "a.pem", "--tls-key", "a.key"), "need --tls-listen"),
        (("--tls-listen", "127.0.0.1:8443", "--tls-cert", "a.pem"), "in pairs"),
    ],
)
def test_incomplete_tls_flags_are_refused(argv: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        replica.listeners_from(_parse(*argv), ("127.0.0.1", 8080))
