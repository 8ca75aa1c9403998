"""`policyc graph`: the connectivity graph as DOT, GraphML or JSON, or drawn as SVG or PNG by Graphviz."""
from __future__ import annotations

import difflib
import sys

from ..compiler.connectivity import Kind
from ..compiler.diagnostics import Diagnostic, PolicycError
from ..compiler.graphexport import (HUBS, OPEN_EDGES, RENDERED, expands, export_graph, render, to_dot, to_graphml,
                                    to_json, to_text)
from .common import structured, subcommand
from .graphcli import ENDPOINT_HELP, add_graph_args, load_graph, places, ports_arg

BIG_PICTURE = 300  # nodes; Graphviz's layout grows much faster than the graph
EXAMPLES = """
policyc graph examples/shop/policies --inventory examples/shop/inventory.yaml \\
    -o svg --no-nodes --highlight world data/postgres --out shop.svg
policyc graph P --inventory INV -o graphml --out cluster.graphml          # for Gephi, yEd, networkx
policyc graph P --inventory INV --namespace shop --ports 443/TCP,8080/TCP  # the edges, as text
"""


def register(sub) -> None:
    parser = subcommand(
        sub, "graph", "the connectivity graph: text, JSON, YAML, DOT, GraphML, or a picture (SVG, PNG) by Graphviz",
        EXAMPLES,
        "One node per endpoint class (pods no policy tells apart), node and outside address range; an edge "
        "where both sides allow a connection, labelled with its ports (dashed: L7-filtered). Namespaces are "
        "clusters in DOT and pictures (docs/paths.md).")
    add_graph_args(parser, ("text", "json", "yaml", "dot", "graphml") + RENDERED, chains=False)
    parser.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    parser.add_argument("--pods", action="store_true", help="one node per pod instead of per class")
    parser.add_argument("--namespace", action="append", default=[], metavar="NS",
                        help="only the pods of NS and what they connect to directly (repeatable)")
    parser.add_argument("--no-nodes", action="store_true", help="leave the cluster's nodes out")
    parser.add_argument("--open-edges", choices=OPEN_EDGES, default="auto",
                        help="pairs that uniform sides decide (an open egress or an allow-all toward an open "
                             "ingress): 'expand' draws an edge each (classes squared with few policies), 'hub' draws "
                             f"them through hubs such as {HUBS[False]!r}; 'auto' (default) expands when there are few")
    parser.add_argument("--highlight", nargs=2, metavar=("SRC", "DST"),
                        help=f"draw the shortest chain from SRC to DST in red ({ENDPOINT_HELP})")
    parser.set_defaults(run=run)


def run(args) -> int:
    if args.format in RENDERED and not args.out and sys.stdout.isatty():
        raise PolicycError(Diagnostic.simple(f"-o {args.format} writes binary data: give --out FILE or redirect"))
    refs = [(args.highlight[0], "--highlight SRC"), (args.highlight[1], "--highlight DST")] if args.highlight else []
    conn, targets = load_graph(args, refs, nodes=not args.no_nodes)
    _check_namespaces(conn, args.namespace)
    ports = ports_arg(args)
    chain = ()
    if targets:
        found = conn.chains(places(conn, targets[0], "--highlight SRC"), places(conn, targets[1], "--highlight DST"),
                            ports=ports, pinned=conn.pinned(*targets))
        if found:
            chain = found[0]
        else:
            print(f"note: no chain from {args.highlight[0]} to {args.highlight[1]} to highlight", file=sys.stderr)
    if not expands(conn, ports, args.open_edges) and not args.quiet:
        print(f"note: {conn.open.count(ports)} connections that uniform sides decide (an open egress or an allow-all "
              f"toward an open ingress) are drawn through hubs such as {HUBS[False]!r} (--open-edges expand draws "
              "each)", file=sys.stderr)
    g = export_graph(conn, ports, args.pods, frozenset(args.namespace), chain, args.open_edges)
    if args.format in RENDERED and g.number_of_nodes() > BIG_PICTURE:
        print(f"note: drawing {g.number_of_nodes()} nodes and {g.number_of_edges()} edges can take Graphviz "
              "minutes; --namespace or --ports narrow the picture", file=sys.stderr)
    if args.format in ("json", "yaml"):
        data: str | bytes = structured(to_json(g), args.format) + "\n"
    elif args.format == "text":
        data = to_text(g)
    elif args.format == "graphml":
        data = to_graphml(g)
    else:
        data = to_dot(g)
        if args.format in RENDERED:
            try:
                data = render(data, args.format)
            except RuntimeError as exc:
                raise PolicycError(Diagnostic.simple(str(exc))) from None
    _write(data, args.out)
    return 0


def _check_namespaces(conn, wanted: list[str]) -> None:
    """A --namespace no pod is in would draw an empty picture, which reads as "nothing connects"."""
    known = sorted({ep.namespace for p in conn.places if p.kind is Kind.PODS for ep in p.members})
    for ns in wanted:
        if ns not in known:
            close = difflib.get_close_matches(ns, known, n=1)
            raise PolicycError(Diagnostic.simple(
                f"--namespace {ns}: no pod of the inventory is in namespace {ns!r}"
                + (f"; did you mean {close[0]!r}?" if close else f" (namespaces: {', '.join(known) or 'none'})")))


def _write(data: str | bytes, path: str | None) -> None:
    raw = data.encode() if isinstance(data, str) else data
    if path is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(raw)
        return
    try:
        with open(path, "wb") as fh:
            fh.write(raw)
    except OSError as exc:
        raise PolicycError(Diagnostic.simple(f"--out {path}: {exc.strerror}")) from None
