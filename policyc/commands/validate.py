"""`policyc validate`: parse and check policies; exit 0 when valid, 2 when not."""
from __future__ import annotations

from .. import __version__
from ..compiler.diagnostics import Severity, render
from ..compiler.frontend import build_policy_set
from ..compiler.source import read_documents
from .common import add_policy_args, no_policies, structured, subcommand
from .terminal import say

EXAMPLES = """
policyc validate examples/shop/policies
kubectl get cnp,ccnp,netpol -A -o yaml | policyc validate -
policyc validate policies/ -o sarif > policyc.sarif   # upload to code scanning
"""


def register(sub) -> None:
    parser = subcommand(sub, "validate", "parse and validate policies", EXAMPLES)
    add_policy_args(parser, ("text", "json", "yaml", "sarif"))
    parser.add_argument("--allow-no-policies", action="store_true",
                        help="inputs without any network policy are valid, not an error (a pre-commit hook is "
                        "given whichever YAML files changed)")
    parser.set_defaults(run=run)


def run(args) -> int:
    docs, problems = read_documents(args.paths)
    result = build_policy_set(docs, args.cluster_name)
    result.diagnostics[:0] = problems  # files that did not parse or were empty, then the parsed ones
    policy = result.policy
    if not policy.policies and not args.allow_no_policies \
            and not any(d.severity is Severity.ERROR for d in result.diagnostics):
        result.diagnostics.append(no_policies(args.paths, "nothing was validated"))
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    if args.format == "sarif":
        print(render(result.diagnostics, "sarif", __version__))
    elif args.format in ("json", "yaml"):
        print(structured({
            "valid": not errors,
            "policies": len(policy.policies),
            "rules": len(policy.rules),
            "skipped": result.skipped,
            "diagnostics": [d.to_json() for d in result.diagnostics],
        }, args.format))
    else:
        lines = [str(d) for d in result.diagnostics if not (args.quiet and d.severity is not Severity.ERROR)]
        if args.verbose:
            lines += [f"{line}: skipped (not a network policy)" for line in result.skipped]
        lines.append(f"invalid: {len(errors)} error(s)" if errors
                     else f"valid: {len(policy.policies)} policies, {len(policy.rules)} rules")
        say("\n".join(lines))
    return 2 if errors else 0
