"""`policyc query`: is one connection allowed, and which rules decided it."""
from __future__ import annotations

import json

from ..compiler.evaluate import Evaluator, Flow
from ..compiler.explain import verdict_json, verdict_text
from .common import (add_inventory_arg, add_policy_args, load_inventory_arg,
                     load_policy_args, parse_port, resolve_endpoints)


def register(sub) -> None:
    parser = sub.add_parser("query", help="verdict of one connection, with the rules that decided it")
    add_policy_args(parser)
    add_inventory_arg(parser, required=True)
    parser.add_argument("--from", dest="src", required=True,
                        help="source: ns/pod, node name, IP address, or a label selector (app=web,namespace=x)")
    parser.add_argument("--to", dest="dst", required=True, help="destination, same forms as --from")
    parser.add_argument("--port", required=True, help="PORT/PROTOCOL, e.g. 80/TCP (ICMP: the type, 8/ICMP)")
    parser.add_argument("--expect", choices=("allow", "deny"),
                        help="exit 1 unless every answer is this verdict (for scripts)")
    parser.set_defaults(run=run)


def run(args) -> int:
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args)
    port, protocol = parse_port(args.port)
    srcs = resolve_endpoints(inventory, args.src, "--from")
    dsts = resolve_endpoints(inventory, args.dst, "--to")
    evaluator = Evaluator(policy)
    verdicts = [evaluator.evaluate(Flow(s, d, protocol, port)) for s in srcs for d in dsts]
    if args.format == "json":
        print(json.dumps({"queries": [verdict_json(v) for v in verdicts]}, indent=2))
    else:
        print("\n\n".join(verdict_text(v) for v in verdicts))
    if args.expect and any(v.action.value != args.expect for v in verdicts):
        return 1
    return 0
