"""The connectivity graph as data and as a picture: JSON and GraphML through networkx, DOT through pydot.

The exported graph holds plain values only (names, kinds, port texts, rule references), so that
any graph tool can read it; DOT draws namespaces as clusters, L7-filtered edges dashed and a
highlighted chain in red.

The pairs that only both sides' defaults decide (``OpenPairs``: an open egress to an open ingress)
are classes squared in a cluster with few policies, and a picture of every one says nothing; they are
drawn through hub nodes instead (u -> hub: u's egress is not enforced; hub -> w: w's ingress admits
every peer), unless few or asked for (``open_edges``).  The highlighted chain is drawn hop by hop.
"""
from __future__ import annotations

import functools
import shutil
import subprocess

import networkx as nx
import pydot

from .connectivity import Chain, Connectivity, Hop, Kind
from .explain import rule_ref
from .portset import NONE, PortSet, label
from .reachability import OPEN, OUTSIDE, Side

RENDERED = ("svg", "png")  # formats Graphviz's `dot` draws
_SHAPES = {Kind.PODS: ("box", "rounded,filled", "#e8f0fe"), Kind.NODE: ("box3d", "filled", "#fff4d6"),
           Kind.WORLD: ("ellipse", "filled", "#fde8e8"), Kind.RESERVED: ("hexagon", "filled", "#eeeeee"),
           Kind.HUB: ("doubleoctagon", "filled", "#e6f4ea")}
_MAX_LABEL_PORTS = 3
# Hub nodes, by whether their sources are outside the cluster (those never reach outside places).
HUBS = {False: "(every open ingress)", True: "(every open ingress in the cluster)"}
OPEN_EDGES = ("auto", "expand", "hub")
EXPAND_AT_MOST = 200  # open pairs drawn one by one under `auto`; beyond, a picture of them says nothing


def _edge_attrs(hop: Hop, highlighted: bool) -> dict:
    return {"ports": hop.ports.texts(), "l7_filtered": hop.l7.texts(),
            "egress": hop.egress.reason.value, "ingress": hop.ingress.reason.value,
            "egress_rules": [rule_ref(r) for r in hop.egress.rules],
            "ingress_rules": [rule_ref(r) for r in hop.ingress.rules], "highlighted": highlighted}


def expands(conn: Connectivity, ports: PortSet | None, open_edges: str) -> bool:
    """Whether the open pairs are drawn one by one (``auto``: when they are few)."""
    return open_edges == "expand" or open_edges == "auto" and conn.open.count(ports) <= EXPAND_AT_MOST


def export_graph(conn: Connectivity, ports: PortSet | None = None, pods: bool = False,
                 namespaces: frozenset[str] = frozenset(), highlight: Chain = (), open_edges: str = "auto") -> nx.DiGraph:
    """The graph with plain attributes: one node per place (or per pod, with ``pods``), edges usable on
    ``ports``; with ``namespaces``, only their pods and the places those connect to directly, and
    the ``highlight`` chain whole; the open pairs through hubs unless ``expands``."""
    hubs = not expands(conn, ports, open_edges)
    edges = list(conn.ruled(ports).edges if hubs else conn.edges(ports))
    through = _hub_edges(conn, ports) if hubs else {}
    edges += through
    lit = {(h.src, h.dst) for h in highlight}
    edges += sorted(lit - set(edges))  # an open pair of the chain, drawn as the hop it is
    keep = inside = set(range(len(conn.places))) | {n for e in through for n in e}  # places and hubs
    if namespaces:
        inside = {p for p in range(len(conn.places)) if conn.places[p].namespace in namespaces}
        keep = inside | {v for u, v in edges if u in inside} | {u for u, v in edges if v in inside}
    lit_places = {p for h in highlight for p in (h.src, h.dst)}
    keep = keep | lit_places  # the highlighted chain is drawn whole, whatever the namespaces
    out = nx.DiGraph()

    taken = {p.name for p in conn.places if p.kind is not Kind.NODE}

    def names(pid) -> list[str]:
        """Graph keys: a node named like another place (world-ipv4) is ``node:NAME``, which no pod,
        outside range or reserved identity can be called."""
        if not isinstance(pid, int):
            return [HUBS[pid[1]]]
        place = conn.places[pid]
        if place.kind is Kind.NODE and place.name in taken:
            return [f"node:{place.name}"]
        return [ep.display for ep in place.members] if pods and place.kind is Kind.PODS else [place.name]

    for hub in sorted(p for p in keep if not isinstance(p, int)):
        out.add_node(names(hub)[0], kind=Kind.HUB.value, namespace="", members=[], highlighted=False)
    for pid in sorted(p for p in keep if isinstance(p, int)):
        place = conn.places[pid]
        for name in names(pid):
            out.add_node(name, kind=place.kind.value, namespace=place.namespace,
                         members=[ep.display for ep in place.members] if place.kind is Kind.PODS else [],
                         highlighted=pid in lit_places)
    for u, v in edges:
        if u in inside or v in inside or (u, v) in lit:
            attrs = through.get((u, v)) or _edge_attrs(conn.hop(u, v, ports), (u, v) in lit)
            out.add_edges_from((a, b, attrs) for a in names(u) for b in names(v) if a != b or not pods)
    return out


