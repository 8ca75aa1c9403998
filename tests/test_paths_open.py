"""The uniform pairs (an open egress or an allow-all to an open ingress) held as sets, not an edge each:
same answers.

The reference is the plain pairwise graph: an edge for every pair of places that ``Connectivity.edge``
allows (each of those is the evaluator's verdict, tests/test_paths.py), searched by networkx.  Hop
distances, shortest and k shortest chains, blast radii and their counts must be those of the pairwise
graph, on generated clusters that mix open and policy'd classes, and sides that broad rules decide
beside narrow exceptions (``broad_policy_sets``), with ports restricted and nodes trusted.
"""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from irgen import broad_policy_sets, inventories, policy_sets

from policyc.cli import main
from policyc.compiler.connectivity import Kind, build
from policyc.compiler.evaluate import Reason
from policyc.compiler.frontend import load_policies
from policyc.compiler.inventory import load_inventory
from policyc.compiler.portset import parse_ports
from policyc.compiler.verify.multihop import reach_counts, reach_counts_within

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
    lone = {s for s in srcs if len(srcs) == 1 and len(conn.places[s].members) == 1}
    h = relays(conn, g, avoid | lone)  # a one-pod source may end a chain, never be passed through again
    firsts = {v for s in srcs for v in g.successors(s) if not (v == s and s in pinned)}
    h.add_edges_from(("src", v) for v in firsts)
    h.add_edges_from((d, "dst") for d in dsts if d in h)
    if "src" not in h or "dst" not in h or not nx.has_path(h, "src", "dst"):
        return
    yield from (len(p) - 2 for p in nx.shortest_simple_paths(h, "src", "dst"))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets() | broad_policy_sets(), inventory=inventories(), data=st.data())
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
    # blast radius of every class at once, over the hubs, and within a few hops
    counts = reach_counts(conn, ports, avoid)
    hops = data.draw(st.integers(1, 3))
    within = reach_counts_within(conn, ports, avoid, hops)
    for place in conn.places:
        if place.kind is Kind.PODS:
            reached = set().union(*({v} | nx.descendants(h, v) for v in h.successors(place.id)))
            assert counts[place.id] == _pods(conn, place, reached)
        if place.kind in (Kind.PODS, Kind.NODE):  # the first hop from g: a node's own is taken even if avoided
            near = set().union(*(nx.single_source_shortest_path_length(h, v, cutoff=hops - 1)
                                 for v in g.successors(place.id)))
            assert within[place.id] == _pods(conn, place, near)


def _pods(conn, place, reached) -> int:
    pods = sum(len(conn.places[p].members) for p in reached if conn.places[p].kind is Kind.PODS)
    return pods - (place.id in reached and place.kind is Kind.PODS)


def _first(it, k: int) -> list[int]:
    out = []
    for n in it:
        if len(out) == k:
            break
        out.append(n)
    return out


# ---------------------------------------------------------------- a hand-built open cluster, end to end

def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_chain_through_open_pairs_is_reported_hop_by_hop(capsys):
    code, out, _ = run(capsys, "paths", "world", "locked/db-0", *CLUSTER, "--trust-nodes", "-k", "3", "-o", "json")
    chains = json.loads(out)["chains"]
    assert code == 1 and [c["length"] for c in chains] == [2, 3, 3]
    first = chains[0]
    assert [p["name"] for p in first["places"]][1:] == ["open/b-0 (+1)", "locked/db-0"]
    assert [h["egress"]["reason"] for h in first["hops"]] == ["not-an-endpoint", "not-enforced"]
    assert first["hops"][0]["ingress"]["reason"] == "not-enforced" and first["hops"][1]["l7_filtered"] == ["8080/TCP"]
    code, out, _ = run(capsys, "paths", "world", "locked/db-0", *CLUSTER, "--trust-nodes", "--ports", "8080/TCP",
                       "-o", "json")
    assert code == 1 and json.loads(out)["chains"][0]["hops"][1]["ports"] == ["8080/TCP"]


def test_a_hop_to_a_service_ends_at_its_backends(capsys):
    code, out, _ = run(capsys, "paths", "open/a-0", "svc:locked/db", *CLUSTER, "--trust-nodes", "-o", "json")
    (chain,) = json.loads(out)["chains"]
    assert code == 1 and [p["name"] for p in chain["places"]] == ["open/a-0", "open/b-0 (+1)", "locked/db-0"]


def test_a_deny_rule_keeps_its_class_out_of_the_open_pairs(capsys):
    """open/c-0 may egress anywhere but 169.254.169.254: only through another pod."""
    code, out, _ = run(capsys, "paths", "open/c-0", "169.254.169.254", *CLUSTER, "--trust-nodes", "-o", "json")
    assert code == 1 and json.loads(out)["chains"][0]["length"] == 2
    assert run(capsys, "paths", "open/c-0", "169.254.169.254", *CLUSTER, "--trust-nodes", "--max-hops", "1")[0] == 0
    code, out, _ = run(capsys, "blast-radius", "open/c-0", *CLUSTER, "--trust-nodes", "--max-hops", "1", "-o", "json")
    assert code == 0 and json.loads(out)["pods"] == 3  # a-0, b-0, b-1; db-0 admits app=b only


