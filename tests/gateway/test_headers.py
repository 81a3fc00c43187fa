"""Pure header work: hop-by-hop rules, Host parsing, local replies, modifiers on bytes."""

from __future__ import annotations

import pytest

from gateway import headers as h
from gateway.routing import HeaderView
from policies.model import HeaderModifier


def test_connection_tokens_name_extra_hop_by_hop_headers() -> None:
    tokens = h.connection_tokens([b"keep-alive, X-Foo", b" Upgrade ,,close", b"x-BAR"])
    assert tokens == {b"keep-alive", b"x-foo", b"upgrade", b"close", b"x-bar"}
    assert h.named_by_connection(tokens) == {b"x-foo", b"x-bar"}


def test_drop_named_compares_case_insensitively_and_keeps_order() -> None:
    lines = h.flatten([(b"X-Foo", b"1"), (b"Accept", b"*/*"), (b"x-foo", b"2"), (b"Via", b"a")])
    assert h.pairs(h.drop_named(lines, {b"x-foo"})) == [(b"Accept", b"*/*"), (b"Via", b"a")]


def test_flat_header_lines_join_into_wire_form() -> None:
    lines = h.flatten([(b"A", b"1"), (b"b", b"2")])
    assert b"".join(lines) == b"A: 1\r\nb: 2\r\n"


@pytest.mark.parametrize(
    ("raw", "host"),
    [
        pytest.param(b"Shop.Test", "shop.test", id="case"),
        pytest.param(b"shop.test:8080", "shop.test", id="port"),
        pytest.param(b"[::1]:8080", "[::1]", id="ipv6-port"),
        pytest.param(b"[::1]", "[::1]", id="ipv6"),
        pytest.param(b" shop.test ", "shop.test", id="spaces"),
    ],
)
def test_routing_host(raw: bytes, host: str) -> None:
    assert h.host_of(raw) == host


def test_local_reply_is_complete_and_says_why() -> None:
    reply = h.local_reply(503, "no_healthy_backend", close=True, request_id=b"rid-1")
    head, body = reply.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nx-gateway-reason: no_healthy_backend" in head
    assert b"\r\nx-request-id: rid-1" in head
    assert b"\r\nconnection: close" in head
    assert b"\r\ncontent-length: %d" % len(body) in head
    assert body == b"no_healthy_backend\n"


def test_local_reply_to_head_has_no_body() -> None:
    reply = h.local_reply(404, "no_route", close=False, head=True)
    assert reply.endswith(b"\r\n\r\n")
    assert b"content-length: 9" in reply


def test_modifiers_on_bytes_keep_every_other_byte() -> None:
    lines = h.flatten([(b"X-Raw", b"caf\xe9"), (b"X-Env", b"dev")])
    edited = h.apply_modifiers(lines, [HeaderModifier(set=(("x-env", "prod"),))])
    assert h.pairs(edited) == [(b"X-Raw", b"caf\xe9"), (b"x-env", b"prod")]


def test_status_lines_keep_the_upstream_phrase() -> None:
    assert h.status_line(200, b"OK") == b"HTTP/1.1 200 OK\r\n"
    assert h.status_line(200, b"Fine") == b"HTTP/1.1 200 Fine\r\n"


def test_header_view_joins_repeats_and_lower_cases_names() -> None:
    lines = h.flatten([(b"X-Tag", b"a"), (b"x-tag", b"b"), (b"Accept", b"*/*")])
    view = HeaderView(lines, b"Shop.Test")
    assert dict(view) == {"host": "Shop.Test", "x-tag": "a,b", "accept": "*/*"}
    assert "x-tag" in view
    assert len(view) == 3