def _hub_edges(conn: Connectivity, ports: PortSet | None) -> dict[tuple, dict]:
    """u -> hub for each open egress, hub -> w for each open ingress the hub's sources reach on
    ``ports``, with their attributes: the ports the pairs may use, and the default side that decides."""
    pairs, out = conn.open, {}
    sources: dict[bool, set] = {}
    for u in sorted(pairs.out):
        targets = pairs.targets(pairs.keys[u], ports)
        if targets:
            hub = ("hub", pairs.keys[u][0])
            sources.setdefault(hub[1], set()).add(pairs.keys[u])
            out[(u, hub)] = _open_attrs(_union(pairs.key_ports(pairs.keys[u], k) for k in targets), ports,
                                        egress=OUTSIDE if conn.places[u].kind.outside else OPEN)
    for outside, keys in sources.items():
        for k in set().union(*(pairs.targets(s, ports) for s in keys)):
            reach = _union(pairs.key_ports(s, k) for s in keys if k in pairs.targets(s, ports))
            for w in pairs.groups[k]:
                out[(("hub", outside), w)] = _open_attrs(reach, ports,
                                                         ingress=OUTSIDE if conn.places[w].kind.outside else OPEN)
    return out


def _union(sets) -> PortSet:
    return functools.reduce(lambda a, b: a | b, sets, NONE)


def _open_attrs(reach: PortSet, ports: PortSet | None, egress: Side | None = None, ingress: Side | None = None) -> dict:
    """An edge to or from a hub: one side's default decides, no rule."""
    return {"ports": (reach if ports is None else reach & ports).texts(), "l7_filtered": [],
            "egress": egress.reason.value if egress else "", "ingress": ingress.reason.value if ingress else "",
            "egress_rules": [], "ingress_rules": [], "highlighted": False}


def to_json(g: nx.DiGraph) -> dict:
    return nx.node_link_data(g, edges="edges")


def to_text(g: nx.DiGraph) -> str:
    """One line per edge, source by source: ``a -> b  ports`` (for people and grep)."""
    lines = [f"{u} -> {v}  {label(a['ports'])}" + (f" (L7-filtered: {', '.join(a['l7_filtered'])})"
                                                   if a["l7_filtered"] else "")
             for u, v, a in sorted(g.edges(data=True), key=lambda e: (e[0], e[1]))]
    return "\n".join(lines + [f"{g.number_of_nodes()} places, {g.number_of_edges()} connections"]) + "\n"


def to_graphml(g: nx.DiGraph) -> str:
    """GraphML holds scalars only: lists become comma-separated text."""
    flat = nx.DiGraph()
    plain = lambda attrs: {k: ", ".join(v) if isinstance(v, list) else v for k, v in attrs.items()}  # noqa: E731
    flat.add_nodes_from((n, plain(a)) for n, a in g.nodes(data=True))
    flat.add_edges_from((u, v, plain(a)) for u, v, a in g.edges(data=True))
    return "\n".join(nx.generate_graphml(flat)) + "\n"


def _label(ports: list[str], l7: list[str]) -> str:
    """Ports as an edge label: ``any``, or at most a few ranges and how many more."""
    text = label(ports)
    if text != "any" and len(ports) > _MAX_LABEL_PORTS:
        text = ", ".join(ports[:_MAX_LABEL_PORTS]) + f" +{len(ports) - _MAX_LABEL_PORTS}"
    return text + (" (L7)" if l7 else "")


def to_dot(g: nx.DiGraph) -> str:
    """DOT with one cluster per namespace, one for the nodes and one for what is outside the cluster."""
    dot = pydot.Dot("policyc", graph_type="digraph", rankdir="LR", fontname="Helvetica", fontsize="11",
                    nodesep="0.25", ranksep="0.9")
    dot.set_node_defaults(fontname="Helvetica", fontsize="10")
    dot.set_edge_defaults(fontname="Helvetica", fontsize="8", color="#5f6368", fontcolor="#3c4043")
    groups: dict[str, pydot.Cluster] = {}
    for name, attrs in sorted(g.nodes(data=True)):
        kind = Kind(attrs["kind"])
        group = attrs["namespace"] or {"node": "nodes", "world": "outside the cluster",
                                       "reserved": "outside the cluster", "hub": "open pairs"}[kind.value]
        if group not in groups:
            label = f"namespace {group}" if attrs["namespace"] else group
            groups[group] = pydot.Cluster(f"c{len(groups)}", label=label, style="rounded", color="#9aa0a6",
                                          fontname="Helvetica", fontsize="11")
        shape, style, fill = _SHAPES[kind]
        label = name.split("/", 1)[1] if attrs["namespace"] and "/" in name else name
        extra = {"color": "#d93025", "penwidth": "2.5"} if attrs["highlighted"] else {}
        groups[group].add_node(pydot.Node(name, label=label, shape=shape, style=style, fillcolor=fill, **extra))
    for cluster in groups.values():
        dot.add_subgraph(cluster)
    for u, v, attrs in g.edges(data=True):
        extra = {"color": "#d93025", "penwidth": "2.5", "fontcolor": "#d93025"} if attrs["highlighted"] else {}
        dot.add_edge(pydot.Edge(u, v, label=_label(attrs["ports"], attrs["l7_filtered"]),
                                style="dashed" if attrs["l7_filtered"] else "solid", **extra))
    return dot.to_string()


def render(dot_text: str, fmt: str) -> bytes:
    """SVG or PNG from Graphviz's ``dot``; a clear error when Graphviz is missing (Debian: graphviz)."""
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError("Graphviz's `dot` is not installed (Debian: apt-get install graphviz); "
                           "write -o dot and render it elsewhere")
    done = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"dot -T{fmt} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
