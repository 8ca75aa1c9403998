"""`policyc check`: findings about a policy set (shadowed, dead, duplicate, over-broad, ...)."""
from __future__ import annotations

import json

from .. import __version__
from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.source import expand_paths
from ..compiler.verify.checks import run_checks, suppress
from ..compiler.verify.findings import Level, render_json, render_sarif, render_text
from .common import add_inventory_arg, add_policy_args, bind_services, load_inventory_arg, load_policy_args

FAIL_ON = ("error", "warning", "note", "never")


def register(sub) -> None:
    parser = sub.add_parser("check", help="find shadowed, dead, duplicate and over-broad rules (Z3)")
    add_policy_args(parser, ("text", "json", "sarif"))
    add_inventory_arg(parser, required=False)
    parser.add_argument("--fail-on", choices=FAIL_ON, default="error",
                        help="exit 1 when a finding of this severity or worse remains (default: error)")
    parser.add_argument("--baseline", metavar="FILE",
                        help="accepted findings: a previous `check --format json` output")
    parser.set_defaults(run=run)


def load_baseline(path: str | None) -> set[str]:
    """Fingerprints of accepted findings; the file is what `--format json` printed."""
    if not path:
        return set()
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return {str(f["fingerprint"]) for f in data["findings"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PolicycError(Diagnostic.simple(f"--baseline {path}: not a `policyc check --format json` output "
                                             f"({type(exc).__name__}: {exc})")) from None


def fails(findings, fail_on: str) -> bool:
    if fail_on == "never":
        return False
    return any(f.level.rank >= Level(fail_on).rank for f in findings)


def sarif_fallback(inventory, paths) -> str:
    """Where SARIF places findings that belong to no rule: the inventory they are about, else the first policy file."""
    files = expand_paths(inventory or paths)
    return str(files[0]) if files else ""


def run(args) -> int:
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args) if args.inventory else None
    policy = bind_services(args, policy, inventory)
    baseline = load_baseline(args.baseline)
    findings = suppress(run_checks(policy, inventory), policy, baseline)
    if args.format == "json":
        print(render_json(findings))
    elif args.format == "sarif":
        print(render_sarif(findings, __version__, sarif_fallback(args.inventory, args.paths)))
    else:
        print(render_text(findings))
    return 1 if fails(findings, args.fail_on) else 0
