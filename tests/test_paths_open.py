"""The open pairs (an open egress to an open ingress) held as two sets, not an edge each: same answers.

The reference is the plain pairwise graph: an edge for every pair of places that ``Connectivity.edge``
allows (each of those is the evaluator's verdict, tests/test_paths.py), searched by networkx.  Hop
distances, shortest and k shortest chains, blast radii and their counts must be those of the pairwise
graph, on generated clusters that mix open and policy'd classes, with ports restricted and nodes trusted.
"""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from irgen import inventories, policy_sets

from policyc.cli import main
from policyc.compiler.connectivity import Kind, build
from policyc.compiler.frontend import load_policies
from policyc.compiler.inventory import load_inventory
from policyc.compiler.portset import parse_ports
from policyc.compiler.verify.multihop import reach_counts

DATA = Path(__file__).parent / "data" / "paths" / "open"
CLUSTER = (str(DATA / "policies.yaml"), "--inventory", str(DATA / "inventory.yaml"))
PORTS = st.none() | st.sampled_from([parse_ports("80/TCP,53/UDP"), parse_ports("8080-8090/TCP"),
                                     parse_ports("8/ICMP"), parse_ports("*/ICMPv6")])


def pairwise(conn, ports) -> nx.DiGraph:
    """An edge per allowed pair, as the graph held before the open pairs were factored out."""
    g = nx.DiGraph()
    g.add_nodes_from(range(len(conn.places)))
    for u in range(len(conn.places)):
        for v in range(len(conn.places)):
            hop = conn.edge(u, v)
            if hop is not None and (ports is None or hop.ports & ports):
                g.add_edge(u, v)
    return g


def relays(conn, g: nx.DiGraph, avoid) -> nx.DiGraph:
    h = g.copy()
    h.remove_edges_from([e for e in g.edges if e[0] in avoid | conn.ends])
    return h


def reference_chains(conn, g, srcs, dsts, avoid, pinned):
    """Simple chains shortest first, as tests/test_paths.py's graph did them: a virtual source whose edges
    are the sources' first hops, the relays' edges, a virtual sink; Yen's algorithm through networkx."""
    h = relays(conn, g, avoid)
    firsts = {v for s in srcs for v in g.successors(s) if not (v == s and s in pinned)}
    h.add_edges_from(("src", v) for v in firsts)
    h.add_edges_from((d, "dst") for d in dsts if d in h)
    if "src" not in h or "dst" not in h or not nx.has_path(h, "src", "dst"):
        return
    yield from (len(p) - 2 for p in nx.shortest_simple_paths(h, "src", "dst"))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets(), inventory=inventories(), data=st.data())
def test_the_open_pairs_answer_as_an_edge_per_pair(policy, inventory, data):
    conn = build(policy, inventory, targets=[])
    ports = data.draw(PORTS)
    avoid = frozenset(conn.nodes()) if data.draw(st.booleans()) else frozenset()
    g = pairwise(conn, ports)
    ids = st.sampled_from(range(len(conn.places)))
    srcs = data.draw(st.sets(ids, min_size=1, max_size=3))
    dsts = data.draw(st.sets(ids, min_size=1, max_size=3))
    # edges: the pairs enumerated by the pool are the pairwise graph's
    assert set(conn.edges(ports)) == set(g.edges)
    # distances: breadth first from the sources, leaving no place of avoid nor outside
    found = conn.reach(srcs, None, ports, avoid)
    h = relays(conn, g, avoid)
    expected = {}
    for s in srcs:
        for v in g.successors(s):
            for w, d in nx.single_source_shortest_path_length(h, v).items():
                expected[w] = min(expected.get(w, d + 1), d + 1)
    assert {v: d for v, (d, _) in found.items()} == expected
    for v, (d, hop) in found.items():  # the first hop is an edge from a place reached one hop earlier
        assert g.has_edge(hop.src, hop.dst) and hop.dst == v
        assert (hop.src in srcs and d == 1) or found[hop.src][0] == d - 1
    bounded = conn.reach(srcs, 2, ports, avoid)
    assert {v: d for v, (d, _) in bounded.items()} == {v: d for v, d in expected.items() if d <= 2}
    # chains: the k shortest have the lengths networkx's Yen finds on the pairwise graph
    pinned = frozenset(data.draw(st.sets(st.sampled_from(sorted(srcs & dsts)), max_size=1))) if srcs & dsts \
        else frozenset()
    k = data.draw(st.integers(1, 4))
    chains = conn.chains(srcs, dsts, k, None, ports, avoid, pinned)
    groups = [(srcs - pinned, dsts)] + [({p}, dsts - {p}) for p in sorted(srcs & pinned)]
    lengths = sorted(n for s, d in groups if s and d for n in _first(reference_chains(conn, g, s, d, avoid, pinned), k))
    assert [len(c) for c in chains] == lengths[:k]
    for chain in chains:
        assert chain[0].src in srcs and chain[-1].dst in dsts and all(g.has_edge(h.src, h.dst) for h in chain)
        assert len({h.dst for h in chain}) == len(chain)  # simple after the first place
    # blast radius of every class at once, over the hubs
    counts = reach_counts(conn, ports, avoid)
    for place in conn.places:
        if place.kind is Kind.PODS:
            reached = set().union(*({v} | nx.descendants(h, v) for v in h.successors(place.id)))
            pods = sum(len(conn.places[p].members) for p in reached if conn.places[p].kind is Kind.PODS)
            assert counts[place.id] == pods - (place.id in reached)


def _first(it, k: int) -> list[int]:
    out = []
    for n in it:
        if len(out) == k:
            break
        out.append(n)
    return out
