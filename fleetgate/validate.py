"""`fleetgate validate PATH...` and `fleetgate schema`: check policy files, print the JSON Schema.

Reads files (through controller.sources) and prints; everything else is policies' pure code.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

from controller import sources
from policies import loading, schema
from policies.kinds import KINDS
from policies.model import PolicySet, RouteKind, Severity

_KIND_ORDER = ("MemberCluster", "TrafficPolicy", "HTTPRoute", "ReferenceGrant", "Release")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = sub.add_parser(
        "validate",
        help="check policy files and report every problem",
        description="Check policy files (directories are searched for *.yaml and *.yml). "
        "Prints one problem per line as file:line:column: path: message; "
        "exits 1 when there is any error.",
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="a policy file or directory")
    validate.set_defaults(handler=run_validate)

    schema_parser = sub.add_parser(
        "schema",
        help="print the JSON Schema of the policy documents",
        description="Print the JSON Schema (draft 2020-12) of the policy kinds, for editors.",
    )
    schema_parser.add_argument("--kind", choices=sorted(KINDS), help="only this kind")
    schema_parser.set_defaults(handler=run_schema)


def run_validate(args: argparse.Namespace) -> int:
    files, read_problems = sources.collect_policy_files(args.paths)
    result = loading.load_documents(files)
    problems = (*read_problems, *result.problems)
    for problem in problems:
        print(problem)
    errors = sum(p.severity is Severity.ERROR for p in problems)
    warnings = len(problems) - errors
    if errors:
        print(f"failed: {_count(errors, 'error')}{_and_warnings(warnings)}", file=sys.stderr)
        return 1
    print(f"ok: {_summary(result.policies)}{_and_warnings(warnings)}")
    return 0


def run_schema(args: argparse.Namespace) -> int:
    print(json.dumps(schema.json_schema(args.kind), indent=2))
    return 0


def _summary(policies: PolicySet) -> str:
    kinds: collections.Counter[str] = collections.Counter()
    kinds["MemberCluster"] = len(policies.clusters)
    kinds["TrafficPolicy"] = sum(r.kind is RouteKind.TRAFFIC_POLICY for r in policies.routes)
    kinds["HTTPRoute"] = sum(r.kind is RouteKind.HTTP_ROUTE for r in policies.routes)
    kinds["ReferenceGrant"] = len(policies.grants)
    kinds["Release"] = len(policies.releases)
    total = sum(kinds.values())
    parts = ", ".join(f"{kinds[k]} {k}" for k in _KIND_ORDER if kinds[k])
    return _count(total, "document") + (f" ({parts})" if parts else "")


def _and_warnings(warnings: int) -> str:
    return f", {_count(warnings, 'warning')}" if warnings else ""


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
