"""`policyc query`: is one connection allowed, and which rules decided it."""
from __future__ import annotations

from ..compiler.evaluate import Evaluator, Flow
from ..compiler.explain import verdict_json, verdict_text
from .common import (add_inventory_arg, add_policy_args, labelled_endpoint, load_inventory_arg, load_policy_args,
                     parse_port, resolve_endpoints, split_items, structured, subcommand, warn)
from .terminal import say

EXAMPLES = """
policyc query examples/shop/policies --inventory examples/shop/inventory.yaml \\
    --from shop/frontend --to shop/cart --port 8080/TCP
policyc query P --inventory INV --from 'app=web' --from shop/admin --to 203.0.113.7 --port 443/TCP -o json
policyc query P --inventory INV --from shop/a --to shop/b --port 53/UDP --expect deny   # exit 1 if allowed
policyc query P --from 'namespace=shop,app=web' --to 203.0.113.7 --port 443   # no inventory: a pod by its labels
"""


def register(sub) -> None:
    parser = subcommand(sub, "query", "verdict of one connection, with the rules that decided it", EXAMPLES,
                        answer_no="with --expect, an answer is not the expected verdict")
    add_policy_args(parser)
    add_inventory_arg(parser, required=False)
    parser.add_argument("--from", dest="src", action="append", required=True, metavar="ENDPOINT",
                        help="source: ns/pod, node name, IP address, or a label selector (app=web,namespace=x); "
                        "repeated: the union. Without --inventory: an address, or one pod given by its labels "
                        "(namespace=x,app=web), as check and verify print their examples")
    parser.add_argument("--to", dest="dst", action="append", required=True, metavar="ENDPOINT",
                        help="destination, same forms as --from; repeated: the union")
    parser.add_argument("--port", action="append", required=True, metavar="PORT",
                        help="PORT/PROTOCOL, e.g. 80/TCP, 53/UDP (ICMP: the type, 8/ICMP); a bare number is TCP; "
                        "comma-separated, repeatable: each is asked")
    parser.add_argument("--expect", choices=("allow", "deny"),
                        help="exit 1 unless every answer is this verdict (for scripts)")
    parser.set_defaults(run=run)


def pairs(srcs: list, dsts: list) -> tuple[list, int]:
    """Every (source, destination) pair, and how many pairs of an endpoint with itself were left out:
    a pod always reaches itself (R11.5), so in a union such pairs would answer ALLOW whatever the
    policy says, as matrix's ``-`` cells and verify's invariants do not count them. Asked alone
    (``--from shop/a --to shop/a``) the pair is answered."""
    every = [(s, d) for s in srcs for d in dsts]
    kept = [(s, d) for s, d in every if s != d] if len(every) > 1 else every
    return kept, len(every) - len(kept)


def run(args) -> int:
    policy = load_policy_args(args)
    ports = [parse_port(item) for item in split_items(args.port, "--port")]
    if args.inventory:
        inventory = load_inventory_arg(args)
        srcs = resolve_endpoints(inventory, args.src, "--from")
        dsts = resolve_endpoints(inventory, args.dst, "--to")
    else:
        srcs = [labelled_endpoint(ref, "--from", args.cluster_name) for ref in args.src]
        dsts = [labelled_endpoint(ref, "--to", args.cluster_name) for ref in args.dst]
    asked, selves = pairs(srcs, dsts)
    if selves:
        warn(args, f"{selves} pair(s) of an endpoint with itself left out: a pod always reaches itself (R11.5)")
    evaluator = Evaluator(policy)
    verdicts = [evaluator.evaluate(Flow(s, d, protocol, port)) for s, d in asked for port, protocol in ports]
    if args.format in ("json", "yaml"):
        print(structured({"queries": [verdict_json(v) for v in verdicts]}, args.format))
    else:
        near = [{d.direction: evaluator.near_misses(d, v.flow) for d in (v.egress, v.ingress)} for v in verdicts]
        say("\n\n".join(verdict_text(v, n) for v, n in zip(verdicts, near)))
    if args.expect and any(v.action.value != args.expect for v in verdicts):
        return 1
    return 0
