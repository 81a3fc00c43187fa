"""DNS endpoints: real lookups through dnspython against a fake authoritative server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.dns import (
    DnsEndpoints,
    DnsNameStatus,
    DnsSettings,
    NameCondition,
    NameState,
    Record,
    parse_nameserver,
    refresh_delay,
    retry_delay,
)
from controller.publishing import Publisher
from controller.reconcile import Reconciler, ReconcileSettings
from policies.model import (
    BackendRef,
    DnsName,
    Match,
    MemberCluster,
    PolicySet,
    Route,
    RouteKind,
    Rule,
    ServicePort,
    ServiceRef,
    StaticService,
)
from policies.table import Endpoint, Inventory, RoutingTable
from tests.conftest import eventually
from tests.fakes.dns_server import FakeDnsServer

WEB = ServiceRef("shop", "web", 80)
ZONE = {"topology.kubernetes.io/zone": "east-1a"}


@pytest.fixture
async def server() -> AsyncIterator[FakeDnsServer]:
    fake = FakeDnsServer()
    await fake.start()
    yield fake
    await fake.stop()


def fast(server: FakeDnsServer, **changes: Any) -> DnsSettings:
    """Tiny timers: every wait below is a poll on a condition; these only bound how long."""
    settings = DnsSettings(
        nameserver=server.nameserver,
        timeout_s=0.3,
        min_ttl_s=0.02,
        max_ttl_s=0.05,
        grace_s=30.0,
        retry_base_s=0.01,
        retry_max_s=0.03,
        jitter=0.0,
    )
    return dataclasses.replace(settings, **changes)


def fleet(dns: DnsName | None, *, listed: tuple[str, ...] = (), name: str = "east") -> PolicySet:
    port = ServicePort(80, listed, dns)
    cluster = MemberCluster(
        name=name, labels=ZONE, services=(StaticService("shop", "web", (port,)),)
    )
    return PolicySet(clusters=(cluster,))


class Rig:
    """The component under test and every inventory it handed over."""

    def __init__(self, settings: DnsSettings) -> None:
        self.seen: list[Inventory] = []
        self.names = DnsEndpoints(settings, self.seen.append, rng=random.Random(7))

    def endpoints(self, cluster: str = "east", ref: ServiceRef = WEB) -> tuple[Endpoint, ...]:
        return self.names.inventory.endpoints.get((cluster, ref), ())

    def addresses(self, cluster: str = "east") -> list[str]:
        return sorted(e.address for e in self.endpoints(cluster))

    def status(self, name: DnsName) -> DnsNameStatus:
        return next(s for s in self.names.status() if s.name == str(name))


@contextlib.asynccontextmanager
async def running(settings: DnsSettings, policies: PolicySet) -> AsyncIterator[Rig]:
    rig = Rig(settings)
    rig.names.update_policies(policies)
    async with asyncio.TaskGroup() as group:
        task = group.create_task(rig.names.run(), name="dns under test")
        try:
            yield rig
        finally:
            task.cancel()


# ---------------------------------------------------------------------------------------------
# Record types


async def test_a_records_become_ready_endpoints_on_the_named_port(server: FakeDnsServer) -> None:
    server.set_a("web.east.internal", "127.0.1.2", "127.0.1.1", ttl=30)
    name = DnsName(hostname="web.east.internal", port=8080)
    async with running(fast(server), fleet(name)) as rig:
        await eventually(lambda: len(rig.endpoints()) == 2)
        assert rig.endpoints() == (
            Endpoint("127.0.1.1", 8080, "east", zone="east-1a"),
            Endpoint("127.0.1.2", 8080, "east", zone="east-1a"),
        )
        status = rig.status(name)
        assert status.condition is NameCondition.FRESH
        assert status.ttl_s == 30
        assert status.addresses == ("127.0.1.1:8080", "127.0.1.2:8080")
        assert status.used_by == ("east shop/web:80",)
        assert status.stale_since is None
        assert status.error is None


async def test_aaaa_and_a_records_of_one_name_are_both_used(server: FakeDnsServer) -> None:
    server.set_a("dual.east.internal", "127.0.1.3")
    server.set_aaaa("dual.east.internal", "::1")
    server.set_aaaa("v6.east.internal", "::1")
    dual = DnsName(hostname="dual.east.internal", port=9000)
    async with running(fast(server), fleet(dual)) as rig:
        await eventually(lambda: rig.addresses() == ["127.0.1.3:9000", "::1:9000"])
        assert rig.status(dual).addresses == ("127.0.1.3:9000", "[::1]:9000")
        v6_only = DnsName(hostname="v6.east.internal", port=9001)
        rig.names.update_policies(fleet(v6_only))
        await eventually(lambda: rig.addresses() == ["::1:9001"])
        assert server.asked("v6.east.internal", "A") >= 1  # asked, answered NODATA: not an error
        assert rig.status(v6_only).condition is NameCondition.FRESH


async def test_srv_records_give_ports_and_only_the_lowest_priority_is_ready(
    server: FakeDnsServer,
) -> None:
    server.set_srv(
        "_http._tcp.web.east.internal",
        (10, 60, 8081, "a.east.internal"),
        (10, 40, 8082, "b.east.internal"),
        (20, 0, 8083, "backup.east.internal"),
        ttl=20,
    )
    server.set_a("a.east.internal", "127.0.1.1", ttl=5)
    server.set_a("b.east.internal", "127.0.1.2")
    server.set_a("backup.east.internal", "127.0.2.1")
    name = DnsName(srv="_http._tcp.web.east.internal")
    async with running(fast(server), fleet(name)) as rig:
        await eventually(lambda: len(rig.endpoints()) == 3)
        ready = {e.address: e.ready for e in rig.endpoints()}
        assert ready == {"127.0.1.1:8081": True, "127.0.1.2:8082": True, "127.0.2.1:8083": False}
        status = rig.status(name)
        assert status.ttl_s == 5  # the smallest TTL the answer was built from
        assert status.addresses == (
            "127.0.1.1:8081 prio=10 weight=60",
            "127.0.1.2:8082 prio=10 weight=40",
            "127.0.2.1:8083 prio=20 weight=0",
        )
        # The targets came in the additional section: nobody asked for them.
        assert server.asked("a.east.internal") == 0


async def test_srv_targets_are_looked_up_when_the_answer_does_not_carry_them(
    server: FakeDnsServer,
) -> None:
    server.srv_additional = False
    server.set_srv(
        "_http._tcp.web.east.internal",
        (0, 0, 8081, "a.east.internal"),
        (0, 0, 8082, "gone.east.internal"),  # no such name: skipped, the rest still serve
    )
    server.set_aaaa("a.east.internal", "::1")
    name = DnsName(srv="_http._tcp.web.east.internal")
    async with running(fast(server), fleet(name)) as rig:
        await eventually(lambda: rig.addresses() == ["::1:8081"])
        assert server.asked("a.east.internal", "AAAA") >= 1
        assert rig.status(name).condition is NameCondition.FRESH


async def test_srv_target_dot_means_no_endpoints_and_is_not_a_failure(
    server: FakeDnsServer,
) -> None:
    server.set_srv("_http._tcp.web.east.internal", (0, 0, 0, "."))
    name = DnsName(srv="_http._tcp.web.east.internal")
    async with running(fast(server), fleet(name, listed=("127.0.1.9:80",))) as rig:
        await eventually(lambda: rig.status(name).condition is NameCondition.FRESH)
        assert rig.addresses() == ["127.0.1.9:80"]
        assert rig.status(name).failures == 0


async def test_listed_endpoints_come_first_and_a_duplicate_address_is_listed_once(
    server: FakeDnsServer,
) -> None:
    server.set_a("web.east.internal", "127.0.1.1", "127.0.1.5")
    name = DnsName(hostname="web.east.internal", port=8080)
    async with running(fast(server), fleet(name, listed=("127.0.1.5:8080",))) as rig:
        await eventually(lambda: len(rig.endpoints()) == 2)
        assert [e.address for e in rig.endpoints()] == ["127.0.1.5:8080", "127.0.1.1:8080"]


async def test_a_truncated_udp_answer_is_asked_again_over_tcp(server: FakeDnsServer) -> None:
    server.truncate_udp = True
    server.set_a("web.east.internal", "127.0.1.1")
    name = DnsName(hostname="web.east.internal", port=8080)
    async with running(fast(server), fleet(name)) as rig:
        await eventually(lambda: rig.addresses() == ["127.0.1.1:8080"])
        assert server.asked("web.east.internal", "A", "tcp") >= 1


# ---------------------------------------------------------------------------------------------
# Refresh and failure


async def test_answers_are_refreshed_by_ttl_and_changes_published(server: FakeDnsServer) -> None:
    server.set_a("web.east.internal", "127.0.1.1", ttl=0)
    name = DnsName(hostname="web.east.internal", port=8080)
    async with running(fast(server), fleet(name)) as rig:
        await eventually(lambda: rig.addresses() == ["127.0.1.1:8080"])
        server.set_a("web.east.internal", "127.0.1.2", "127.0.1.3", ttl=0)
        await eventually(lambda: rig.addresses() == ["127.0.1.2:8080", "127.0.1.3:8080"])
        handed = len(rig.seen)
        asked = server.asked("web.east.internal", "A")
        await eventually(lambda: server.asked("web.east.internal", "A") >= asked + 3)
        assert len(rig.seen) == handed  # the same answer again changes nothing downstream


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        pytest.param("servfail", "SERVFAIL", id="servfail"),
        pytest.param("nxdomain", "NXDOMAIN", id="nxdomain"),
        pytest.param("nodata", "no records", id="no-data"),
        pytest.param("drop", "no answer within", id="no-answer"),
    ],
)
async def test_a_failing_name_keeps_its_last_answer_within_the_grace_then_drops_it(
    server: FakeDnsServer, failure: str, error: str
) -> None:
    server.set_a("web.east.internal", "127.0.1.1", ttl=0)
    name = DnsName(hostname="web.east.internal", port=8080)
    settings = fast(server, grace_s=0.8, timeout_s=0.1)
    async with running(settings, fleet(name, listed=("127.0.1.9:80",))) as rig:
        await eventually(lambda: rig.addresses() == ["127.0.1.1:8080", "127.0.1.9:80"])
        if failure == "nodata":
            server.remove("web.east.internal")
            server.set_srv("web.east.internal", (0, 0, 1, "x.east.internal"))  # not A, not AAAA
        else:
            server.fail(failure)  # type: ignore[arg-type]

        await eventually(lambda: rig.status(name).condition is NameCondition.STALE)
        status = rig.status(name)
        assert rig.addresses() == ["127.0.1.1:8080", "127.0.1.9:80"]  # still published
        assert status.addresses == ("127.0.1.1:8080",)
        assert status.stale_since is not None
        assert status.answered_at is not None
        assert status.stale_since >= status.answered_at
        assert status.error is not None
        assert error in status.error

        await eventually(lambda: rig.status(name).condition is NameCondition.FAILED)
        assert rig.addresses() == ["127.0.1.9:80"]  # the listed endpoint stays
        assert rig.status(name).addresses == ()
        assert rig.status(name).failures >= 2  # retried meanwhile

        server.heal()
        server.set_a("web.east.internal", "127.0.1.4", ttl=0)
        await eventually(lambda: rig.addresses() == ["127.0.1.4:8080", "127.0.1.9:80"])
        recovered = rig.status(name)
        assert recovered.condition is NameCondition.FRESH
        assert (recovered.stale_since, recovered.error, recovered.failures) == (None, None, 0)


async def test_a_stopped_server_is_a_failure_and_a_restarted_one_answers_again(
    server: FakeDnsServer,
) -> None:
    server.set_a("web.east.internal", "127.0.1.1", ttl=0)
    name = DnsName(hostname="web.east.internal", port=8080)
    async with running(fast(server, timeout_s=0.1), fleet(name)) as rig:
        await eventually(lambda: rig.addresses() == ["127.0.1.1:8080"])
        await server.stop()
        await eventually(lambda: rig.status(name).condition is NameCondition.STALE)
        assert rig.addresses() == ["127.0.1.1:8080"]
        await server.start()  # same port
        await eventually(lambda: rig.status(name).condition is NameCondition.FRESH)
        assert rig.addresses() == ["127.0.1.1:8080"]


async def test_a_name_that_never_answered_publishes_only_the_listed_endpoints(
    server: FakeDnsServer,
) -> None:
    name = DnsName(hostname="missing.east.internal", port=8080)
    async with running(fast(server), fleet(name, listed=("127.0.1.9:80",))) as rig:
        await eventually(lambda: rig.status(name).condition is NameCondition.FAILED)
        status = rig.status(name)
        assert status.error is not None
        assert "NXDOMAIN" in status.error
        assert status.answered_at is None
        assert rig.addresses() == ["127.0.1.9:80"]


async def test_one_broken_name_does_not_hold_up_another(server: FakeDnsServer) -> None:
    server.set_a("slow.east.internal", "127.0.1.1", ttl=0)
    server.set_a("web.west.internal", "127.0.2.1", ttl=0)
    slow = DnsName(hostname="slow.east.internal", port=80)
    web = DnsName(hostname="web.west.internal", port=80)
    policies = PolicySet(clusters=(*fleet(slow).clusters, *fleet(web, name="west").clusters))
    async with running(fast(server, timeout_s=0.3), policies) as rig:
        await eventually(lambda: rig.addresses("west") == ["127.0.2.1:80"])
        server.fail("drop", name="slow.east.internal")
        server.set_a("web.west.internal", "127.0.2.2", ttl=0)
        await eventually(lambda: rig.addresses("west") == ["127.0.2.2:80"])
        await eventually(lambda: rig.status(slow).condition is NameCondition.STALE)
        assert rig.status(web).condition is NameCondition.FRESH


async def test_prime_looks_every_name_up_once_before_run(server: FakeDnsServer) -> None:
    # What `fleetgate run` does before its first table, so that table carries the answers.
    server.set_a("web.east.internal", "127.0.1.1", ttl=30)
    server.fail("servfail", name="api.east.internal")
    good = DnsName(hostname="web.east.internal", port=8080)
    bad = DnsName(hostname="api.east.internal", port=8080)
    rig = Rig(fast(server))
    rig.names.update_policies(
        PolicySet(clusters=(*fleet(good).clusters, *fleet(bad, name="west").clusters))
    )
    await rig.names.prime()
    assert rig.addresses() == ["127.0.1.1:8080"]
    assert rig.addresses("west") == []
    assert rig.status(good).condition is NameCondition.FRESH
    assert rig.status(bad).condition is NameCondition.PENDING  # run() retries and reports it
    assert server.asked("web.east.internal", "A") == 1
    assert rig.seen[-1] == rig.names.inventory


async def test_names_follow_the_policies(server: FakeDnsServer) -> None:
    server.set_a("web.east.internal", "127.0.1.1", ttl=0)
    server.set_a("web2.east.internal", "127.0.1.2", ttl=0)
    first = DnsName(hostname="web.east.internal", port=80)
    second = DnsName(hostname="web2.east.internal", port=80)
    async with running(fast(server), fleet(first)) as rig:
        await eventually(lambda: rig.addresses() == ["127.0.1.1:80"])
        rig.names.update_policies(fleet(second))
        await eventually(lambda: rig.addresses() == ["127.0.1.2:80"])
        assert [s.name for s in rig.names.status()] == ["web2.east.internal:80"]
        rig.names.update_policies(fleet(None, listed=("127.0.1.9:80",)))
        assert rig.names.inventory == Inventory(endpoints={})
        assert rig.seen[-1] == Inventory(endpoints={})
        assert rig.names.status() == ()


async def test_reconcile_rebuilds_the_table_from_dns_answers(server: FakeDnsServer) -> None:
    server.set_a("web.east.internal", "127.0.1.1", ttl=0)
    name = DnsName(hostname="web.east.internal", port=8080)
    rule = Rule(name=None, matches=(Match(),), filters=(), backend_refs=(BackendRef(WEB),))
    route = Route(RouteKind.TRAFFIC_POLICY, "shop", "web", hostnames=("shop.test",), rules=(rule,))
    policies = dataclasses.replace(fleet(name), routes=(route,))
    publisher = Publisher()
    tables: list[RoutingTable] = []
    publisher.attach("probe", None, tables.append)
    reconciler = Reconciler(publisher, ReconcileSettings(debounce_s=0.02, max_delay_s=0.2))
    reconciler.update_policies(policies)

    def served() -> list[str]:
        if not tables:
            return []
        targets = tables[-1].backends["shop/web:80"].targets
        return [e.address for t in targets for e in t.endpoints]

    names = DnsEndpoints(fast(server), reconciler.update_inventory)
    names.update_policies(policies)
    async with asyncio.TaskGroup() as group:
        tasks = [
            group.create_task(reconciler.run(), name="reconciler"),
            group.create_task(names.run(), name="dns"),
        ]
        try:
            await eventually(lambda: served() == ["127.0.1.1:8080"])
            server.set_a("web.east.internal", "127.0.1.2", ttl=0)
            await eventually(lambda: served() == ["127.0.1.2:8080"])
        finally:
            for task in tasks:
                task.cancel()


# ---------------------------------------------------------------------------------------------
# Pure parts: timers, state, settings


def settings(**changes: Any) -> DnsSettings:
    base = DnsSettings(min_ttl_s=5, max_ttl_s=300, retry_base_s=1, retry_max_s=30, jitter=0.1)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("ttl", "roll", "expected"),
    [
        pytest.param(60, 0.0, 60.0, id="ttl-as-given"),
        pytest.param(0, 0.0, 5.0, id="zero-ttl-clamped-up"),
        pytest.param(86400, 0.0, 300.0, id="long-ttl-clamped-down"),
        pytest.param(60, 0.5, 57.0, id="jitter-shortens"),
    ],
)
def test_refresh_delay_follows_the_ttl_within_the_clamp(
    ttl: float, roll: float, expected: float
) -> None:
    assert refresh_delay(ttl, settings(), roll) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("failures", "roll", "expected"),
    [
        pytest.param(1, 0.0, 1.0, id="first"),
        pytest.param(3, 0.0, 4.0, id="doubles"),
        pytest.param(10, 0.0, 30.0, id="capped"),
        pytest.param(10_000, 0.0, 30.0, id="no-overflow"),
        pytest.param(2, 0.99, 2.0 * (1 - 0.099), id="jittered"),
    ],
)
def test_retry_delay_backs_off_exponentially(failures: int, roll: float, expected: float) -> None:
    assert retry_delay(failures, settings(), roll) == pytest.approx(expected)


def test_name_state_keeps_the_answer_for_the_grace_from_the_first_failure() -> None:
    records = (Record(0, 0, "127.0.1.1", 80),)
    state = NameState().answered(records, 30.0, now=100.0)
    assert state.withdraw_at(10.0) is None
    state = state.failed("SERVFAIL", now=130.0).failed("timeout", now=135.0)
    assert (state.failing_since, state.failures, state.error) == (130.0, 2, "timeout")
    assert state.withdraw_at(10.0) == 140.0
    assert state.live(139.9, 10.0) == records
    assert state.live(140.0, 10.0) == ()
    state = state.answered(records, 30.0, now=141.0)
    assert (state.failing_since, state.failures, state.error) == (None, 0, None)
    assert NameState().failed("NXDOMAIN", now=1.0).withdraw_at(10.0) is None  # nothing kept


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("127.0.0.1:5353", ("127.0.0.1", 5353), id="v4"),
        pytest.param("[::1]:5353", ("::1", 5353), id="v6"),
        pytest.param("127.0.0.1", ("127.0.0.1", 53), id="default-port"),
        pytest.param("[::1]", ("::1", 53), id="v6-default-port"),
    ],
)
def test_nameserver_setting_is_ip_and_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("dns.example:53", id="not-an-ip"),
        pytest.param("127.0.0.1:0", id="port-zero"),
        pytest.param("127.0.0.1:99999", id="port-too-big"),
        pytest.param("[::1]:x", id="port-not-a-number"),
    ],
)
def test_a_bad_nameserver_setting_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="DNS nameserver"):
        DnsSettings(nameserver=text)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"min_ttl_s": 10.0, "max_ttl_s": 5.0}, id="clamp-upside-down"),
        pytest.param({"retry_base_s": 0.0}, id="no-retry-delay"),
        pytest.param({"jitter": 1.0}, id="jitter-whole-delay"),
        pytest.param({"timeout_s": 0.0}, id="no-timeout"),
        pytest.param({"max_concurrent": 0}, id="no-lookups-at-all"),
    ],
)
def test_inconsistent_settings_are_refused(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="DNS"):
        DnsSettings(**changes)  # type: ignore[arg-type]
