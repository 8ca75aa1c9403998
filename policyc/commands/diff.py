"""`policyc diff OLD NEW`: the traffic a change newly allows or newly denies, grouped, with witnesses."""
from __future__ import annotations

import argparse

from .. import __version__
from ..compiler.verify.diff import Limits, connection_text, gate_lines, render_markdown, semantic_diff
from ..compiler.verify.findings import Level, render_json, render_sarif, render_text, witness_json
from ..compiler import explain
from .check import sarif_fallback
from .common import load_inventory_arg, load_policy_args

FORMATS = ("text", "json", "sarif", "markdown")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def register(sub) -> None:
    parser = sub.add_parser("diff", help="semantic difference between two policy sets (Z3)")
    parser.add_argument("old", metavar="OLD", help="policy file or directory before the change")
    parser.add_argument("new", metavar="NEW", help="policy file or directory after the change")
    parser.add_argument("--inventory", action="append", metavar="INV",
                        help="exact for these endpoints instead of every possible pod (repeatable)")
    parser.add_argument("--format", choices=FORMATS, default="text")
    parser.add_argument("--cluster-name", default="default")
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


def _load(args, path: str):
    return load_policy_args(argparse.Namespace(**{**vars(args), "paths": [path]}))


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
    old, new = _load(args, args.old), _load(args, args.new)
    inventory = load_inventory_arg(args) if args.inventory else None
    result = semantic_diff(old, new, inventory, Limits(args.max_groups, args.max_port_intervals))
    findings = [c.finding() for c in result.changes]
    gate = args.no_new_access
    failed = bool(result.new_connections) or not result.gate_complete
    if args.format == "markdown":
        print(render_markdown(result, gate))
    elif args.format == "json":
        print(render_json(findings, _gate_json(result, gate)))
    elif args.format == "sarif":
        notes = tuple((Level.WARNING, f"incomplete: {t}") for t in result.truncations)
        if gate:
            notes += tuple((Level.ERROR if failed else Level.NOTE, line.strip()) for line in gate_lines(result))
        print(render_sarif(findings, __version__, sarif_fallback(args.inventory, [args.new]), notes))
    else:
        lines = [render_text(findings)] + [f"incomplete: {t}" for t in result.truncations]
        print("\n".join(lines + (gate_lines(result) if gate else [])))
    return 1 if (args.fail_on_change and (result.changes or result.truncations)) or (gate and failed) else 0
