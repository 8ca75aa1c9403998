"""`policyc diff OLD NEW`: the traffic a change newly allows or newly denies, grouped, with witnesses."""
from __future__ import annotations

import argparse

from .. import __version__
from ..compiler.verify.diff import render_markdown, semantic_diff
from ..compiler.verify.findings import render_json, render_sarif, render_text
from .check import sarif_fallback
from .common import bind_services, load_inventory_arg, load_policy_args

FORMATS = ("text", "json", "sarif", "markdown")


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
                        help="exit 1 when a connection that was impossible becomes possible (a pre-merge gate); "
                        "a side opened while the other still denies does not count")
    parser.set_defaults(run=run)


def _load(args, path: str):
    return load_policy_args(argparse.Namespace(**{**vars(args), "paths": [path]}))


def run(args) -> int:
    old, new = _load(args, args.old), _load(args, args.new)
    inventory = load_inventory_arg(args) if args.inventory else None
    old, new = bind_services(args, old, inventory), bind_services(args, new, inventory)
    changes = semantic_diff(old, new, inventory)
    findings = [c.finding() for c in changes]
    if args.format == "markdown":
        print(render_markdown(changes))
    elif args.format == "json":
        print(render_json(findings))
    elif args.format == "sarif":
        print(render_sarif(findings, __version__, sarif_fallback(args.inventory, [args.new])))
    else:
        print(render_text(findings))
    widened = any(c.widened and c.connection for c in changes)
    return 1 if (args.fail_on_change and changes) or (args.no_new_access and widened) else 0
