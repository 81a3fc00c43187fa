"""`fleetgate explain`: which document and rule a request matches, why, and where it would go.

Reads policy files (through controller.sources) and prints; the decision is policies' pure code,
run on the table the files compile to. Every endpoint is taken as healthy (explain has no health
checks), so backend shares are those of a fully healthy fleet, split over failover tiers and
clusters by `policies.balancing` exactly as the gateway would.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from controller import sources
from policies import balancing, filters, loading, matching, precedence, table
from policies.errors import PolicyError
from policies.matching import RequestHead
from policies.model import HeaderModifier, PolicySet, Route, Severity
from policies.table import Backend, CompiledRule, RoutingTable

Report = dict[str, Any]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "explain",
        help="say which rule a request matches, why, and where it goes",
        description="Match one request against policy files: the document and rule that win and "
        "why (against the other candidates), the filters that apply, and the backends with their "
        "share of traffic per cluster and failover tier (all endpoints taken as healthy), or the "
        "local reply (404 no route, redirect Location, 500 ...).",
    )
    parser.add_argument(
        "-c",
        "--config",
        action="append",
        required=True,
        metavar="PATH",
        help="a policy file or directory (repeatable)",
    )
    parser.add_argument("-X", "--request", dest="method", default="GET", help="method (GET)")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeatable); 'Host: name' overrides the URL's host",
    )
    parser.add_argument("url", metavar="URL", help="e.g. http://shop.example.com/cart?x=1")
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    try:
        request, raw_headers = parse_request(args.method, args.url, args.header)
    except ValueError as exc:
        print(f"explain: {exc}", file=sys.stderr)
        return 2
    try:
        result = loading.load_documents(sources.read_policy_files(args.config))
        compiled = table.compile_table(
            result.policies,
            table.inventory_from_clusters(result.policies.clusters),
            version=0,
            refused=result.refused,
        )
    except PolicyError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    errors = [p for p in result.problems if p.severity is Severity.ERROR]
    for problem in errors:
        print(problem, file=sys.stderr)
    if errors:
        print("explain: documents with errors are left out of this explanation", file=sys.stderr)
    report = explain(result.policies, compiled, request, raw_headers)
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        print(format_text(report))
    return 1 if errors else 0


def parse_request(
    method: str, url: str, header_lines: Sequence[str]
) -> tuple[RequestHead, list[tuple[str, str]]]:
    """The request head the gateway would build; ValueError on a bad URL or header line."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the URL must be http(s)://host/path, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    raw: list[tuple[str, str]] = []
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"a header must be 'Name: value', got {line!r}")
        raw.append((name.strip(), value.strip()))
    joined: dict[str, str] = {}
    for name, value in raw:
        key = name.lower()
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    host = (
        joined.get("host", parts.hostname).rsplit(":", 1)[0] if "host" in joined else parts.hostname
    )
    head = RequestHead(
        method=method.upper(),
        host=host.lower().rstrip("."),
        path=parts.path or "/",
        query=parts.query,
        headers=joined,
        scheme=parts.scheme,
        port=port,
    )
    return head, raw


def explain(
    policies: PolicySet,
    compiled: RoutingTable,
    head: RequestHead,
    raw_headers: Sequence[tuple[str, str]],
) -> Report:
    """The explanation as plain JSON-able data (the `--output json` form)."""
    report: Report = {
        "request": {
            "method": head.method,
            "scheme": head.scheme,
            "host": head.host,
            "port": head.port,
            "path": head.path,
            "query": head.query,
            "headers": [list(h) for h in raw_headers],
        },
        "matched": False,
        "policy": None,
        "kind": None,
        "source": None,
        "rule": None,
        "rule_source": None,
        "match": None,
        "why": None,
        "candidates": [],
        "decision": "reject",
        "status": 404,
        "reason": "no_route",
        "location": None,
        "path": None,
        "host": None,
        "request_headers": None,
        "request_header_modifiers": [],
        "response_header_modifiers": [],
        "mirrors": [],
        "backends": [],
    }
    found = compiled.entry_for(head.host)
    candidates = [] if found is None else matching.candidates(found[1], head)
    if found is None or not candidates:
        return report
    entry_name = found[0]
    winner = candidates[0]
    route = _route(policies, winner)
    winner_key = _key(winner, entry_name)
    report.update(
        matched=True,
        policy=winner.route_id,
        kind=winner.route_kind,
        source=_where(route.origin) if route else None,
        rule=winner.rule_id,
        rule_source=_where(route.rules[winner.rule_index].origin) if route else None,
        match=winner.match_index,
        why=_why(winner_key, candidates[1:], entry_name),
        candidates=[_candidate(c, entry_name, winner_key) for c in candidates],
        request_header_modifiers=[_modifier(m) for m in winner.request_headers],
        response_header_modifiers=[_modifier(m) for m in winner.response_headers],
        mirrors=[{"backend": m.backend.id, "percent": m.percent} for m in winner.mirrors],
    )
    report.update(_outcome(winner, head, raw_headers))
    return report


