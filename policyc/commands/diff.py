"""`policyc diff OLD NEW`: the traffic a change newly allows or newly denies, grouped, with witnesses."""
from __future__ import annotations

from .. import __version__
from ..compiler.ir import DEFAULT_CLUSTER
from ..compiler.verify.diff import render_markdown, semantic_diff
from ..compiler.verify.findings import finding_json, render_sarif, render_text
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


def register(sub) -> None:
    parser = subcommand(sub, "diff", "semantic difference between two policy sets (Z3)", EXAMPLES)
    parser.add_argument("old", metavar="OLD", help="policy file or directory before the change (- : standard input)")
    parser.add_argument("new", metavar="NEW", help="policy file or directory after the change (- : standard input)")
    add_inventory_arg(parser, required=False)
    add_format_arg(parser, FORMATS)
    parser.add_argument("--cluster-name", default=DEFAULT_CLUSTER, help="the local cluster's name (entity cluster)")
    add_verbosity_args(parser)
    parser.add_argument("--fail-on-change", action="store_true", help="exit 1 when any traffic changes verdict")
    parser.add_argument("--no-new-access", action="store_true",
                        help="exit 1 when a connection that was impossible becomes possible (a pre-merge gate); "
                        "a side opened while the other still denies does not count")
    parser.set_defaults(run=run)


def run(args) -> int:
    old, new = load_policy_args(args, [args.old]), load_policy_args(args, [args.new])
    inventory = load_inventory_arg(args) if args.inventory else None
    changes = semantic_diff(old, new, inventory)
    findings = [c.finding() for c in changes]
    if args.format == "markdown":
        print(render_markdown(changes))
    elif args.format in ("json", "yaml"):
        print(structured({"findings": [finding_json(f) for f in findings]}, args.format))
    elif args.format == "sarif":
        print(render_sarif(findings, __version__, sarif_fallback(args.inventory, [args.new])))
    else:
        say(render_text(findings))
    widened = any(c.widened and c.connection for c in changes)
    return 1 if (args.fail_on_change and changes) or (args.no_new_access and widened) else 0
