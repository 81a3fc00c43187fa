"""`fleetgate release|rollback|history` in-process against a real operator API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from controller import api, api_tokens
from fleetgate import cli
from policies.model import PolicySet
from tests.conftest import eventually
from tests.controller.release_rig import CLUSTERS, Fleet, fast_settings, fleet, load, release_yaml

ADMIN, DEV_PAY = api_tokens.new_token(), api_tokens.new_token()
STEPS = "[{setWeight: 20}, {pause: {}}, {setWeight: 60}]"


def policies(host: str = "shop.example") -> PolicySet:
    return load(
        CLUSTERS.replace("hostnames: [shop.example]", f"hostnames: [{host}]"), release_yaml(STEPS)
    )


@contextlib.asynccontextmanager
async def controller() -> AsyncIterator[Fleet]:
    tokens = api_tokens.Tokens(
        [
            api_tokens.TokenEntry("alice", api_tokens.hash_token(ADMIN), "admin"),
            api_tokens.TokenEntry(
                "dev-pay", api_tokens.hash_token(DEV_PAY), "developer", ("payments",)
            ),
        ]
    )
    setup = lambda app, runner: api.add_routes(app, runner, tokens)  # noqa: E731
    async with fleet(policies(), fast_settings(), app_setup=setup) as rig:
        yield rig


async def fleetgate(rig: Fleet, *argv: str, token: str = ADMIN) -> int:
    """Run the CLI in a worker thread (it blocks on HTTP; the server runs on this loop)."""
    return await asyncio.to_thread(cli.main, [*argv, "--server", rig.url, "--token", token])


async def test_start_status_set_weight_and_abort(capsys: pytest.CaptureFixture[str]) -> None:
    async with controller() as rig:
        assert await fleetgate(rig, "release", "start", "shop/web-v2") == 0
        assert "shop/web-v2: start accepted; Progressing, canary 20%" in capsys.readouterr().out
        await eventually(lambda: all(g.applied and g.weight() == 20 for g in rig.gateways))

        assert await fleetgate(rig, "release", "status", "web-v2", "-n", "shop") == 0
        out = capsys.readouterr().out
        assert "[" + "#" * 8 + "-" * 32 + "]  20% canary" in out
        assert "[x] 1. setWeight 20" in out or "[>] 1. setWeight 20" in out
        assert "[ ] 3. setWeight 60" in out
        assert "gw-0" in out
        assert "gw-1" in out

        assert await fleetgate(rig, "release", "set-weight", "shop/web-v2", "45") == 0
        assert "canary 45%" in capsys.readouterr().out
        assert await fleetgate(rig, "release", "abort", "shop/web-v2", "--now") == 0
        assert "Aborted, canary 0%" in capsys.readouterr().out

        assert await fleetgate(rig, "history", "--release", "shop/web-v2") == 0
        out = capsys.readouterr().out
        assert "weight 45 set by hand [canary 45%]" in out
        assert out.count("alice") == 3  # start, set-weight and abort, each with its actor


async def test_status_watch_follows_the_release_to_completion(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with controller() as rig:
        assert await fleetgate(rig, "release", "start", "shop/web-v2") == 0
        argv = ("release", "status", "shop/web-v2", "--watch", "--interval", "0.02")
        async with asyncio.TaskGroup() as tg:
            watch = tg.create_task(fleetgate(rig, *argv))
            await eventually(lambda: rig.runner.view("shop/web-v2").get("phase") == "Paused")
            assert await fleetgate(rig, "release", "promote", "shop/web-v2", "--full") == 0
        assert watch.result() == 0
        frames = capsys.readouterr().out.split("release shop/web-v2  (Canary")
        assert len(frames) >= 3  # one frame per change (and the promote's own line)
        last = frames[-1]
        assert "phase:    Completed" in last
        assert "[" + "#" * 40 + "] 100% canary" in last
        assert last.count("serves this step") == 2  # the watch ends once both gateways do


async def test_refusals_and_unreachable_servers_set_the_exit_status(
    capsys: pytest.CaptureFixture[str], closed_port: int
) -> None:
    async with controller() as rig:
        assert await fleetgate(rig, "release", "pause", "shop/web-v2", token=DEV_PAY) == 1
        assert "error: 403 forbidden" in capsys.readouterr().err
        assert await fleetgate(rig, "release", "resume", "shop/web-v2") == 1
        assert "error: 409 not_started" in capsys.readouterr().err
        assert await fleetgate(rig, "release", "status", "shop/web-v2", token="wrong") == 1
        assert "error: 401 unauthorized" in capsys.readouterr().err
    argv = ["release", "list", "--server", f"http://127.0.0.1:{closed_port}"]
    assert await asyncio.to_thread(cli.main, argv) == 2
    assert "error: unreachable: cannot reach" in capsys.readouterr().err


async def test_history_and_rollback_of_a_policy(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with controller() as rig:
        monkeypatch.setenv("FLEETGATE_SERVER", rig.url)
        monkeypatch.setenv("FLEETGATE_TOKEN", ADMIN)
        await eventually(lambda: "shop/storefront" in rig.runner.policies.ids())
        rig.runner.update_policies(policies("new.example"))

        async def revisions() -> bool:
            status = await asyncio.to_thread(cli.main, ["history", "shop/storefront"])
            captured = capsys.readouterr()
            return status == 0 and "changed in doc0.yaml" in captured.out

        await eventually(revisions)
        assert (
            await asyncio.to_thread(
                cli.main, ["rollback", "storefront", "-n", "shop", "--to-revision", "1"]
            )
            == 0
        )
        assert (
            "policy shop/storefront: revision 1 is live again as revision 3 "
            "(layered over the policy files until they change)"
        ) in capsys.readouterr().out
        assert await asyncio.to_thread(cli.main, ["history", "shop/storefront"]) == 0
        out = capsys.readouterr().out
        assert "rollback to revision 1" in out
        assert "(the latest revision is a rollback layered over the policy files)" in out
        assert await asyncio.to_thread(cli.main, ["release", "list"]) == 0
        assert "shop/web-v2  -      -     -       not started" in capsys.readouterr().out
