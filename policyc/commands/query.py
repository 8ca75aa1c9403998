"""`policyc query`: is one connection allowed, and which rules decided it."""
from __future__ import annotations

from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.evaluate import Evaluator, Flow
from ..compiler.explain import service_json, service_text, verdict_json, verdict_text
from ..compiler.services import PREFIX, ServiceMap, ServiceVerdict, decide
from .common import (add_inventory_arg, add_policy_args, bind_services, load_inventory_arg, load_policy_args,
                     parse_port, resolve_endpoints, structured, subcommand)
from .terminal import say

EXAMPLES = """
policyc query examples/shop/policies --inventory examples/shop/inventory.yaml \\
    --from shop/frontend --to shop/cart --port 8080/TCP
policyc query P --inventory INV --from 'app=web' --from shop/admin --to 203.0.113.7 --port 443/TCP -o json
policyc query P --inventory INV --from shop/a --to shop/b --port 53/UDP --expect deny   # exit 1 if allowed
policyc query P --inventory INV --inventory services.yaml --from shop/frontend --to svc:shop/cart --port 80/TCP
"""


def register(sub) -> None:
    parser = subcommand(sub, "query", "verdict of one connection, with the rules that decided it", EXAMPLES)
    add_policy_args(parser)
    add_inventory_arg(parser, required=True)
    parser.add_argument("--from", dest="src", action="append", required=True, metavar="ENDPOINT",
                        help="source: ns/pod, node name, IP address, or a label selector (app=web,namespace=x); "
                        "repeated: the union")
    parser.add_argument("--to", dest="dst", action="append", required=True, metavar="ENDPOINT",
                        help="destination, same forms as --from, or a Service: svc:NS/NAME, a ClusterIP, or a node "
                        "with a NodePort as --port (answered per backend, after translation); repeated: the union")
    parser.add_argument("--port", required=True, help="PORT/PROTOCOL, e.g. 80/TCP (ICMP: the type, 8/ICMP)")
    parser.add_argument("--expect", choices=("allow", "deny"),
                        help="exit 1 unless every answer is this verdict (for scripts)")
    parser.set_defaults(run=run)


def run(args) -> int:
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args)
    policy = bind_services(args, policy, inventory)
    port, protocol = parse_port(args.port)
    for ref in args.src:
        if ref.startswith(PREFIX):
            raise PolicycError(Diagnostic.simple(f"--from {ref}: a Service is a destination only; its "
                                                 "backends send as pods (name one as namespace/pod)"))
    srcs = resolve_endpoints(inventory, args.src, "--from")
    evaluator = Evaluator(policy)
    smap = ServiceMap(inventory)
    fronts = {ref: smap.frontend(ref, port, protocol) for ref in args.dst}
    dsts = resolve_endpoints(inventory, [ref for ref, f in fronts.items() if f is None], "--to")
    answers = [evaluator.evaluate(Flow(s, d, protocol, port)) for s in srcs for d in dsts]
    answers += [decide(evaluator, smap, s, f) for f in fronts.values() if f is not None for s in srcs]
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
