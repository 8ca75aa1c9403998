"""`policyc query`: is one connection allowed, and which rules decided it."""
from __future__ import annotations

from ..compiler.evaluate import Evaluator, Flow
from ..compiler.explain import verdict_json, verdict_text
from .common import (add_inventory_arg, add_policy_args, load_inventory_arg, load_policy_args, parse_port,
                     resolve_endpoints, structured, subcommand)
from .terminal import say

EXAMPLES = """
policyc query examples/shop/policies --inventory examples/shop/inventory.yaml \\
    --from shop/frontend --to shop/cart --port 8080/TCP
policyc query P --inventory INV --from 'app=web' --from shop/admin --to 203.0.113.7 --port 443/TCP -o json
policyc query P --inventory INV --from shop/a --to shop/b --port 53/UDP --expect deny   # exit 1 if allowed
"""


def register(sub) -> None:
    parser = subcommand(sub, "query", "verdict of one connection, with the rules that decided it", EXAMPLES)
    add_policy_args(parser)
    add_inventory_arg(parser, required=True)
    parser.add_argument("--from", dest="src", action="append", required=True, metavar="ENDPOINT",
                        help="source: ns/pod, node name, IP address, or a label selector (app=web,namespace=x); "
                        "repeated: the union")
    parser.add_argument("--to", dest="dst", action="append", required=True, metavar="ENDPOINT",
                        help="destination, same forms as --from; repeated: the union")
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
    if args.format in ("json", "yaml"):
        print(structured({"queries": [verdict_json(v) for v in verdicts]}, args.format))
    else:
        near = [{d.direction: evaluator.near_misses(d, v.flow) for d in (v.egress, v.ingress)} for v in verdicts]
        say("\n\n".join(verdict_text(v, n) for v, n in zip(verdicts, near)))
    if args.expect and any(v.action.value != args.expect for v in verdicts):
        return 1
    return 0
