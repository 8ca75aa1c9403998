"""`policyc paths SRC DST`: the shortest chains of allowed connections from one endpoint to another.

The exit status is a gate: 0 when no chain exists (within the limits), 1 when one does.
"""
from __future__ import annotations

from ..compiler.chains import chain_json, chain_text
from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.portset import label
from .common import structured, subcommand
from .graphcli import ENDPOINT_HELP, add_graph_args, avoid, load_graph, places, ports_arg
from .terminal import say

MAX_CHAINS = 1000  # Yen's algorithm runs one more search per chain: bounded so a -k never runs for ever
EXAMPLES = """
policyc paths world data/postgres examples/shop/policies --inventory examples/shop/inventory.yaml -k 3
policyc paths world namespace=data P --inventory INV --trust-nodes --ports 80/TCP,443/TCP,8080/TCP
policyc paths shop/frontend 10.0.0.0/8 P --inventory INV --max-hops 3 -o json   # exit 1: a chain exists
"""


def register(sub) -> None:
    parser = subcommand(
        sub, "paths", "shortest chains of allowed connections from SRC to DST (exit 1 when one exists)", EXAMPLES,
        "Chains of connections the policies allow, hop after hop (each hop: egress of its source and ingress of "
        "its destination), shortest first; outside addresses start and end chains but never relay them "
        "(docs/paths.md).", answer_no="a chain exists (within --max-hops and --ports): the gate's \"no\"")
    parser.add_argument("src", metavar="SRC", help=f"where chains start: {ENDPOINT_HELP}")
    parser.add_argument("dst", metavar="DST", help="where chains end, same forms as SRC")
    add_graph_args(parser, ("text", "json", "yaml"))
    parser.add_argument("-k", "--count", type=int, default=1, metavar="K",
                        help=f"the K shortest chains (default 1, at most {MAX_CHAINS})")
    parser.set_defaults(run=run)


def run(args) -> int:
    if not 1 <= args.count <= MAX_CHAINS:
        raise PolicycError(Diagnostic.simple(f"--count: {args.count} is not a number of chains (1 to {MAX_CHAINS}: "
                                             "each one more is another search, and a list that long is read by no one)"))
    conn, (src, dst) = load_graph(args, [(args.src, "SRC"), (args.dst, "DST")])
    if src.endpoints and src.endpoints == dst.endpoints and len(src.endpoints) == 1 and not src.networks:
        raise PolicycError(Diagnostic.simple(f"SRC and DST are the same endpoint {src.endpoints[0].display!r}"))
    ports = ports_arg(args)
    chains = conn.chains(places(conn, src, "SRC"), places(conn, dst, "DST"), args.count, args.max_hops, ports,
                         avoid(conn, args), conn.pinned(src, dst))
    ends = (frozenset(ep.display for ep in src.endpoints), frozenset(ep.display for ep in dst.endpoints))
    if args.format == "text":
        say(_text(conn, args, ports, chains, ends))
    else:
        print(structured({"from": args.src, "to": args.dst, "max_hops": args.max_hops,
                    "ports": ports.texts() if ports else None, "trust_nodes": args.trust_nodes,
                    "found": bool(chains), "chains": [chain_json(conn, c, *ends) for c in chains]}, args.format))
    return 1 if chains else 0


def _limits(args, ports) -> str:
    parts = [f"within {args.max_hops} hops" if args.max_hops else "", f"on {label(ports.texts())}" if ports else "",
             "through no node" if args.trust_nodes else ""]
    return "".join(" " + p for p in parts if p)


def _text(conn, args, ports, chains, ends) -> str:
    limits = _limits(args, ports)
    if not chains:
        return f"no chain of allowed connections from {args.src} to {args.dst}{limits}"
    lines = [f"{len(chains)} chain{'s' if len(chains) > 1 else ''} from {args.src} to {args.dst}{limits}:"]
    for n, chain in enumerate(chains, 1):
        lines += [""] + [f"{n}) {line}" if i == 0 else line for i, line in enumerate(chain_text(conn, chain, *ends))]
    return "\n".join(lines)
