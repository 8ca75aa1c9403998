"""`policyc blast-radius SRC`: everything a chain of allowed connections from SRC reaches, hop by hop."""
from __future__ import annotations

from ..compiler.chains import blast_json, blast_text
from .common import structured, subcommand
from .graphcli import ENDPOINT_HELP, add_graph_args, avoid, load_graph, places, ports_arg
from .terminal import say

EXAMPLES = """
policyc blast-radius shop/frontend examples/shop/policies --inventory examples/shop/inventory.yaml
policyc blast-radius namespace=shop P --inventory INV --max-hops 2 --trust-nodes -o yaml
"""


def register(sub) -> None:
    parser = subcommand(
        sub, "blast-radius", "what chains of allowed connections from SRC reach, by namespace and by hops", EXAMPLES,
        "Every endpoint reachable from SRC by a chain of 1..N allowed connections (SRC taken as compromised, all "
        "of it when it names several pods), with the hop that first reaches it (docs/paths.md).")
    parser.add_argument("src", metavar="SRC", help=f"the compromised endpoints: {ENDPOINT_HELP}")
    add_graph_args(parser, ("text", "json", "yaml"))
    parser.set_defaults(run=run)


def run(args) -> int:
    conn, (src,) = load_graph(args, [(args.src, "SRC")])
    ports = ports_arg(args)
    origins = places(conn, src, "SRC")
    found = conn.reach(origins, args.max_hops, ports, avoid(conn, args))
    data = {"from": args.src, "max_hops": args.max_hops, "ports": ports.texts() if ports else None,
            "trust_nodes": args.trust_nodes,
            **blast_json(conn, found, frozenset(ep.display for ep in src.endpoints), frozenset(origins))}
    if args.format == "text":
        sources = len(src.endpoints)
        head = f"blast radius of {args.src}" + (f" ({sources} pods)" if sources > 1 else "")
        say("\n".join([head + ":"] + blast_text(conn, data)))
    else:
        print(structured(data, args.format))
    return 0
