"""`fleetgate release ...`, `fleetgate rollback`, `fleetgate history`: the operator API's client.

Blocking HTTP to the controller's operator API (urllib; one request per command, or one per
refresh with `status --watch`); rendering is `fleetgate.release_view`'s. The server and token come
from `--server`/`--token` or FLEETGATE_SERVER/FLEETGATE_TOKEN. Exit status: 0 done, 1 the
controller refused (the reason code is printed), 2 the controller could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from fleetgate import release_view

DEFAULT_SERVER = "http://127.0.0.1:8080"  # the controller's API port (deploy/controller)
TIMEOUT_S = 10.0
_SIMPLE_ACTIONS = {
    "start": "start the release's first step (or the blue-green preview)",
    "pause": "hold the release where it is",
    "resume": "continue after a pause, a hand-set weight or an inconclusive analysis",
    "retry": "start an aborted release again from its first step",
}


class ApiFailure(Exception):
    """The controller answered with an error, or could not be reached (`status` 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    release = sub.add_parser(
        "release",
        help="drive releases: start, status, promote, pause, resume, abort, retry, set-weight",
        description="Drive a Release through the controller's operator API.",
    )
    actions = release.add_subparsers(dest="release_command", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list the releases you may see")
    _connection_options(listing)
    listing.set_defaults(handler=run_list)

    status = actions.add_parser("status", help="show a release: steps, weight, analysis, fleet")
    _release_argument(status)
    status.add_argument("--watch", "-w", action="store_true", help="refresh until it finishes")
    status.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="refresh period"
    )
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    status.set_defaults(handler=run_status)

    for name, text in _SIMPLE_ACTIONS.items():
        parser = actions.add_parser(name, help=text)
        _release_argument(parser)
        parser.set_defaults(handler=run_action, action=name)

    promote = actions.add_parser("promote", help="skip the current step (blue-green: switch)")
    _release_argument(promote)
    promote.add_argument("--full", action="store_true", help="skip every remaining step")
    promote.set_defaults(handler=run_action, action="promote")

    abort = actions.add_parser("abort", help="send traffic back to stable")
    _release_argument(abort)
    abort.add_argument(
        "--now", action="store_true", help="drop to 0 %% at once, skipping spec.abort.rampSteps"
    )
    abort.set_defaults(handler=run_action, action="abort")

    weight = actions.add_parser("set-weight", help="set the canary weight by hand (pauses)")
    _release_argument(weight)
    weight.add_argument("weight", type=int, help="canary percent, 0..100")
    weight.set_defaults(handler=run_action, action="set-weight")

    rollback = sub.add_parser(
        "rollback",
        help="make an earlier revision of a policy live again",
        description="Roll a policy back to a retained revision. The content becomes live as a "
        "new revision, layered over your files until your own copy of the policy changes.",
    )
    rollback.add_argument("policy", metavar="POLICY", help="[namespace/]name")
    rollback.add_argument("--to-revision", type=int, required=True, metavar="N")
    rollback.add_argument("--namespace", "-n", default="default", help="when POLICY has none")
    _connection_options(rollback)
    rollback.set_defaults(handler=run_rollback)

    history = sub.add_parser(
        "history", help="list a policy's (or a release's) revisions with reason, time and actor"
    )
    history.add_argument("subject", metavar="POLICY", help="[namespace/]name")
    history.add_argument("--release", action="store_true", help="POLICY names a Release")
    history.add_argument("--namespace", "-n", default="default", help="when POLICY has none")
    _connection_options(history)
    history.set_defaults(handler=run_history)


def _release_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("release", metavar="RELEASE", help="[namespace/]name")
    parser.add_argument("--namespace", "-n", default="default", help="when RELEASE has none")
    _connection_options(parser)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("FLEETGATE_SERVER", DEFAULT_SERVER),
        help="controller URL (env FLEETGATE_SERVER; default %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("FLEETGATE_TOKEN"),
        help="bearer token (env FLEETGATE_TOKEN)",
    )


# -- commands ----------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    return _guarded(lambda: print(release_view.listing(_call(args, "GET", "/releases"))))


def run_status(args: argparse.Namespace) -> int:
    path = "/releases/" + _path(args.release, args.namespace)

    def show() -> None:
        if not args.watch:
            view = _call(args, "GET", path)
            print(json.dumps(view, indent=2) if args.json else release_view.status(view))
            return
        _watch(args, path)

    return _guarded(show)


def run_action(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    if args.action == "promote" and args.full:
        params["full"] = True
    if args.action == "abort" and args.now:
        params["ramped"] = False
    if args.action == "set-weight":
        params["weight"] = args.weight
    path = f"/releases/{_path(args.release, args.namespace)}/{args.action}"

    def act() -> None:
        answer = _call(args, "POST", path, params)
        print(release_view.after_action(args.action, answer["release"]))

    return _guarded(act)


def run_rollback(args: argparse.Namespace) -> int:
    path = f"/policies/{_path(args.policy, args.namespace)}/rollback"

    def rollback() -> None:
        answer = _call(args, "POST", path, {"revision": args.to_revision})
        print(release_view.after_rollback(answer, args.to_revision))

    return _guarded(rollback)


def run_history(args: argparse.Namespace) -> int:
    kind = "releases" if args.release else "policies"
    path = f"/{kind}/{_path(args.subject, args.namespace)}/history"
    return _guarded(lambda: print(release_view.history(_call(args, "GET", path))))


def _watch(args: argparse.Namespace, path: str) -> None:
    tty = sys.stdout.isatty()
    last = None
    while True:
        view = _call(args, "GET", path)
        frame = release_view.status(view)
        if frame != last:
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")
            elif last is not None:
                print()
            print(frame, flush=True)
            last = frame
        if release_view.finished(view):
            return
        time.sleep(max(0.01, args.interval))


# -- HTTP --------------------------------------------------------------------------------------


def _guarded(work: Any) -> int:
    try:
        work()
    except ApiFailure as failure:
        where = f"{failure.status} " if failure.status else ""
        print(f"error: {where}{failure.code}: {failure.message}", file=sys.stderr)
        return 2 if failure.status == 0 else 1
    return 0


def _path(name: str, namespace: str) -> str:
    namespace, _, short = name.rpartition("/") if "/" in name else (namespace, "/", name)
    return "/".join(urllib.parse.quote(part, safe="") for part in (namespace, short))


def _call(
    args: argparse.Namespace, method: str, path: str, params: dict[str, Any] | None = None
) -> Any:
    url = args.server.rstrip("/") + "/api/v1" + path
    body = json.dumps(params or {}).encode() if method == "POST" else None
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Accept", "application/json")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        with exc:
            try:
                payload = json.load(exc)
            except ValueError:
                payload = {}
        code = payload.get("error", exc.reason) if isinstance(payload, dict) else exc.reason
        message = payload.get("message", "") if isinstance(payload, dict) else ""
        raise ApiFailure(exc.code, str(code), str(message)) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiFailure(0, "unreachable", f"cannot reach {args.server}: {reason}") from exc
