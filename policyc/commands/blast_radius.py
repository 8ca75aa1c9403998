"""`policyc blast-radius SRC`: everything a chain of allowed connections from SRC reaches, hop by hop."""
from __future__ import annotations

from ..compiler.chains import blast_json, blast_text
from .graphcli import ENDPOINT_HELP, add_graph_args, avoid, dump, load_graph, places, ports_arg


def register(sub) -> None:
    parser = sub.add_parser(
        "blast-radius", help="what chains of allowed connections from SRC reach, by namespace and by hops",
        description="Every endpoint reachable from SRC by a chain of 1..N allowed connections (SRC taken as "
                    "compromised, all of it when it names several pods), with the hop that first reaches it.")
    parser.add_argument("src", metavar="SRC", help=f"the compromised endpoints: {ENDPOINT_HELP}")
    add_graph_args(parser, ("text", "json", "yaml"))
    parser.set_defaults(run=run)


def run(args) -> int:
    conn, (src,) = load_graph(args, [(args.src, "SRC")])
    found = conn.reach(places(conn, src, "SRC"), args.max_hops, ports_arg(args), avoid(conn, args))
    data = {"from": args.src, "max_hops": args.max_hops, "ports": args.ports, "trust_nodes": args.trust_nodes,
            **blast_json(conn, found, frozenset(ep.display for ep in src.endpoints))}
    if args.format == "text":
        sources = len(src.endpoints)
        head = f"blast radius of {args.src}" + (f" ({sources} pods)" if sources > 1 else "")
        print("\n".join([head + ":"] + blast_text(conn, data)))
    else:
        print(dump(data, args.format))
    return 0
