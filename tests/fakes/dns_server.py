"""A tiny authoritative DNS server for controller tests: UDP and TCP on one loopback port.

Built on dnspython's message API, so what the controller's resolver reads is real DNS wire format.
The test sets A, AAAA and SRV records and their TTLs while it runs, and can make the server fail:

* `fail("servfail")` answers SERVFAIL, `fail("nxdomain")` says the name does not exist,
  `fail("nodata")` answers NOERROR with no records, `fail("drop")` reads queries and never
  answers (the client times out); `heal()` undoes it. `name=` limits a failure to one name.
* `stop()` closes both sockets: queries then meet a closed port (ICMP port unreachable).
* `truncate_udp = True` answers every UDP query with TC set and no records, so the client has to
  ask again over TCP (RFC 7766); answers larger than the client's UDP size are truncated anyway.
* SRV answers carry the A/AAAA records of their targets in the additional section unless
  `srv_additional = False`, in which case the client has to look the targets up itself.

`queries` records every question as (name, type, "udp" | "tcp").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import struct
import typing
from collections.abc import Iterable
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Failure = Literal["servfail", "nxdomain", "nodata", "drop"]
_UDP_DEFAULT_SIZE = 512  # RFC 1035 §4.2.1, for queries without EDNS
_BIND_ATTEMPTS = 20


class FakeDnsServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.queries: list[tuple[str, str, str]] = []
        self.truncate_udp = False
        self.srv_additional = True
        self._records: dict[tuple[dns.name.Name, dns.rdatatype.RdataType], dns.rrset.RRset] = {}
        self._names: set[dns.name.Name] = set()  # owners of any record: others get NXDOMAIN
        self._failures: dict[dns.name.Name | None, Failure] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def nameserver(self) -> str:
        """The `address:port` to hand to the resolver under test."""
        return f"{self.host}:{self.port}"

    # -- records ---------------------------------------------------------------------------------

    def set_a(self, name: str, *addresses: str, ttl: int = 60) -> None:
        self._set(name, dns.rdatatype.A, addresses, ttl)

    def set_aaaa(self, name: str, *addresses: str, ttl: int = 60) -> None:
        self._set(name, dns.rdatatype.AAAA, addresses, ttl)

    def set_srv(self, name: str, *records: tuple[int, int, int, str], ttl: int = 60) -> None:
        """`records` are (priority, weight, port, target); target "." means "not here"."""
        texts = [f"{p} {w} {port} {_absolute(target)}" for p, w, port, target in records]
        self._set(name, dns.rdatatype.SRV, texts, ttl)

    def remove(self, name: str) -> None:
        """Forget every record of `name` (queries for it then get NXDOMAIN)."""
        absolute = _absolute(name)
        for key in [k for k in self._records if k[0] == absolute]:
            del self._records[key]
        self._names.discard(absolute)

    def _set(
        self, name: str, rdtype: dns.rdatatype.RdataType, texts: Iterable[str], ttl: int
    ) -> None:
        owner = _absolute(name)
        texts = list(texts)
        if not texts:
            self._records.pop((owner, rdtype), None)
            self._names = {name for name, _ in self._records}
            return
        rrset = dns.rrset.from_text_list(owner, ttl, dns.rdataclass.IN, rdtype, texts)
        self._records[(owner, rdtype)] = rrset
        self._names.add(owner)

    # -- failures ---------------------------------------------------------------------------------

    def fail(self, failure: Failure, *, name: str | None = None) -> None:
        self._failures[_absolute(name) if name is not None else None] = failure

    def heal(self, *, name: str | None = None) -> None:
        if name is None:
            self._failures.clear()
        else:
            self._failures.pop(_absolute(name), None)

    def asked(self, name: str, rdtype: str | None = None, transport: str | None = None) -> int:
        """How many questions for `name` (of `rdtype`, over `transport`) arrived so far."""
        text = _absolute(name).to_text()
        return sum(
            1
            for q_name, q_type, q_transport in self.queries
            if q_name == text and rdtype in (None, q_type) and transport in (None, q_transport)
        )

    # -- serving ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP on an ephemeral port and TCP on the same number (retried if it is taken)."""
        loop = asyncio.get_running_loop()
        for _ in range(_BIND_ATTEMPTS):
            transport, _protocol = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, self.port)
            )
            port: int = transport.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError as exc:
                transport.close()
                if exc.errno != errno.EADDRINUSE or self.port:
                    raise
                continue
            self._udp, self.port = transport, port
            return
        raise OSError(errno.EADDRINUSE, "no port free for both UDP and TCP")

    async def stop(self) -> None:
        """Close both sockets and every open TCP connection. `start()` binds the same port again."""
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            for writer in list(self._connections):
                writer.close()
            await self._tcp.wait_closed()
            self._tcp = None

    def answer(self, wire: bytes, transport: str) -> bytes | None:
        """The reply to one query in wire form, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not DNS: ignore it like a real server under attack would
        question = query.question[0] if query.question else None
        if question is not None:
            self.queries.append((question.name.to_text(), _type(question.rdtype), transport))
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if question is None:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        failure = self._failures.get(question.name, self._failures.get(None))
        if failure == "drop":
            return None
        if failure == "servfail":
            response.set_rcode(dns.rcode.SERVFAIL)
        elif failure == "nxdomain" or (failure is None and question.name not in self._names):
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif failure is None:
            self._fill(response, question.name, question.rdtype)
        if transport == "tcp":
            return response.to_wire()
        size = max(query.payload, _UDP_DEFAULT_SIZE) if query.edns >= 0 else _UDP_DEFAULT_SIZE
        if not self.truncate_udp:
            with contextlib.suppress(dns.exception.TooBig):
                return response.to_wire(max_size=size)
        response.answer.clear()
        response.additional.clear()
        response.flags |= dns.flags.TC
        return response.to_wire()

    def _fill(
        self, response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> None:
        rrset = self._records.get((name, rdtype))
        if rrset is None:
            return  # NOERROR, no data
        response.answer.append(rrset)
        if rdtype == dns.rdatatype.SRV and self.srv_additional:
            for target in {rdata.target for rdata in rrset}:
                for family in (dns.rdatatype.A, dns.rdatatype.AAAA):
                    extra = self._records.get((target, family))
                    if extra is not None:
                        response.additional.append(extra)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # RFC 1035 §4.2.2: each message is preceded by its length in two octets.
        self._connections.add(writer)
        try:
            while True:
                head = await reader.readexactly(2)
                wire = await reader.readexactly(struct.unpack("!H", head)[0])
                reply = self.answer(wire, "tcp")
                if reply is not None:
                    writer.write(struct.pack("!H", len(reply)) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: FakeDnsServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: asyncio's own datagram transport does not subclass the ABC.
        self._transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        reply = self._server.answer(data, "udp")
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


def _absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(name)  # relative to the root: "a.b" is "a.b."


def _type(rdtype: dns.rdatatype.RdataType) -> str:
    return dns.rdatatype.to_text(rdtype)
