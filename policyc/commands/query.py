"""`policyc query`: is one connection allowed, and which rules decided it."""
from __future__ import annotations

import json

from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.evaluate import Evaluator, Flow
from ..compiler.explain import service_json, service_text, verdict_json, verdict_text
from ..compiler.services import PREFIX, ServiceMap, decide
from .common import (add_inventory_arg, add_policy_args, bind_services, load_inventory_arg,
                     load_policy_args, parse_port, resolve_endpoints)


def register(sub) -> None:
    parser = sub.add_parser("query", help="verdict of one connection, with the rules that decided it")
    add_policy_args(parser)
    add_inventory_arg(parser, required=True)
    parser.add_argument("--from", dest="src", required=True,
                        help="source: ns/pod, node name, IP address, or a label selector (app=web,namespace=x)")
    parser.add_argument("--to", dest="dst", required=True,
                        help="destination, same forms as --from, or a Service: svc:NS/NAME, a ClusterIP, or a node "
                        "with a NodePort as --port (answered per backend, after translation)")
    parser.add_argument("--port", required=True, help="PORT/PROTOCOL, e.g. 80/TCP (ICMP: the type, 8/ICMP)")
    parser.add_argument("--expect", choices=("allow", "deny"),
                        help="exit 1 unless every answer is this verdict (for scripts)")
    parser.set_defaults(run=run)


def run(args) -> int:
    policy = load_policy_args(args)
    inventory = load_inventory_arg(args)
    policy = bind_services(args, policy, inventory)
    port, protocol = parse_port(args.port)
    if args.src.startswith(PREFIX):
        raise PolicycError(Diagnostic.simple(f"--from {args.src}: a Service is a destination only; its "
                                             "backends send as pods (name one as namespace/pod)"))
    srcs = resolve_endpoints(inventory, args.src, "--from")
    evaluator = Evaluator(policy)
    smap = ServiceMap(inventory)
    frontend = smap.frontend(args.dst, port, protocol)
    if frontend is not None:
        answers = [decide(evaluator, smap, s, frontend) for s in srcs]
        words = [a.verdict for a in answers]
        as_json, as_text = service_json, service_text
    else:
        dsts = resolve_endpoints(inventory, args.dst, "--to")
        answers = [evaluator.evaluate(Flow(s, d, protocol, port)) for s in srcs for d in dsts]
        words = [v.action.value for v in answers]
        as_json, as_text = verdict_json, verdict_text
    if args.format == "json":
        print(json.dumps({"queries": [as_json(a) for a in answers]}, indent=2))
    else:
        print("\n\n".join(as_text(a) for a in answers))
    if args.expect and any(w != args.expect for w in words):
        return 1
    return 0
