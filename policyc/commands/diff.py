"""`policyc diff OLD NEW`: the traffic a change newly allows or newly denies, grouped, with witnesses."""
from __future__ import annotations

import argparse

from .. import __version__
from ..compiler import explain
from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.ir import DEFAULT_CLUSTER
from ..compiler.source import STDIN
from ..compiler.verify.diff import Limits, connection_text, gate_lines, render_markdown, semantic_diff
from ..compiler.verify.findings import Level, finding_json, render_sarif, render_text, witness_json
from .check import sarif_fallback
from .common import (add_format_arg, add_inventory_arg, add_verbosity_args, load_inventory_arg, load_policy_args,
                     structured, subcommand)
from .terminal import say

FORMATS = ("text", "json", "yaml", "sarif", "markdown")
EXAMPLES = """
policyc diff old-policies/ new-policies/ --inventory examples/shop/inventory.yaml
policyc diff old/ new/ --no-new-access -o markdown > comment.md   # a pre-merge gate
git show main:policies/shop.yaml | policyc diff - policies/shop.yaml
"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def register(sub) -> None:
    parser = subcommand(sub, "diff", "semantic difference between two policy sets (Z3)", EXAMPLES,
                        answer_no="the change is one that --fail-on-change or --no-new-access refuses")
    parser.add_argument("old", metavar="OLD", help="policy file or directory before the change (- : standard input)")
    parser.add_argument("new", metavar="NEW", help="policy file or directory after the change (- : standard input)")
    add_inventory_arg(parser, required=False)
    add_format_arg(parser, FORMATS)
    parser.add_argument("--cluster-name", default=DEFAULT_CLUSTER, help="the local cluster's name (entity cluster)")
    add_verbosity_args(parser)
    parser.add_argument("--fail-on-change", action="store_true", help="exit 1 when any traffic changes verdict")
    parser.add_argument("--no-new-access", action="store_true",
                        help="exit 1 when a connection that was impossible becomes possible (a pre-merge gate), "
                        "or when the search for one could not finish; a side opened while the other still "
                        "denies does not count")
    parser.add_argument("--max-groups", type=_positive, default=Limits.max_groups, metavar="N",
                        help=f"stop each direction's search for widenings (and for narrowings) after N groups "
                        f"(default {Limits.max_groups}); a stop is reported, and fails --no-new-access while "
                        "new connections may remain")
    parser.add_argument("--max-port-intervals", type=_positive, default=Limits.max_port_intervals, metavar="N",
                        help=f"list a group's ports only when its rules cut the port range into at most N "
                        f"intervals (default {Limits.max_port_intervals})")
    parser.set_defaults(run=run)


def _gate_json(result, gate: bool) -> dict:
    out = {"truncated": [{"direction": t.direction.value, "kind": "widened" if t.widened else "narrowed",
                          "message": t.message, "hides_new_access": t.gate} for t in result.truncations]}
    if gate:
        out["gate"] = {
            "name": "no-new-access", "passed": not result.new_connections and result.gate_complete,
            "complete": result.gate_complete,
            "new_connections": [{"summary": connection_text(c), "direction": c.direction.value,
                                 "flow": witness_json(c.witness),
                                 "opened_by": [explain.rule_json(r) for r in c.deciding],
                                 "before": c.before.reason.value, "after": c.after.reason.value,
                                 "fingerprint": c.finding().fingerprint}
                                for c in result.new_connections]}
    return out


def run(args) -> int:
    if args.old == args.new == STDIN:
        raise PolicycError(Diagnostic.simple("OLD and NEW are both standard input, which is read once, so the "
                                             "change would be compared with itself; give one of them as a file "
                                             "(git show main:p.yaml | policyc diff - p.yaml)", code="invalid-argument"))
    old, new = load_policy_args(args, [args.old]), load_policy_args(args, [args.new])
    inventory = load_inventory_arg(args) if args.inventory else None
    result = semantic_diff(old, new, inventory, Limits(args.max_groups, args.max_port_intervals))
    findings = [c.finding() for c in result.changes]
    gate = args.no_new_access
    failed = bool(result.new_connections) or not result.gate_complete
    if args.format == "markdown":
        print(render_markdown(result, gate))
    elif args.format in ("json", "yaml"):
        print(structured({"findings": [finding_json(f) for f in findings], **_gate_json(result, gate)}, args.format))
    elif args.format == "sarif":
        notes = tuple((Level.WARNING, f"incomplete: {t}") for t in result.truncations)
        if gate:
            notes += tuple((Level.ERROR if failed else Level.NOTE, line.strip()) for line in gate_lines(result))
        print(render_sarif(findings, __version__, sarif_fallback(args.inventory, [args.new]), notes))
    else:
        lines = [render_text(findings)] + [f"incomplete: {t}" for t in result.truncations]
        say("\n".join(lines + (gate_lines(result) if gate else [])))
    return 1 if (args.fail_on_change and (result.changes or result.truncations)) or (gate and failed) else 0
