"""The operator API over real sockets: token auth, namespaces, actions, history, rollback."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from controller import api, api_tokens
from policies.model import PolicySet
from tests.conftest import eventually
from tests.controller.release_rig import (
    CLUSTERS,
    Fleet,
    fast_settings,
    fleet,
    load,
    release_yaml,
    ticks_pass,
)

TOKENS = {
    "alice": ("admin", ()),
    "dev-shop": ("developer", ("shop",)),
    "dev-pay": ("developer", ("payments",)),
}
SECRETS = {name: api_tokens.new_token() for name in TOKENS}
STEPS = "[{setWeight: 20}, {pause: {}}, {setWeight: 60}]"


def token_table() -> api_tokens.Tokens:
    return api_tokens.Tokens(
        api_tokens.TokenEntry(name, api_tokens.hash_token(SECRETS[name]), role, namespaces)
        for name, (role, namespaces) in TOKENS.items()
    )


def policies(storefront_host: str = "shop.example") -> PolicySet:
    return load(
        CLUSTERS.replace("hostnames: [shop.example]", f"hostnames: [{storefront_host}]"),
        release_yaml(STEPS),
        release_yaml(STEPS, name="api-v2", namespace="payments", target="api"),
    )


class Client:
    """The operator API as a caller with one token sees it."""

    def __init__(self, session: aiohttp.ClientSession, base: str, token: str | None) -> None:
        self.session, self.base = session, base + "/api/v1"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path, headers=self.headers) as response:
            return response.status, await response.json()

    async def post(self, path: str, **body: Any) -> tuple[int, Any]:
        async with self.session.post(self.base + path, json=body, headers=self.headers) as response:
            return response.status, await response.json()


@contextlib.asynccontextmanager
async def controller(
    initial: PolicySet | None = None,
) -> AsyncIterator[tuple[Fleet, dict[str, Client]]]:
    tokens = token_table()
    async with (
        fleet(
            initial or policies(),
            fast_settings(),
            app_setup=lambda app, runner: api.add_routes(app, runner, tokens),
        ) as rig,
        aiohttp.ClientSession() as session,
    ):
        clients = {name: Client(session, rig.url, SECRETS[name]) for name in TOKENS}
        clients["nobody"] = Client(session, rig.url, None)
        clients["forged"] = Client(session, rig.url, api_tokens.new_token())
        yield rig, clients


async def test_a_missing_or_unknown_token_is_401() -> None:
    async with controller() as (_, clients):
        for who in ("nobody", "forged"):
            status, body = await clients[who].get("/releases")
            assert status == 401
            assert body["error"] == "unauthorized"
            status, _ = await clients[who].post("/releases/shop/web-v2/start")
            assert status == 401


async def test_a_developer_token_is_403_outside_its_namespaces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="controller.api.audit")
    async with controller() as (rig, clients):
        status, body = await clients["dev-pay"].post("/releases/shop/web-v2/start")
        assert status == 403
        assert body["error"] == "forbidden"
        assert rig.runner.state("shop/web-v2") is None  # nothing happened
        status, _ = await clients["dev-pay"].get("/releases/shop/web-v2")
        assert status == 403
        assert "refused actor=dev-pay POST /api/v1/releases/shop/web-v2/start" in caplog.text

        status, body = await clients["dev-shop"].post("/releases/shop/web-v2/start")
        assert status == 200
        assert body["release"]["phase"] == "Progressing"
        status, body = await clients["alice"].post("/releases/payments/api-v2/start")
        assert status == 200

        status, body = await clients["dev-shop"].get("/releases")
        assert [view["release"] for view in body["releases"]] == ["shop/web-v2"]
        status, body = await clients["alice"].get("/releases")
        assert [v["release"] for v in body["releases"]] == ["payments/api-v2", "shop/web-v2"]


async def test_every_write_records_its_actor_in_the_history_and_the_audit_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="controller.api.audit")
    async with controller() as (rig, clients):
        dev = clients["dev-shop"]
        assert (await dev.post("/releases/shop/web-v2/start"))[0] == 200
        await eventually(lambda: all(g.applied and g.weight() == 20 for g in rig.gateways))
        status, body = await dev.post("/releases/shop/web-v2/set-weight", weight=40)
        assert status == 200
        assert body["release"]["canary_weight"] == 40
        assert body["release"]["pause_reason"] == "manual_weight"
        status, body = await clients["alice"].post("/releases/shop/web-v2/abort?ramped=false")
        assert status == 200
        assert body["release"]["phase"] == "Aborted"
        await eventually(lambda: all(g.weight() == 0 for g in rig.gateways))

        status, body = await dev.get("/releases/shop/web-v2/history")
        assert status == 200
        summary = [
            (r["actor"], r["reason"], r["content"]["canary_weight"]) for r in body["revisions"]
        ]
        assert summary == [
            ("dev-shop", "step 1/3: setWeight 20", 20),
            ("dev-shop", "weight 40 set by hand", 40),
            ("alice", "abort (operator_abort)", 0),
        ]
        assert "actor=dev-shop set_weight shop/web-v2 weight=40" in caplog.text
        assert "actor=alice abort shop/web-v2" in caplog.text


async def test_actions_that_do_not_apply_are_409_with_the_engine_reason() -> None:
    async with controller() as (_, clients):
        admin = clients["alice"]
        status, body = await admin.post("/releases/shop/web-v2/resume")
        assert (status, body["error"]) == (409, "not_started")
        assert (await admin.post("/releases/shop/web-v2/start"))[0] == 200
        status, body = await admin.post("/releases/shop/web-v2/set-weight", weight=101)
        assert (status, body["error"]) == (409, "weight_out_of_range")
        status, body = await admin.post("/releases/shop/web-v2/set-weight")
        assert (status, body["error"]) == (400, "weight_required")
        status, body = await admin.post("/releases/shop/nope/start")
        assert (status, body["error"]) == (404, "not_found")
        status, body = await admin.post("/releases/shop/web-v2/explode")
        assert (status, body["error"]) == (404, "unknown_action")


async def test_gateways_lists_every_gateway_with_its_applied_version() -> None:
    async with controller() as (rig, clients):
        answers: list[Any] = []

        async def both_applied() -> bool:  # reported on each gateway's next poll
            status, body = await clients["dev-shop"].get("/gateways")
            assert status == 200
            answers.append(body)
            applied = [g["applied"] for g in body["gateways"]]
            return body["version"] is not None and applied == [body["version"]] * 2

        await eventually(both_applied)
        latest = rig.publisher.latest
        assert latest is not None
        assert answers[-1]["version"] == latest.version
        assert answers[-1]["rollout"] == f"2/2 gateways on v{latest.version}"
        assert [g["id"] for g in answers[-1]["gateways"]] == ["gw-0", "gw-1"]


async def test_rolling_back_a_policy_serves_the_old_content_until_the_files_change() -> None:
    async with controller(policies("old.example")) as (rig, clients):
        admin = clients["alice"]

        def serves(host: str) -> bool:
            return all(g.table is not None and g.table.lookup(host) for g in rig.gateways)

        await eventually(lambda: serves("old.example"))
        rig.runner.update_policies(policies("new.example"))
        await eventually(lambda: serves("new.example"))

        status, body = await admin.get("/policies/shop/storefront/history")
        assert status == 200
        assert [(r["number"], r["actor"]) for r in body["revisions"]] == [
            (1, "files"),
            (2, "files"),
        ]
        status, body = await clients["dev-pay"].post(
            "/policies/shop/storefront/rollback", revision=1
        )
        assert status == 403
        status, body = await admin.post("/policies/shop/storefront/rollback", revision=7)
        assert (status, body["error"]) == (409, "revision_not_retained")

        status, body = await admin.post("/policies/shop/storefront/rollback", revision=1)
        assert status == 200
        assert (body["revision"], body["rolled_back"]) == (3, True)
        await eventually(lambda: serves("old.example") and not serves("new.example"))

        rig.runner.update_policies(policies("new.example"))  # a reload of unchanged files
        await ticks_pass(rig.runner)
        assert serves("old.example")
        status, body = await admin.get("/policies/shop/storefront/history")
        assert body["rolled_back"] is True
        assert body["revisions"][-1]["reason"] == "rollback to revision 1"
        assert body["revisions"][-1]["actor"] == "alice"

        rig.runner.update_policies(policies("newer.example"))  # the operator edits the file
        await eventually(lambda: serves("newer.example"))
        status, body = await admin.get("/policies/shop/storefront/history")
        assert body["rolled_back"] is False
        assert [r["number"] for r in body["revisions"]] == [1, 2, 3, 4]
