"""DNS endpoints, the lookups: one name → its records and TTL, through dnspython's asyncio
resolver. Network I/O: DNS over UDP (TCP when an answer is truncated); reading /etc/resolv.conf.

Each lookup (both address families, the TCP retry, SRV targets) is bounded by `timeout_s`
through dnspython's `lifetime`, never by cancelling it: under uvloop, cancelling
`create_datagram_endpoint` while it opens — which dnspython does for every query — leaks the UDP
socket. Every failure becomes `LookupFailed` with a message fit for the status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from dns.rdtypes.IN.SRV import SRV

from controller.dns_state import DnsSettings, Record, parse_nameserver
from policies.model import DnsName

log = logging.getLogger(__name__)

_UDP_PAYLOAD = 1232  # EDNS buffer size the DNS flag day 2020 settled on: no IP fragmentation


class LookupFailed(Exception):
    """A lookup gave no usable answer; the message says why."""


class Lookups:
    """Looks names up with one resolver; `await Lookups.create(settings)` builds it."""

    def __init__(self, settings: DnsSettings, resolver: dns.asyncresolver.Resolver) -> None:
        self.settings = settings
        self._resolver = resolver

    @classmethod
    async def create(cls, settings: DnsSettings) -> Lookups:
        if settings.nameserver is None:
            try:
                # Reads /etc/resolv.conf: file I/O, so off the event loop.
                resolver = await asyncio.to_thread(dns.asyncresolver.Resolver)
            except dns.resolver.NoResolverConfiguration as exc:
                # Not fatal: a fleet without DNS names needs none, and with names every lookup
                # fails ("no nameservers"), which their status shows.
                log.warning("dns: no system resolver configuration: %s", exc)
                resolver = dns.asyncresolver.Resolver(configure=False)
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            address, port = parse_nameserver(settings.nameserver)
            resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port)]
        resolver.timeout = resolver.lifetime = settings.timeout_s
        resolver.use_edns(0, 0, _UDP_PAYLOAD)
        resolver.cache = None  # refreshing by TTL is the caller's job
        return cls(settings, resolver)

    async def lookup(self, name: DnsName) -> tuple[tuple[Record, ...], float]:
        """The records and TTL of `name`; raises `LookupFailed`."""
        deadline = time.monotonic() + self.settings.timeout_s
        try:
            if name.srv is not None:
                return await self._srv(dns.name.from_text(name.srv), deadline)
            assert name.hostname is not None  # policies.loading checked: hostname + port
            assert name.port is not None
            addresses, ttl = await self._addresses(dns.name.from_text(name.hostname), deadline)
            return tuple(Record(0, 0, a, name.port) for a in sorted(addresses)), ttl
        except dns.exception.Timeout:
            raise LookupFailed(f"no answer within {self.settings.timeout_s:g}s") from None
        except dns.resolver.NXDOMAIN:
            raise LookupFailed("no such name (NXDOMAIN)") from None
        except dns.resolver.NoAnswer:
            raise LookupFailed("the name has no records of the type asked for") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise LookupFailed(_first_line(str(exc) or type(exc).__name__)) from None

    def _lifetime(self, deadline: float) -> float:
        """What is left of one lookup's `timeout_s`, for dnspython's `lifetime`."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise LookupFailed(f"no answer within {self.settings.timeout_s:g}s")
        return left

    async def _addresses(self, host: dns.name.Name, deadline: float) -> tuple[set[str], float]:
        lifetime = self._lifetime(deadline)
        answers = await self._resolver.resolve_name(host, search=False, lifetime=lifetime)
        ttls = [a.chaining_result.minimum_ttl for a in answers.values() if a.rrset is not None]
        return set(answers.addresses()), float(min(ttls, default=0))

    async def _srv(self, srv: dns.name.Name, deadline: float) -> tuple[tuple[Record, ...], float]:
        lifetime = self._lifetime(deadline)
        answer = await self._resolver.resolve(srv, "SRV", search=False, lifetime=lifetime)
        ttl = float(answer.chaining_result.minimum_ttl)
        rdatas = [r for r in answer if isinstance(r, SRV)]
        if len(rdatas) == 1 and rdatas[0].target == dns.name.root:
            return (), ttl  # RFC 2782: "decidedly not available at this domain"
        extra = _additional(answer.response)
        resolved: dict[dns.name.Name, tuple[set[str], float]] = {}
        missing: list[str] = []
        records: list[Record] = []
        for rdata in rdatas:
            target = rdata.target
            if target == dns.name.root:
                continue
            if target not in resolved:
                if target in extra:
                    resolved[target] = extra[target]
                else:
                    try:
                        resolved[target] = await self._addresses(target, deadline)
                    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                        missing.append(target.to_text())
                        resolved[target] = (set(), ttl)
            addresses, target_ttl = resolved[target]
            if addresses:
                ttl = min(ttl, target_ttl)
            records.extend(Record(rdata.priority, rdata.weight, a, rdata.port) for a in addresses)
        if not records:
            raise LookupFailed(f"no SRV target has an address: {', '.join(missing)}")
        return tuple(sorted(set(records), key=_srv_order)), ttl


def _additional(response: dns.message.Message) -> Mapping[dns.name.Name, tuple[set[str], float]]:
    """A/AAAA records the server added to an SRV answer (RFC 2782 suggests it), by owner name."""
    found: dict[dns.name.Name, tuple[set[str], float]] = {}
    for rrset in response.additional:
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            addresses, ttl = found.get(rrset.name, (set(), float(rrset.ttl)))
            found[rrset.name] = (addresses | {r.address for r in rrset}, min(ttl, rrset.ttl))
    return found


def _srv_order(record: Record) -> tuple[int, int, str, int]:
    """RFC 2782 reading order: lowest priority first, then the heaviest weight."""
    return record.priority, -record.weight, record.host, record.port


def _first_line(text: str) -> str:
    return text.splitlines()[0][:300] if text else text
