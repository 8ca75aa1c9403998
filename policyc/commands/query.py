"""`policyc query`: is one connection allowed, and which rules decided it."""
from __future__ import annotations

from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.evaluate import Evaluator, Flow
from ..compiler.explain import service_json, service_text, verdict_json, verdict_text
from ..compiler.services import PREFIX, ServiceMap, ServiceVerdict, decide
from .common import (add_inventory_arg, add_policy_args, bind_services, labelled_endpoint, load_inventory_arg,
                     load_policy_args, parse_port, resolve_endpoints, split_items, structured, subcommand, warn)
from .terminal import say

EXAMPLES = """
policyc query examples/shop/policies --inventory examples/shop/inventory.yaml \\
    --from shop/frontend --to shop/cart --port 8080/TCP
policyc query P --inventory INV --from 'app=web' --from shop/admin --to 203.0.113.7 --port 443/TCP -o json
policyc query P --inventory INV --from shop/a --to shop/b --port 53/UDP --expect deny   # exit 1 if allowed
policyc query P --inventory INV --inventory services.yaml --from shop/frontend --to svc:shop/cart --port 80/TCP
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
                        help="destination, same forms as --from, or a Service: svc:NS/NAME, a ClusterIP, or a node "
                        "with a NodePort as --port (answered per backend, after translation); repeated: the union")
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
    for ref in args.src:
        if ref.startswith(PREFIX):
            raise PolicycError(Diagnostic.simple(f"--from {ref}: a Service is a destination only; its "
                                                 "backends send as pods (name one as namespace/pod)"))
    fronts: list = []
    if args.inventory:
        inventory = load_inventory_arg(args)
        srcs = resolve_endpoints(inventory, args.src, "--from")
        smap = ServiceMap(inventory)
        fronts = [(ref, smap.frontend(ref, port, protocol)) for ref in args.dst for port, protocol in ports]
        services = {ref for ref, f in fronts if f is not None}
        plain = [ref for ref in args.dst if ref not in services]
        dsts = resolve_endpoints(inventory, plain, "--to") if plain else []
    else:
        inventory = None
        srcs = [labelled_endpoint(ref, "--from", args.cluster_name) for ref in args.src]
        dsts = [labelled_endpoint(ref, "--to", args.cluster_name) for ref in args.dst]
    policy = bind_services(args, policy, inventory)
    asked, selves = pairs(srcs, dsts)
    if selves:
        warn(args, f"{selves} pair(s) of an endpoint with itself left out: a pod always reaches itself (R11.5)")
    evaluator = Evaluator(policy)
    answers = [evaluator.evaluate(Flow(s, d, protocol, port)) for s, d in asked for port, protocol in ports]
    answers += [decide(evaluator, smap, s, f) for _, f in fronts if f is not None for s in srcs]
    if args.format in ("json", "yaml"):
        print(structured({"queries": [service_json(a) if isinstance(a, ServiceVerdict) else verdict_json(a)
                                      for a in answers]}, args.format))
    else:
        say("\n\n".join(service_text(a) if isinstance(a, ServiceVerdict) else verdict_text(a, {
            d.direction: evaluator.near_misses(d, a.flow) for d in (a.egress, a.ingress)}) for a in answers))
    words = [a.verdict if isinstance(a, ServiceVerdict) else a.action.value for a in answers]
    if args.expect and any(w != args.expect for w in words):
        return 1
    return 0
