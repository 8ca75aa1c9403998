"""The connectivity graph as data and as a picture: JSON and GraphML through networkx, DOT through pydot.

The exported graph holds plain values only (names, kinds, port texts, rule references), so that
any graph tool can read it; DOT draws namespaces as clusters, L7-filtered edges dashed and a
highlighted chain in red.

The pairs that two uniform sides decide (``OpenPairs``: an open egress to an open ingress, or an
allow-all egress) are classes squared in a cluster with few policies, and a picture of every one says
nothing; they are drawn through hub nodes instead (u -> hub: u's egress is uniform; hub -> w: w's
ingress admits the hub's sources alike), unless few or asked for (``open_edges``).  A hub is named
by what it stands for: `(every open ingress)`, or the rules of the egress it stands for.  The
highlighted chain is drawn hop by hop.
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Iterable

import networkx as nx
import pydot

from .connectivity import Chain, Connectivity, Hop, Kind
from .explain import rule_ref
from .openpairs import Template
from .portset import PortSet, label
from .reachability import Side

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
    hub_names = _hub_names(conn, ports, dict.fromkeys(n for e in through for n in e if not isinstance(n, int)))
    keep = inside = set(range(len(conn.places))) | set(hub_names)  # places and hubs
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
            return [hub_names[pid]]
        place = conn.places[pid]
        if place.kind is Kind.NODE and place.name in taken:
            return [f"node:{place.name}"]
        return [ep.display for ep in place.members] if pods and place.kind is Kind.PODS else [place.name]

    for hub in sorted((p for p in keep if not isinstance(p, int)), key=hub_names.get):
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
    """u -> hub for each uniform egress, hub -> w for each uniform ingress the hub's sources reach on
    ``ports``, with their attributes: the ports the pairs may use, and the side that decides.  A hub
    per kind of source (outside the cluster or not), uniform side and set of places barred from it and
    not linked by a ruled edge (``OpenPairs.hub``): what goes through a hub is the pairs, and where a
    ruled edge also leads, that edge is drawn beside it."""
    pairs, out, linked = conn.open, {}, conn.ruled(ports).has_edge
    members: dict[tuple, list[int]] = {}
    for u in sorted(pairs.out):
        source = pairs.source(u)
        made = [pairs.template(source, k) for k in pairs.targets(source, ports)]
        if made:
            hub = ("hub", source[0][0], pairs.out[u].group, pairs.hub(u, linked)[2])
            members.setdefault(hub, []).append(u)
            out[(u, hub)] = _open_attrs(made, ports, egress=made[0].egress)
    for hub, sources in members.items():
        reach: dict[int, list[Template]] = {}
        for source in dict.fromkeys(pairs.source(u) for u in sources):
            for k in pairs.targets(source, ports):
                for w in pairs.groups[k]:
                    if w not in hub[3]:
                        reach.setdefault(w, []).append(pairs.template(source, k))
        for w, made in reach.items():
            out[(hub, w)] = _open_attrs(made, ports, ingress=made[0].ingress)
    return out


def _hub_names(conn: Connectivity, ports: PortSet | None, hubs: Iterable[tuple]) -> dict[tuple, str]:
    """A name per hub that says what it stands for: the open ones by ``HUBS``, others by their rules."""
    pairs, out, taken, linked = conn.open, {}, set(), conn.ruled(ports).has_edge
    first: dict[tuple, int] = {}
    for u in sorted(pairs.out):
        first.setdefault(("hub", pairs.keys[u][0], pairs.out[u].group, pairs.hub(u, linked)[2]), u)
    for hub in hubs:
        sides = pairs.out[first[hub]].sides
        parts = [HUBS[hub[1]][1:-1] if not sides.allows else f"every peer that {_refs(sides.allows)} allows"]
        if sides.denies:
            parts.append(f"less what {_refs(sides.denies)} deny")
        if hub[3]:
            parts.append(f"but {len(hub[3])} place{'s' if len(hub[3]) > 1 else ''} ruled apart")
        name = base = "(" + ", ".join(parts) + ")"
        while name in taken:
            name = f"{base[:-1]} #{len(taken)})"
        taken.add(name)
        out[hub] = name
    return out


def _refs(rules) -> str:
    return ", ".join(f"{r.origin.name} {r.origin.path}" for r in rules)


_union = PortSet.union


def _open_attrs(made: list[Template], ports: PortSet | None, egress: Side | None = None,
                ingress: Side | None = None) -> dict:
    """An edge to or from a hub: one side, uniform toward the pairs, decides; the ports are the pairs'."""
    reach, l7 = _union(t.ports for t in made), _union(t.l7 for t in made)
    if ports is not None:
        reach, l7 = reach & ports, l7 & ports
    return {"ports": reach.texts(), "l7_filtered": l7.texts(),
            "egress": egress.reason.value if egress else "", "ingress": ingress.reason.value if ingress else "",
            "egress_rules": [rule_ref(r) for r in egress.rules] if egress else [],
            "ingress_rules": [rule_ref(r) for r in ingress.rules] if ingress else [], "highlighted": False}


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