def _outcome(rule: CompiledRule, head: RequestHead, raw: Sequence[tuple[str, str]]) -> Report:
    decision = matching.act(rule, head, roll=0.0)
    if isinstance(decision, matching.Redirect):
        return {
            "decision": "redirect",
            "status": decision.status,
            "reason": None,
            "location": decision.location,
        }
    if not rule.backends or rule.total_weight <= 0:
        return {"decision": "reject", "status": 500, "reason": "no_backend"}
    backends = [entry for b in rule.backends for entry in _backend_rows(b, rule, head, raw)]
    if rule.invalid_backend_weight == rule.total_weight:
        return {
            "decision": "reject",
            "status": 500,
            "reason": "invalid_backend",
            "backends": backends,
        }
    path, host = _rewritten(rule.rewrite, rule, head)
    return {
        "decision": "forward",
        "status": None,
        "reason": None,
        "path": path,
        "host": host,
        "request_headers": [list(h) for h in filters.edit_headers(raw, rule.request_headers)],
        "backends": backends,
    }


def _backend_rows(
    backend: Backend, rule: CompiledRule, head: RequestHead, raw: Sequence[tuple[str, str]]
) -> list[Report]:
    """One row per cluster the backend can use, with its share of the rule's traffic."""
    share = backend.weight / rule.total_weight
    base: Report = {
        "backend": backend.id,
        "name": backend.service.name,
        "namespace": backend.service.namespace,
        "port": backend.service.port,
        "backend_weight": backend.weight,
        "backend_share": share,
    }
    if not backend.resolved:
        return [
            {
                **base,
                "cluster": None,
                "tier": None,
                "priority": None,
                "weight": 0,
                "share": share,
                "status": 500,
                "reason": "invalid_backend",
            }
        ]
    extra: Report = {}
    if backend.rewrite is not None or backend.request_headers:
        path, host = _rewritten(backend.rewrite or rule.rewrite, rule, head)
        headers = filters.edit_headers(raw, rule.request_headers + backend.request_headers)
        extra = {"path": path, "host": host, "request_headers": [list(h) for h in headers]}
    view = balancing.view_backend(backend, lambda endpoint: True)
    shares = _cluster_shares(view)
    rows = []
    for tier, target in _tiers(backend):
        cluster_share = shares.get(target.cluster, 0.0)
        rows.append(
            {
                **base,
                "cluster": target.cluster,
                "tier": tier,
                "priority": target.priority,
                "weight": target.weight,
                "share": share * cluster_share,
                "endpoints": [e.address for e in target.endpoints],
                "status": None if view.by_percent else 503,
                "reason": None if view.by_percent else "no_healthy_backend",
                **extra,
            }
        )
    if not rows:  # resolved, but every cluster's weight is 0
        rows.append(
            {
                **base,
                "cluster": None,
                "tier": None,
                "priority": None,
                "weight": 0,
                "share": share,
                "status": 503,
                "reason": "no_healthy_backend",
            }
        )
    return rows


def _tiers(backend: Backend) -> list[tuple[int, table.ClusterTarget]]:
    priorities = sorted({t.priority for t in backend.targets})
    return [(priorities.index(t.priority), t) for t in backend.targets]


def _cluster_shares(view: balancing.BackendView) -> dict[str, float]:
    """Fraction of the backend's traffic each cluster takes under the view."""
    shares: dict[str, float] = {}
    if not view.by_percent:
        return shares
    for tier, load in zip(view.tiers, view.loads.loads, strict=True):
        start = 0.0
        for pick, cut in zip(tier.picks, tier.cuts, strict=True):
            end = min(cut, 1.0)
            cluster = pick.target.cluster
            shares[cluster] = shares.get(cluster, 0.0) + load / 100 * (end - start)
            start = end
    return shares


