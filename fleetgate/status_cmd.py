"""`fleetgate status --controller URL`: member clusters, gateways and policies as the controller
sees them (`GET /v1/status`, controller.statusapi). Output formatting only; I/O: one HTTP GET.

    controller ctl-0 (leader)  snapshot v1718000000123: 2/2 gateways on v1718000000123
    CLUSTER  STATE  PRIO  SERVICES (ready/total)
    east     up     0     shop/web:80 2/2
    west     down   0     shop/web:80 1/1   unreachable: ...
    GATEWAY  ZONE   REPLICA     APPLIED            BEHIND  LAG
    gw-1     a      (this one)  1718000000123      0       0.0s
    gw-2     b      ctl-1       sha:9f2c61d0a4be   3       12.4s
    POLICY                         ACCEPTED  PROBLEMS
    TrafficPolicy shop/storefront  yes
    HTTPRoute other/grab           no        spec.hostnames[0]: hostname "shop.example.com" ...
    DNS NAME                CONDITION  ADDRESSES       ERROR
    web.east.internal:8080  stale      10.0.0.7:8080   SERVFAIL from 10.0.0.2:53 (3 in a row)

The REPLICA column appears when an entry has one: a leader lists the gateways polling the other
controller replicas too (its own show "(this one)"); APPLIED is then the leader's version with
the content they serve, or the start of its checksum when the leader has no such version.

The DNS table appears when the document has a `dns` section (statusapi.dns_section: a list, or
`{"names": [...]}` as file mode's `/status` has it); without one nothing is said about DNS, since
"none" would be a guess.

Exit status: 0 when every reachable part is healthy; 1 when a cluster is not up, a live gateway
is behind, a policy is not accepted, or a DNS name is not fresh (stale: serving its last answer
within the grace, like a cluster that is down; failed or pending: nothing published), so scripts
can wait on it; 2 when the controller cannot be asked.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TextIO


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status",
        help="member clusters, gateways and policies as the controller sees them",
        description="Ask a fleetgate controller for its view of the fleet: member clusters "
        "(reachable, endpoints ready/total per service), gateways (version applied, lag) and "
        "policies with their problems.",
    )
    parser.add_argument("--controller", required=True, metavar="URL", help="controller base URL")
    parser.add_argument("--json", action="store_true", help="print the status document as JSON")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    url = args.controller.rstrip("/") + "/v1/status"
    try:
        document = fetch(url, timeout_s=args.timeout)
    except (OSError, ValueError) as exc:
        print(f"fleetgate status: cannot read {url}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(document, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        render(document, sys.stdout)
    return 0 if healthy(document) else 1


def fetch(url: str, *, timeout_s: float) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        document = json.loads(response.read())
    if not isinstance(document, dict):
        raise ValueError("the answer is not a JSON object")
    return document


def healthy(document: Mapping[str, Any]) -> bool:
    clusters = document.get("clusters") or []
    gateways = document.get("gateways") or []
    policies = document.get("policies") or []
    return (
        all(c.get("state") in ("up", "static") for c in clusters)
        and all(g.get("behind", 0) == 0 for g in gateways if g.get("live"))
        and all(p.get("accepted") for p in policies)
        and all(n.get("condition") == "fresh" for n in _dns_names(document))
    )


def _dns_names(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    section = document.get("dns")
    names = section.get("names") if isinstance(section, Mapping) else section
    return list(names or [])


def render(document: Mapping[str, Any], out: TextIO) -> None:
    controller = document.get("controller") or {}
    snapshot = document.get("snapshot") or {}
    role = "leader" if controller.get("leader") else f"standby; leader {controller.get('holder')}"
    version = snapshot.get("version")
    published = f"snapshot v{version}: {snapshot.get('rollout')}" if version else "no snapshot yet"
    out.write(f"controller {controller.get('id')} ({role})  {published}\n\n")

    rows = []
    for cluster in document.get("clusters") or []:
        services = [
            f"{s['service']} {s['ready']}/{s['total']}" for s in cluster.get("services") or []
        ]
        detail = cluster.get("detail") or ""
        note = detail if cluster.get("state") not in ("up", "static") else ""
        rows.append(
            [
                cluster.get("name", ""),
                cluster.get("state", ""),
                str(cluster.get("priority", "")),
                ", ".join(services) or "-",
                note,
            ]
        )
    _table(out, ["CLUSTER", "STATE", "PRIO", "SERVICES (ready/total)", ""], rows)

    gateways = document.get("gateways") or []
    replicas = any(g.get("replica") for g in gateways)
    rows = [
        [
            g.get("id", ""),
            g.get("zone") or "-",
            *([g.get("replica") or "(this one)"] if replicas else []),
            applied_text(g),
            str(g.get("behind", 0)),
            f"{g.get('lag_s', 0.0):.1f}s",
            "" if g.get("live") else "not seen lately",
        ]
        for g in gateways
    ]
    header = ["GATEWAY", "ZONE", *(["REPLICA"] if replicas else []), "APPLIED", "BEHIND", "LAG", ""]
    _table(out, header, rows)

    rows = []
    for policy in document.get("policies") or []:
        name = "/".join(p for p in (policy.get("namespace"), policy.get("name")) if p)
        accepted = "yes" if policy.get("accepted") else "no"
        if policy.get("held_generation"):
            accepted += f" (serving generation {policy['held_generation']})"
        problems = policy.get("problems") or []
        rows.append(
            [f"{policy.get('kind')} {name}", accepted, _short(problems[0]) if problems else ""]
        )
        rows.extend(["", "", _short(problem)] for problem in problems[1:])
    _table(out, ["POLICY", "ACCEPTED", "PROBLEMS"], rows)

    if "dns" in document:
        rows = [
            [
                name.get("name", ""),
                name.get("condition", ""),
                ", ".join(name.get("addresses") or []) or "-",
                _dns_error(name),
            ]
            for name in _dns_names(document)
        ]
        _table(out, ["DNS NAME", "CONDITION", "ADDRESSES", "ERROR"], rows)


def applied_text(gateway: Mapping[str, Any]) -> str:
    """The version a gateway serves; for another replica's gateway serving content this
    controller never published (or no longer remembers), the start of its checksum instead."""
    applied = gateway.get("applied") or 0
    checksum = gateway.get("checksum")
    if not applied and checksum:
        return f"sha:{checksum[:12]}"
    return str(applied)


def _dns_error(name: Mapping[str, Any]) -> str:
    """Why the last lookup failed (an answer clears it), with the count when it repeats."""
    error = name.get("error")
    if not error:
        return ""
    failures = name.get("failures") or 0
    return f"{_cap(error)} ({failures} in a row)" if failures > 1 else _cap(error)


def _cap(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(problem: str) -> str:
    """A problem without its `k8s:Kind/ns/name:line:col: ` prefix (the row names the object)."""
    head, sep, rest = problem.partition(": ")
    return rest if sep and head.startswith("k8s:") else problem


def _table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if not rows:
        out.write(f"{header[0]}: none\n\n")
        return
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header) - 1)]
    for row in (header, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write(("  ".join([*cells, str(row[-1])])).rstrip() + "\n")
    out.write("\n")
