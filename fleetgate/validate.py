"""`fleetgate validate PATH...` and `fleetgate schema`: check policy files, print the JSON Schema.

`--gateway-config FILE` checks a gateway config file the way `fleetgate run` and `fleetgate
gateway` read it (policies.gatewayconfig), with the same file:line:col lines; a GatewayConfig
among the policy paths is refused as policy directories refuse it, with a hint to use the option
(it is the gateway's file, not a policy, so mixing them in one directory is a mistake worth
naming). `fleetgate schema --kind GatewayConfig` prints the file's schema.

Reads files (through controller.sources) and prints; everything else is policies' pure code.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from controller import sources
from policies import loading, schema
from policies.gatewayconfig import GatewayConfig, load_gateway_config
from policies.model import Origin, PolicySet, Problem, RouteKind, Severity

_KIND_ORDER = ("MemberCluster", "TrafficPolicy", "HTTPRoute", "ReferenceGrant", "Release")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate = sub.add_parser(
        "validate",
        help="check policy files and report every problem",
        description="Check policy files (directories are searched for *.yaml and *.yml) "
        "and gateway config files. "
        "Prints one problem per line as file:line:column: path: message; "
        "exits 1 when there is any error.",
    )
    validate.add_argument("paths", nargs="*", metavar="PATH", help="a policy file or directory")
    validate.add_argument(
        "--gateway-config",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a GatewayConfig file, as given to run/gateway --gateway-config (repeatable)",
    )
    validate.set_defaults(handler=run_validate, parser=validate)

    schema_parser = sub.add_parser(
        "schema",
        help="print the JSON Schema of the policy documents",
        description="Print the JSON Schema (draft 2020-12) of the policy kinds, for editors; "
        "--kind GatewayConfig prints the gateway config file's.",
    )
    schema_parser.add_argument(
        "--kind",
        choices=sorted(schema.SCHEMA_KINDS),
        help="only this kind (GatewayConfig: the gateway config file, not a policy kind)",
    )
    schema_parser.set_defaults(handler=run_schema)


def run_validate(args: argparse.Namespace) -> int:
    if not args.paths and not args.gateway_config:
        args.parser.error("give a policy PATH or --gateway-config FILE")
    problems: list[Problem] = []
    summaries: list[str] = []
    if args.paths:
        files, read_problems = sources.collect_policy_files(args.paths)
        result = loading.load_documents(files)
        problems += (*read_problems, *result.problems)
        summaries.append(_summary(result.policies))
    hint = any(_is_gateway_config(p) for p in problems)
    configs = _check_gateway_configs(args.gateway_config, problems)
    if configs:
        summaries.append(_count(configs, "GatewayConfig"))
    for problem in problems:
        print(problem)
    if hint:
        print(
            "hint: a GatewayConfig is the gateway config file, not a policy; "
            "check it with --gateway-config FILE",
            file=sys.stderr,
        )
    errors = sum(p.severity is Severity.ERROR for p in problems)
    warnings = len(problems) - errors
    if errors:
        print(f"failed: {_count(errors, 'error')}{_and_warnings(warnings)}", file=sys.stderr)
        return 1
    print(f"ok: {'; '.join(summaries)}{_and_warnings(warnings)}")
    return 0


def _check_gateway_configs(paths: Sequence[Path], problems: list[Problem]) -> int:
    """Read each gateway config file; add its problems; the number that are valid."""
    valid = 0
    for path in paths:
        if path.is_dir():  # a policy directory is walked; this option names one file
            message = "is a directory; --gateway-config takes a file"
            problems.append(Problem(Origin(str(path), 0, 0), "", message))
            continue
        read, unreadable = sources.collect_policy_files([path])  # same messages as PATHs
        problems += unreadable
        for name, text in read:
            config, found = load_gateway_config(name, text)
            problems += found
            valid += isinstance(config, GatewayConfig)
    return valid


def _is_gateway_config(problem: Problem) -> bool:
    return problem.path == "kind" and f'got "{schema.GATEWAY_CONFIG_KIND}"' in problem.message


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
