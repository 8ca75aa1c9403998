"""`policyc validate`: parse and check policies; exit 0 when valid, 2 when not."""
from __future__ import annotations

import json

from ..compiler.diagnostics import Severity
from ..compiler.frontend import build_policy_set
from ..compiler.source import read_documents
from .common import add_policy_args


def register(sub) -> None:
    parser = sub.add_parser("validate", help="parse and validate policies")
    add_policy_args(parser)
    parser.set_defaults(run=run)


def run(args) -> int:
    docs, unreadable = read_documents(args.paths)
    result = build_policy_set(docs, args.cluster_name)
    result.diagnostics[:0] = unreadable  # files that did not parse, then what the parsed ones say
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    policy = result.policy
    if args.format == "json":
        print(json.dumps({
            "valid": not errors,
            "policies": len(policy.policies),
            "rules": len(policy.rules),
            "skipped": result.skipped,
            "diagnostics": [d.to_json() for d in result.diagnostics],
        }, indent=2))
    else:
        for diag in result.diagnostics:
            print(diag)
        if args.verbose:
            for line in result.skipped:
                print(f"{line}: skipped (not a network policy)")
        if errors:
            print(f"invalid: {len(errors)} error(s)")
        else:
            print(f"valid: {len(policy.policies)} policies, {len(policy.rules)} rules")
    return 2 if errors else 0