def _rewritten(rewrite: Any, rule: CompiledRule, head: RequestHead) -> tuple[str, str | None]:
    if rewrite is None:
        return head.path, None
    path = filters.rewrite_path(
        head.path, rewrite.path, matching.matched_prefix(rule.match, head.path)
    )
    return path, rewrite.hostname


def _route(policies: PolicySet, rule: CompiledRule) -> Route | None:
    for route in policies.routes:
        if route.id == rule.route_id and route.kind.value == rule.route_kind:
            return route
    return None


def _key(rule: CompiledRule, entry_name: str) -> precedence.Key:
    key = table.precedence_key(rule, entry_name)
    assert key is not None  # every rule of an entry serves it
    return key


def _why(winner: precedence.Key, others: Sequence[CompiledRule], entry_name: str) -> str:
    if not others:
        return "it is the only rule that matches"
    runner_up = others[0]
    reason = precedence.why(winner, _key(runner_up, entry_name))
    return f"beats {runner_up.rule_id} (match {runner_up.match_index}): {reason}"


def _candidate(rule: CompiledRule, entry_name: str, winner: precedence.Key) -> Report:
    key = _key(rule, entry_name)
    return {
        "policy": rule.route_id,
        "kind": rule.route_kind,
        "rule": rule.rule_id,
        "match": rule.match_index,
        "key": key._asdict(),
        "loses_because": None if key == winner else precedence.why(winner, key),
    }


def _modifier(modifier: HeaderModifier) -> Report:
    return {
        "set": [list(p) for p in modifier.set],
        "add": [list(p) for p in modifier.add],
        "remove": list(modifier.remove),
    }


def _where(origin: Any) -> str | None:
    if not origin.line:
        return str(origin.file) if origin.file != "<memory>" else None
    return f"{origin.file}:{origin.line}:{origin.column}"


def format_text(report: Report) -> str:
    """The report for a person: one labelled line per fact."""
    request = report["request"]
    query = f"?{request['query']}" if request["query"] else ""
    url = f"{request['scheme']}://{request['host']}{request['path']}{query}"
    lines = [f"request    {request['method']} {url}"]
    if not report["matched"]:
        lines.append("matched    nothing: 404 no_route")
        return "\n".join(lines)
    source = f" ({report['source']})" if report["source"] else ""
    lines.append(f"matched    {report['kind']} {report['policy']}{source}")
    rule_source = f" at {report['rule_source']}" if report["rule_source"] else ""
    lines.append(f"rule       {report['rule']}, match {report['match']}{rule_source}")
    lines.append(f"why        {report['why']}")
    for other in report["candidates"][2:]:  # the first two are in "why"
        lines.append(
            f"           {other['rule']} (match {other['match']}) also matches; "
            f"the winner wins: {other['loses_because']}"
        )
    for label, key in (
        ("request", "request_header_modifiers"),
        ("response", "response_header_modifiers"),
    ):
        for modifier in report[key]:
            lines.append(f"filter     {label} headers: {_modifier_text(modifier)}")
    for mirror in report["mirrors"]:
        lines.append(f"filter     mirror {mirror['percent']:g}% to {mirror['backend']}")
    if report["decision"] == "redirect":
        lines.append(f"reply      {report['status']} redirect to {report['location']}")
    elif report["decision"] == "reject":
        lines.append(f"reply      {report['status']} {report['reason']}")
    else:
        host = report["host"] or "unchanged"
        lines.append(f"upstream   path {report['path']}, host {host}")
    lines.extend(_backend_text(row) for row in report["backends"])
    return "\n".join(lines)


def _modifier_text(modifier: Report) -> str:
    parts = [f"set {n}: {v}" for n, v in modifier["set"]]
    parts += [f"add {n}: {v}" for n, v in modifier["add"]]
    parts += [f"remove {n}" for n in modifier["remove"]]
    return "; ".join(parts)


def _backend_text(row: Report) -> str:
    share = f"{100 * row['share']:.1f}%"
    backend = f"backend    {row['backend']} weight {row['backend_weight']}"
    if row["cluster"] is None:
        return f"{backend}: {share} get {row['status']} {row['reason']}"
    text = (
        f"{backend} -> cluster {row['cluster']} "
        f"(tier {row['tier']}, priority {row['priority']}, weight {row['weight']}): {share}"
    )
    if row["status"] is not None:
        text += f", {row['status']} {row['reason']}"
    if "path" in row:
        host = row["host"] or "unchanged"
        text += f", upstream path {row['path']}, host {host}"
    return text
