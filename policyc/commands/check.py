"""`policyc check`: findings about a policy set (shadowed, dead, duplicate, over-broad, ...)."""
from __future__ import annotations

import json
import sys

from .. import __version__
from ..compiler.diagnostics import Diagnostic, PolicycError, Severity
from ..compiler.frontend import IGNORE_ANNOTATION
from ..compiler.source import expand_paths, gc_paused, read_capped
from ..compiler.verify.checks import run_checks, suppress
from ..compiler.verify.findings import CATALOGUE, Level, finding_json, render_sarif, render_text, witness_text
from .common import (add_inventory_arg, add_policy_args, bind_services, load_inventory_arg, load_policy_args,
                     structured, subcommand)
from .terminal import say

FAIL_ON = ("error", "warning", "note", "never")
EXAMPLES = """
policyc check examples/shop/policies --inventory examples/shop/inventory.yaml
kubectl get cnp,ccnp,netpol -A -o yaml | policyc check -
policyc check policies/ -o sarif > findings.sarif          # findings and invalid input as SARIF results
policyc check policies/ -o json > baseline.json && policyc check policies/ --baseline baseline.json
"""


def register(sub) -> None:
    parser = subcommand(sub, "check", "find shadowed, dead, duplicate and over-broad rules (Z3)", EXAMPLES,
                        answer_no="a finding at or above --fail-on remains")
    add_policy_args(parser, ("text", "json", "yaml", "sarif", "markdown"))
    add_inventory_arg(parser, required=False)
    parser.add_argument("--fail-on", choices=FAIL_ON, default="error",
                        help="exit 1 when a finding of this severity or worse remains (default: error)")
    parser.add_argument("--baseline", action="append", metavar="FILE",
                        help="accepted findings: a previous `check -o json` output (repeatable: all of them)")
    parser.set_defaults(run=run)


def load_baselines(paths: list[str] | None) -> set[str]:
    """Fingerprints of the findings every baseline file accepts."""
    return set().union(*(load_baseline(p) for p in paths or ()))


def load_baseline(path: str) -> set[str]:
    """Fingerprints of accepted findings; the file is what `-o json` printed."""
    try:
        data = json.loads(read_capped(path))
        return {str(f["fingerprint"]) for f in data["findings"]}
    except PolicycError as exc:
        problem = exc.diagnostics[0].message
    except ValueError as exc:
        problem = f"not JSON ({exc})"
    except (KeyError, TypeError):
        problem = "JSON without a list of findings with fingerprints"
    raise PolicycError(Diagnostic.simple(f"--baseline {path}: {problem}; expected what `policyc check -o json` "
                                         "prints", code="invalid-baseline"))


def fails(findings, fail_on: str) -> bool:
    if fail_on == "never":
        return False
    return any(f.level.rank >= Level(fail_on).rank for f in findings)


def sarif_fallback(inventory, paths) -> str:
    """Where SARIF places findings that belong to no rule: the inventory they are about, else the first policy file."""
    files = expand_paths(inventory or paths)
    return str(files[0]) if files else ""


def render_markdown(findings) -> str:
    """A table for a pull-request comment: one row per finding, its witness in the last column."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = [f"| {f.level.value} | {f.check} {f.info.name} | {cell(str(f.location or ''))} | {cell(f.message)} | "
            f"{cell(witness_text(f.witness)) if f.witness else ''} |" for f in findings]
    head = f"### policyc check: {len(findings)} finding(s)\n\n| severity | check | where | message | example |\n" \
           "|---|---|---|---|---|"
    return "\n".join([head] + rows)


def unknown_ignores(policy) -> list[Diagnostic]:
    """``policyc.io/ignore`` ids of the right form that name no check: they would suppress nothing."""
    return [Diagnostic(Severity.WARNING, f"{i!r} in {IGNORE_ANNOTATION} is no check of `policyc check` "
                       "(docs/checks.md): it suppresses nothing", p.origin.file, p.origin.line, p.origin.column,
                       "metadata.annotations", "unknown-check-id")
            for p in policy.policies for i in p.ignore if i != "all" and i not in CATALOGUE]


def run(args) -> int:
    """Every object of a check lives until it prints (the inputs, each flow's memo of Z3 terms) and few
    form cycles, so the collector only rescanned them: a sixth of the CPU at 10,000 pods (issue 15)."""
    with gc_paused():
        return _run(args)


def _run(args) -> int:
    policy = load_policy_args(args, require=True)
    inventory = load_inventory_arg(args) if args.inventory else None
    policy = bind_services(args, policy, inventory)
    baseline = load_baselines(args.baseline)
    if not args.quiet:
        for diag in unknown_ignores(policy):
            print(diag, file=sys.stderr)
    found = run_checks(policy, inventory)
    findings = suppress(found, policy, baseline)
    hidden = len(found) - len(findings)
    if args.format in ("json", "yaml"):
        print(structured({"findings": [finding_json(f) for f in findings], "suppressed": hidden}, args.format))
    elif args.format == "sarif":
        print(render_sarif(findings, __version__, sarif_fallback(args.inventory, args.paths)))
    elif args.format == "markdown":
        print(render_markdown(findings) + (f"\n\n{hidden} finding(s) suppressed ({IGNORE_ANNOTATION}, --baseline)"
                                           if hidden else ""))
    else:
        say(render_text(findings) + (f", {hidden} suppressed ({IGNORE_ANNOTATION}, --baseline)" if hidden else ""))
    return 1 if fails(findings, args.fail_on) else 0
