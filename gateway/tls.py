"""TLS at both ends: SNI-chosen listener certificates reloaded when their files change, and
client contexts for upstream TLS per member cluster.

I/O: reads certificate, key and CA files (listener certificates at start and whenever their
files' stat changes, which the gateway's tick polls; upstream contexts on the first connect
under each table) and logs refused reloads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
from collections.abc import Mapping, Sequence

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.settings import CertificateFiles
from policies.model import UpstreamTLS
from policies.table import RoutingTable

log = logging.getLogger(__name__)

ALPN = ("http/1.1",)  # the hot path speaks HTTP/1.1 only; an h2-only client gets no ALPN match
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2  # TLS 1.0/1.1 are deprecated (RFC 8996)

# A certificate pair that cannot be loaded: missing file, bad PEM, key not matching the chain.
LOAD_ERRORS = (OSError, ValueError)  # ssl.SSLError is an OSError


def server_context(files: CertificateFiles) -> ssl.SSLContext:
    """A server context for one certificate chain. Raises one of `LOAD_ERRORS`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.set_alpn_protocols(list(ALPN))
    ctx.load_cert_chain(files.cert_file, files.key_file)
    return ctx


def certificate_names(cert_file: str) -> tuple[str, ...]:
    """The DNS names the chain's first certificate is for: its subjectAltName DNS entries, or
    its common name when it has none (what clients that still read the CN would accept)."""
    with open(cert_file, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [str(n) for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(n.lower().rstrip(".") for n in names)


@dataclasses.dataclass(frozen=True, slots=True)
class CertificateSet:
    """The certificates of one listener, indexed by the names they hold. Replaced whole."""

    default: ssl.SSLContext  # no SNI, or a name no certificate holds
    exact: Mapping[str, ssl.SSLContext]
    wildcard: Mapping[str, ssl.SSLContext]  # "example.com" stands for "*.example.com"

    def pick(self, server_name: str | None) -> ssl.SSLContext:
        """Exact name first, then a wildcard one label deep (RFC 6125 §6.4.3), else default."""
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        ctx = self.exact.get(name)
        if ctx is None:
            _, dot, parent = name.partition(".")
            ctx = self.wildcard.get(parent) if dot else None
        return ctx if ctx is not None else self.default


def load_certificates(files: Sequence[CertificateFiles]) -> CertificateSet:
    """Load every pair; the first is the default and, for a name two certificates hold, the
    earlier one wins. Raises one of `LOAD_ERRORS` if any pair is broken (all or nothing)."""
    if not files:
        raise ValueError("a TLS listener needs at least one certificate")
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}
    contexts = []
    for pair in files:
        ctx = server_context(pair)
        contexts.append(ctx)
        for name in certificate_names(pair.cert_file):
            if name.startswith("*."):
                wildcard.setdefault(name[2:], ctx)
            else:
                exact.setdefault(name, ctx)
    return CertificateSet(contexts[0], exact, wildcard)


Stamp = tuple[tuple[int, int, int] | None, ...]


def _stamp(files: Sequence[CertificateFiles]) -> Stamp:
    """(inode, size, mtime) of every file: an atomic rename changes the inode, a rewrite the
    mtime. None for a file that cannot be stat'ed."""
    stamps: list[tuple[int, int, int] | None] = []
    for pair in files:
        for path in (pair.cert_file, pair.key_file):
            try:
                st = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


class ServerTLS:
    """The TLS side of one listener.

    `context` is what the listener is bound with; its `sni_callback` hands every handshake the
    context of the chosen certificate (OpenSSL calls it without SNI too, with None). A reload
    replaces `certificates` whole, so a new file serves new connections at once and handshakes
    already done keep theirs. A broken new file keeps the old certificates (logged once per
    change), so a half-written pair never takes a listener down.
    """

    def __init__(self, files: Sequence[CertificateFiles]) -> None:
        self.files = tuple(files)
        self._stamp = _stamp(self.files)
        self.certificates = load_certificates(self.files)  # a broken pair fails the start
        self._refused: Stamp | None = None
        self.reloads = 0  # certificate sets installed after the first
        self.context = server_context(self.files[0])
        self.context.sni_callback = self._select

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, _: object) -> None:
        ssl_object.context = self.certificates.pick(server_name)

    def refresh(self) -> bool:
        """Reload if any file changed since the last load; True when new certificates are in."""
        stamp = _stamp(self.files)
        if stamp == self._stamp or stamp == self._refused:
            return False
        try:
            certificates = load_certificates(self.files)
        except LOAD_ERRORS as exc:
            self._refused = stamp
            log.error("TLS certificates not reloaded (keeping the previous ones): %s", exc)
            return False
        self.certificates, self._stamp, self._refused = certificates, stamp, None
        self.reloads += 1
        log.info("TLS certificates reloaded files=%d", len(self.files))
        return True


def client_context(tls: UpstreamTLS) -> ssl.SSLContext:
    """A client context for a member cluster's endpoints. Raises one of `LOAD_ERRORS`.

    Without `ca_file` the system's trust store verifies; `insecure_skip_verify` checks neither
    chain nor name (still encrypted); `cert_file`/`key_file` is the gateway's certificate for
    upstreams that require one (mTLS).
    """
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.set_alpn_protocols(list(ALPN))
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


class UpstreamContexts:
    """Upstream TLS per member cluster under the live table.

    Contexts are built on first use and dropped with each table, so a reload re-reads the CA
    bundle and client certificate files; clusters with equal settings share one context.
    """

    __slots__ = ("_by_cluster", "_contexts")

    def __init__(self) -> None:
        self._by_cluster: dict[str, UpstreamTLS] = {}
        self._contexts: dict[UpstreamTLS, ssl.SSLContext] = {}

    def follow(self, table: RoutingTable) -> set[str]:
        """Take `table`'s settings; return the clusters whose upstream TLS changed."""
        wanted: dict[str, UpstreamTLS] = {}
        for backend in table.backends.values():
            for target in backend.targets:
                if target.tls is not None:
                    wanted.setdefault(target.cluster, target.tls)
        old = self._by_cluster
        changed = {c for c in wanted.keys() | old.keys() if wanted.get(c) != old.get(c)}
        self._by_cluster = wanted
        self._contexts = {}
        return changed

    def for_cluster(self, cluster: str, host: str) -> tuple[ssl.SSLContext, str] | None:
        """`(context, server_hostname)` to connect to `host` in `cluster`, or None for plain
        TCP. The name sent by SNI and verified is `server_name`, else the endpoint address
        (then the certificate must hold it as an IP subjectAltName). Raises `LOAD_ERRORS`."""
        tls = self._by_cluster.get(cluster)
        if tls is None:
            return None
        ctx = self._contexts.get(tls)
        if ctx is None:
            ctx = self._contexts[tls] = client_context(tls)
        return ctx, tls.server_name or host