def _edges(capsys, *argv: str) -> tuple[nx.DiGraph, str]:
    code, out, err = run(capsys, "graph", *CLUSTER, "--no-nodes", "-o", "json", *argv)
    assert code == 0
    return nx.node_link_graph(json.loads(out), edges="edges"), err


def test_graph_draws_the_open_pairs_through_a_hub_or_each_one(capsys):
    hub, err = _edges(capsys, "--open-edges", "hub")
    assert "drawn through hubs" in err and hub.nodes["(every open ingress)"]["kind"] == "hub"
    assert hub.has_edge("open/a-0", "(every open ingress)") and hub.has_edge("(every open ingress)", "open/b-0 (+1)")
    assert hub.has_edge("(every open ingress)", "world-ipv6") and not hub.has_edge("open/a-0", "open/b-0 (+1)")
    assert hub.has_edge("world-ipv6", "(every open ingress in the cluster)")
    assert not hub.has_edge("(every open ingress in the cluster)", "world-ipv6")  # outside to outside: no hop
    apart = "(every open ingress, but 1 place ruled apart)"  # c-0's egress is open but toward its deny's peer
    assert hub.has_edge("open/c-0", apart) and not hub.has_edge("open/c-0", "(every open ingress)")
    assert hub.has_edge(apart, "open/a-0") and not hub.has_edge(apart, "169.254.169.254/32")
    assert not hub.has_edge("open/c-0", "169.254.169.254/32")  # denied: no edge at all
    assert hub.edges["(every open ingress)", "world-ipv6"]["ports"] == ["*/TCP", "*/UDP", "*/SCTP"]  # no ICMPv4
    each, err = _edges(capsys, "--open-edges", "expand")
    assert err == "" and each.has_edge("open/a-0", "open/b-0 (+1)") and not any(
        d["kind"] == "hub" for _, d in each.nodes(data=True))
    conn = build(load_policies([CLUSTER[0]])[0], load_inventory([CLUSTER[2]]), nodes=False)
    assert each.number_of_edges() == conn.graph.number_of_edges() + conn.open.count()
    assert set(_edges(capsys)[0].edges) == set(each.edges)  # few pairs: auto draws each


def test_a_highlighted_chain_is_drawn_hop_by_hop_beside_the_hub(capsys):
    g, _ = _edges(capsys, "--open-edges", "hub", "--highlight", "open/a-0", "locked/db-0")
    red = {(u, v) for u, v, d in g.edges(data=True) if d["highlighted"]}
    assert red == {("open/a-0", "open/b-0 (+1)"), ("open/b-0 (+1)", "locked/db-0")}


# ---------------------------------------------------------------- an allow-all beside denies, end to end

ALLOW_ALL = (str(DATA / "allowall.yaml"), "--inventory", str(DATA / "inventory.yaml"), "--trust-nodes")


def test_an_allow_all_beside_denies_keeps_the_denied_pairs_out(capsys):
    """Every egress allows `all` but the metadata address; locked/db admits the cluster but open/c: both
    exceptions hold, on either side of the pair, and everything else is one hop."""
    code, out, _ = run(capsys, "paths", "open/c-0", "locked/db-0", *ALLOW_ALL, "-o", "json")
    (chain,) = json.loads(out)["chains"]
    assert code == 1 and chain["length"] == 2  # through another pod: db denies c itself
    assert chain["hops"][0]["egress"]["rules"][0]["name"] == "no-metadata-server"
    assert run(capsys, "paths", "open/c-0", "locked/db-0", *ALLOW_ALL, "--max-hops", "1")[0] == 0
    assert run(capsys, "paths", "open/a-0", "locked/db-0", *ALLOW_ALL, "--max-hops", "1")[0] == 1
    assert run(capsys, "paths", "namespace=open", "169.254.169.254", *ALLOW_ALL)[0] == 0  # nobody, however far
    code, out, _ = run(capsys, "blast-radius", "open/c-0", *ALLOW_ALL, "--max-hops", "1", "-o", "json")
    assert code == 0 and json.loads(out)["pods"] == 3  # a-0, b-0, b-1
    conn = build(load_policies([ALLOW_ALL[0]])[0], load_inventory([ALLOW_ALL[2]]), nodes=False)
    assert conn.graph.number_of_edges() == 0 and conn.open.count() == 29  # every exception pair is denied


def test_a_node_without_host_policy_is_a_uniform_side():
    """n1 has no host policy: its pairs are uniform both ways (none decided one by one), but for its own
    pods, which admit it as `host` whatever their ingress says (R3.9): those stay ruled edges."""
    conn = build(load_policies([CLUSTER[0]])[0], load_inventory([CLUSTER[2]]))
    (node,) = conn.nodes()
    ruled = [(u, v) for u, v in conn.graph.edges if node in (u, v)]
    assert {conn.places[v].name for u, v in ruled if u == node} == {"locked/db-0", "open/a-0", "open/b-0 (+1)",
                                                                    "open/c-0"}
    assert all(u == node and conn.graph[u][v]["hop"].ingress.reason is Reason.LOCALHOST for u, v in ruled)
    a = conn.place_of(load_inventory([CLUSTER[2]]).find("open/a-0"))
    assert conn.open.uniform(a, node) and conn.edge(a, node).egress.reason is Reason.NOT_ENFORCED
