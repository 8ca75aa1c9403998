"""Attack paths and blast radius (`paths`, `blast-radius`, `graph`, verify's `noPath` and `maxBlastRadius`).

Hand-built clusters with known chains, and properties: every edge of the connectivity graph is the
evaluator's verdict on every port, every hop of a reported chain is allowed by `query`, and `noPath`
holds exactly when breadth-first search over `matrix` finds no chain.
"""
from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import deque
from pathlib import Path

import networkx as nx
import pydot
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from irgen import EXTERNALS, broad_policy_sets, inventories, policy_sets, selectors

from policyc.cli import main
from policyc.commands.matrix import compute
from policyc.compiler.connectivity import Kind, build
from policyc.compiler.evaluate import Evaluator, Flow
from policyc.compiler.frontend import load_policies
from policyc.compiler.inventory import Inventory, load_inventory
from policyc.compiler.ir import EndpointKind, Protocol, Selector
from policyc.compiler.portset import PROTOCOLS, PortSet, parse_ports
from policyc.compiler.verify.findings import Location
from policyc.compiler.verify.multihop import MultiHop, reach_counts, reach_counts_within
from policyc.compiler.diagnostics import PolicycError
from policyc.compiler.source import parse_text
from policyc.compiler.verify.spec import WORLD, Addresses, MaxBlastRadius, NoPath, Pods, PortRange, parse_spec

DATA = Path(__file__).parent / "data" / "paths"
POLICIES, INVENTORY = str(DATA / "policies.yaml"), str(DATA / "inventory.yaml")
CLUSTER = (POLICIES, "--inventory", INVENTORY)
_HERE = Location("gen.yaml", 1, 1, "invariants[0]")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def paths_json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, _ = run(capsys, "paths", *argv, *CLUSTER, "-o", "json")
    return code, json.loads(out)


# ---------------------------------------------------------------- known chains

def test_world_reaches_postgres_in_three_hops_through_no_node(capsys):
    code, data = paths_json(capsys, "world", "db/postgres-0", "--trust-nodes")
    assert code == 1 and data["found"]
    chain = data["chains"][0]
    assert [p["name"] for p in chain["places"]][1:] == ["web/frontend-0", "app/api-0", "db/postgres-0"]
    assert chain["places"][0]["kind"] == "world"
    assert [h["ports"] for h in chain["hops"]] == [["443/TCP"], ["9000/TCP"], ["5432/TCP"]]
    assert [h["l7_filtered"] for h in chain["hops"]] == [[], ["9000/TCP"], []]
    last = chain["hops"][2]
    assert [r["path"] for r in last["egress"]["rules"]] == ["spec.egress[0]"]
    assert [r["path"] for r in last["egress"]["less_denied_by"]] == ["spec.egressDeny[0]"]  # 5433 of 5432-5433
    assert last["ingress"]["reason"] == "allowed-by-rule" and chain["hops"][0]["egress"]["reason"] == "not-an-endpoint"


def test_an_untrusted_node_is_a_shorter_chain(capsys):
    """Nothing enforces on the nodes (no host policy), and a node always reaches its own pods (R3.9)."""
    code, data = paths_json(capsys, "world", "db/postgres-0")
    assert code == 1
    hops = data["chains"][0]["hops"]
    assert [h["to"] for h in hops] == ["n2", "db/postgres-0"]
    assert hops[1]["ingress"]["reason"] == "allow-localhost" and hops[1]["ports"] == [
        f"*/{p.label}" for p in PROTOCOLS if p is not Protocol.ICMPV6]  # IPv4-only ends send no ICMPv6


@pytest.mark.parametrize("limits", [("--ports", "443/TCP,5432/TCP"), ("--max-hops", "2"), ("--ports", "9000-9001/TCP")])
def test_limits_that_break_the_chain_exit_zero(capsys, limits):
    code, out, _ = run(capsys, "paths", "world", "db/postgres-0", *CLUSTER, "--trust-nodes", *limits)
    assert code == 0 and out.startswith("no chain of allowed connections from world to db/postgres-0")


def test_k_shortest_chains_in_order(capsys):
    code, data = paths_json(capsys, "world", "db/postgres-0", "-k", "5")
    lengths = [c["length"] for c in data["chains"]]
    assert lengths == sorted(lengths) and lengths[0] == 2 and len(lengths) == 5
    assert len({tuple(p["name"] for p in c["places"]) for c in data["chains"]}) == 5  # distinct chains
    _, trusted = paths_json(capsys, "world", "db/postgres-0", "-k", "5", "--trust-nodes")
    assert [c["length"] for c in trusted["chains"]] == [3, 3]  # through either frontend replica
    assert {c["hops"][0]["to"] for c in trusted["chains"]} == {"web/frontend-0", "web/frontend-1"}


def test_outside_addresses_end_chains_but_never_relay_them(capsys):
    """api-0 reaches 203.0.113.0/24 on 443 and the world reaches the frontend on 443: no chain api -> frontend."""
    assert paths_json(capsys, "app/api-0", "203.0.113.0/24", "--trust-nodes")[0] == 1
    assert paths_json(capsys, "app/api-0", "web/frontend-0", "--trust-nodes")[0] == 0
    assert paths_json(capsys, "app/api-0", "203.0.113.5")[0] == 1
    assert paths_json(capsys, "app/api-0", "203.0.113.200")[0] == 0  # in the except
    assert paths_json(capsys, "app/api-0", "203.0.113.128/25")[0] == 0


def test_replicas_reach_each_other_in_one_hop_when_admitted(capsys):
    code, data = paths_json(capsys, "ops/debug-0", "ops/debug-1")
    assert code == 1 and [h["from"] + ">" + h["to"] for h in data["chains"][0]["hops"]] == ["ops/debug-0>ops/debug-1"]
    assert paths_json(capsys, "web/frontend-0", "web/frontend-1", "--trust-nodes")[0] == 0


def test_blast_radius_by_hops_and_namespace(capsys):
    code, out, _ = run(capsys, "blast-radius", "web/frontend-0", *CLUSTER, "--trust-nodes", "-o", "json")
    data = json.loads(out)
    assert code == 0 and data["pods"] == 2 and data["nodes"] == 0 and data["outside"] == 1
    assert [(h["hops"], h["pods"], h["outside"]) for h in data["by_hops"]] == [(1, 1, 0), (2, 1, 1)]
    assert data["by_namespace"] == [{"namespace": "app", "pods": 1, "nearest": 1},
                                    {"namespace": "db", "pods": 1, "nearest": 2}]
    first = {r["name"]: r["first_hop"] for r in data["reached"]}
    assert (first["db/postgres-0"]["from"], first["db/postgres-0"]["ports"]) == ("app/api-0", ["5432/TCP"])
    assert paths_json(capsys, "web/frontend-0", "db/postgres-0", "--max-hops", "1")[0] == 0
    code, out, _ = run(capsys, "blast-radius", "web/frontend-0", *CLUSTER, "--max-hops", "1", "-o", "yaml")
    assert "pods: 1\n" in out


def test_blast_radius_of_a_class_leaves_out_the_compromised_pods(capsys):
    _, out, _ = run(capsys, "blast-radius", "app=debug", *CLUSTER, "--trust-nodes", "-o", "json")
    data = json.loads(out)
    assert data["pods"] == 0 and data["nodes"] == 2  # debug-0 and debug-1 are both the source
    _, out, _ = run(capsys, "blast-radius", "ops/debug-0", *CLUSTER, "--trust-nodes", "-o", "json")
    assert [r["members"] for r in json.loads(out)["reached"] if r["kind"] == "pods"] == [["ops/debug-1"]]
    _, out, _ = run(capsys, "blast-radius", "ops/debug-0", *CLUSTER, "-o", "json")
    assert json.loads(out)["pods"] == 5  # through the nodes, every pod: the local node reaches its pods


@pytest.mark.parametrize("command, refs, extra, message", [
    ("paths", ("world", "db/nope"), (), "unknown endpoint 'db/nope'"),
    ("paths", ("10.0.0.1/8", "db/postgres-0"), (), "did you mean 10.0.0.0/8"),
    ("paths", ("world", "app=nothing"), (), "matches no pod"),
    ("paths", ("db/postgres-0", "db/postgres-0"), (), "same endpoint"),
    ("paths", ("world", "db/postgres-0"), ("--ports", "99999/TCP"), "--ports: invalid port"),
    ("paths", ("world", "db/postgres-0"), ("--ports", "80/XTP"), "--ports: invalid port"),
    ("paths", ("world", "db/postgres-0"), ("-k", "0"), "--count: 0"),
    ("blast-radius", ("host",), (), "'host' is a policy entity, not an endpoint: name a node (n1, n2)"),
    ("blast-radius", ("nope",), (), "here also a CIDR, world, world-ipv4, world-ipv6 or a reserved identity"),
    ("paths", ("world", "db/postgres-0"), ("-k", "100000"), "--count: 100000 is not a number of chains (1 to 1000"),
    ("paths", ("world", "db/postgres-0"), ("--ports", "5432/ICMP"), "ICMP and ICMPv6 types are 0-255"),
    ("blast-radius", ("world",), ("--ports", "0-65535/ICMPv6"), "ICMP and ICMPv6 types are 0-255"),
])
def test_bad_references_are_errors(capsys, command, refs, extra, message):
    code, out, err = run(capsys, command, *refs, *CLUSTER, *extra)
    assert code == 2 and message in err and out == ""


def test_zero_hops_is_a_usage_error(capsys):
    assert main(["paths", "world", "db/postgres-0", *CLUSTER, "--max-hops", "0"]) == 2
    assert "--max-hops: '0' is not a number of hops" in capsys.readouterr().err


# ---------------------------------------------------------------- the graph as data and picture

def test_graph_json_and_graphml_hold_the_edges(capsys, tmp_path):
    code, out, _ = run(capsys, "graph", *CLUSTER, "-o", "json")
    g = nx.node_link_graph(json.loads(out), edges="edges")
    edge = g.edges["web/frontend-0", "app/api-0"]
    assert code == 0 and edge["ports"] == ["9000/TCP"] and edge["l7_filtered"] == ["9000/TCP"]
    assert g.nodes["ops/debug-0 (+1)"]["members"] == ["ops/debug-0", "ops/debug-1"]
    assert g.nodes["n2"]["kind"] == "node" and g.has_edge("n2", "db/postgres-0")
    run(capsys, "graph", *CLUSTER, "-o", "graphml", "--out", str(tmp_path / "g.graphml"))
    h = nx.read_graphml(tmp_path / "g.graphml")
    assert set(h.edges) == set(g.edges) and h.edges["web/frontend-0", "app/api-0"]["ports"] == "9000/TCP"


def test_graph_filters_ports_namespaces_pods_and_nodes(capsys):
    def edges(*argv):
        _, out, _ = run(capsys, "graph", *CLUSTER, "-o", "json", "--no-nodes", *argv)
        return {(e["source"], e["target"]) for e in json.loads(out)["edges"]}
    assert edges("--namespace", "db") == {("app/api-0", "db/postgres-0")}
    assert edges("--namespace", "app") == {("web/frontend-0 (+1)", "app/api-0"), ("app/api-0", "db/postgres-0"),
                                           ("app/api-0", "203.0.113.0/24 except 203.0.113.128/25")}
    assert edges("--namespace", "app", "--ports", "5432/TCP") == {("app/api-0", "db/postgres-0")}
    assert ("ops/debug-0", "ops/debug-1") in edges("--pods", "--namespace", "ops")
    assert ("ops/debug-0 (+1)", "ops/debug-0 (+1)") in edges("--namespace", "ops")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydot's parser on a newer pyparsing
def test_dot_has_namespaces_as_clusters_and_the_highlighted_chain(capsys):
    code, out, _ = run(capsys, "graph", *CLUSTER, "-o", "dot", "--highlight", "world", "db/postgres-0")
    (dot,) = pydot.graph_from_dot_data(out)
    labels = {sub.get_label().strip('"') for sub in dot.get_subgraphs()}
    assert {"namespace web", "namespace app", "namespace db", "namespace ops", "nodes",
            "outside the cluster"} <= labels
    red = {(e.get_source().strip('"'), e.get_destination().strip('"')) for e in dot.get_edges()
           if e.get("color") == '"#d93025"'}
    assert red == {("world-ipv4 except 203.0.113.0/24", "n2"), ("n2", "db/postgres-0")}
    assert any(e.get("style") == "dashed" for e in dot.get_edges())  # the L7-filtered frontend -> api


def test_svg_and_png_come_from_graphviz(capsys, tmp_path, monkeypatch):
    import shutil
    if shutil.which("dot") is None:
        pytest.skip("Graphviz is not installed (scripts/install-deps.sh installs it)")
    assert run(capsys, "graph", *CLUSTER, "-o", "svg", "--out", str(tmp_path / "g.svg"))[0] == 0
    assert ET.parse(tmp_path / "g.svg").getroot().tag.endswith("svg")
    run(capsys, "graph", *CLUSTER, "-o", "png", "--out", str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run(capsys, "graph", *CLUSTER, "-o", "svg", "--out", str(tmp_path / "h.svg"))
    assert code == 2 and "apt-get install graphviz" in err


# ---------------------------------------------------------------- invariants

SPEC = """\
apiVersion: policyc.io/v1alpha1
kind: VerificationSpec
invariants:
- name: internet-needs-three-hops-to-postgres
  noPath: {from: {entity: world}, to: 'namespace=db', maxHops: 2, trustNodes: true}
- name: internet-never-reaches-postgres
  noPath: {from: {entity: world}, to: {pod: db/postgres-0}, trustNodes: true}
- name: frontend-reaches-two-pods
  maxBlastRadius: {from: app=frontend, pods: 2, trustNodes: true}
- name: debug-reaches-its-replica-through-no-node
  maxBlastRadius: {from: app=debug, pods: 1, ports: [443/TCP], trustNodes: true}
- name: debug-is-contained
  maxBlastRadius: {from: app=debug, pods: 1}
"""


def test_verify_no_path_and_max_blast_radius(capsys, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    code, out, _ = run(capsys, "verify", *CLUSTER, "--spec", str(spec), "--format", "json")
    results = {r["name"]: r for r in json.loads(out)["invariants"]}
    assert code == 1
    assert [n for n, r in results.items() if not r["holds"]] == ["internet-never-reaches-postgres",
                                                                 "debug-is-contained"]
    chain = results["internet-never-reaches-postgres"]["reach"]
    assert [p["name"] for p in chain["places"]][1:] == ["web/frontend-0", "app/api-0", "db/postgres-0"]
    blast = results["debug-is-contained"]["reach"]
    assert blast["from"] == "ops/debug-0" and blast["pods"] == 5
    assert "(the most: web/frontend-0, 2)" in results["frontend-reaches-two-pods"]["message"]
    code, out, _ = run(capsys, "verify", *CLUSTER, "--spec", str(spec), "--format", "junit")
    failures = ET.fromstring(out.split("\n", 1)[1]).iter("failure")
    text = {f.get("type"): f.text for f in failures}
    assert "-> app/api-0 -> db/postgres-0  (3 hops)" in text["noPath"]
    assert "5 pods in 4 namespaces" in text["maxBlastRadius"]


@pytest.mark.parametrize("body, message", [
    ("noPath: {from: world, to: 'app=a', maxHops: 0}", "maxHops must be a whole number, at least 1"),
    ("maxBlastRadius: {from: {cidr: 10.0.0.0/8}, pods: 1}", "`from` must be a selector or a pod"),
    ("maxBlastRadius: {from: 'app=a', pods: -1}", "pods must be a whole number, at least 0"),
    ("maxBlastRadius: {from: 'app=a'}", "missing field 'pods'"),
    ("noPath: {from: 'app=a', to: 'app=b', trustNodes: maybe}", "must be true or false"),
])
def test_bad_multi_hop_invariants_point_at_the_field(capsys, tmp_path, body, message):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"invariants:\n- {body}\n")
    code, _, err = run(capsys, "verify", *CLUSTER, "--spec", str(spec))
    assert code == 2 and message in err and f"{spec}:2:" in err


_body = st.dictionaries(st.sampled_from(["from", "to", "pods", "maxHops", "ports", "trustNodes", "between"]),
                        st.none() | st.booleans() | st.integers(-2, 70000) | st.sampled_from(
                            ["app=a", "*", "80/TCP", "x/y", "world", "10.0.0.0/8"])
                        | st.lists(st.sampled_from(["80/TCP", "1-2/UDP", 3, None]), max_size=2)
                        | st.dictionaries(st.sampled_from(["entity", "cidr", "pod", "pods"]),
                                          st.sampled_from(["world", "10.0.0.0/8", "db/postgres-0", "app=a", 7]),
                                          max_size=2), max_size=5)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["noPath", "maxBlastRadius"]), body=_body | st.none() | st.integers())
def test_any_multi_hop_invariant_is_parsed_or_refused_with_positions(kind, body):
    try:
        spec = parse_spec(parse_text(json.dumps({"invariants": [{kind: body}]}), "s.json"), "s.json")
    except PolicycError as exc:
        assert exc.diagnostics and all(d.file == "s.json" for d in exc.diagnostics)
    else:
        inv = spec.invariants[0]
        assert inv.kind == kind and (inv.max_hops is None or inv.max_hops >= 1)


def test_multi_hop_invariants_need_the_inventory(capsys, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    code, _, err = run(capsys, "verify", POLICIES, "--spec", str(spec))
    assert code == 2 and f"{spec}:4:3" in err and "noPath needs --inventory" in err


# ---------------------------------------------------------------- properties

def _probe_ports(policy, endpoints) -> list[tuple[Protocol, int]]:
    """Every port where a verdict may change: each rule range's edges and the named ports, with neighbours."""
    cuts = {0, 65535}
    for rule in policy.rules:
        for pm in rule.ports:
            cuts |= {pm.first - 1, pm.first, pm.last, pm.last + 1}
    cuts |= {np.port + d for ep in endpoints for np in ep.ports for d in (-1, 0, 1)}
    return [(p, port) for p in (Protocol.TCP, Protocol.UDP, Protocol.ICMP) for port in sorted(cuts)
            if 0 <= port <= 65535]


def _outside(a, b) -> bool:
    return a.kind is EndpointKind.EXTERNAL and b.kind is EndpointKind.EXTERNAL


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets() | broad_policy_sets(), inventory=inventories())
def test_every_edge_is_the_evaluators_verdict_on_every_port(policy, inventory):
    """Pod by pod, node by node and address by address: an edge (and its L7 mark and rules) exactly where
    the evaluator allows, on exactly the ports it allows."""
    conn = build(policy, inventory, targets=[])
    outside = [p.rep for p in conn.places if p.kind.outside]
    endpoints = list(inventory.endpoints) + outside + list(EXTERNALS)
    evaluator = Evaluator(policy)
    ports = _probe_ports(policy, endpoints)
    for a in endpoints:
        for b in endpoints:
            if a == b or _outside(a, b):
                continue
            u, v = conn.place_of(a), conn.place_of(b)
            hop = conn.edge(u, v)  # ruled or left to both defaults
            for protocol, port in ports:
                verdict = evaluator.evaluate(Flow(a, b, protocol, port))
                on_edge = hop is not None and hop.ports.contains(protocol, port)
                assert verdict.allowed == on_edge, (a.display, b.display, protocol, port, hop)
                if on_edge:
                    assert bool(verdict.l7) == hop.l7.contains(protocol, port)
                    assert set(verdict.egress.rules) <= set(hop.egress.rules)
                    assert set(verdict.ingress.rules) <= set(hop.ingress.rules)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets(), inventory=inventories(), data=st.data())
def test_every_hop_of_a_reported_chain_is_allowed_by_query(policy, inventory, data):
    conn = build(policy, inventory, targets=[])
    ids = st.sampled_from(range(len(conn.places)))
    srcs, dsts = data.draw(st.sets(ids, min_size=1, max_size=3)), data.draw(st.sets(ids, min_size=1, max_size=3))
    max_hops = data.draw(st.none() | st.integers(1, 4))
    ports = data.draw(st.none() | st.sampled_from([parse_ports("80/TCP,53/UDP"), parse_ports("8080-8090/TCP")]))
    trusted = frozenset(conn.nodes()) if data.draw(st.booleans()) else frozenset()
    evaluator = Evaluator(policy)
    chains = conn.chains(srcs, dsts, 3, max_hops, ports, trusted)
    for chain in chains:
        assert chain[0].src in srcs and chain[-1].dst in dsts and len(chain) <= (max_hops or len(chain))
        assert all(h.src == g.dst for g, h in zip(chain, chain[1:]))
        assert not any(h.src in conn.ends | trusted for h in chain[1:])  # outside and trusted places never relay
        for hop in chain:
            src, dst = conn.places[hop.src].members, conn.places[hop.dst].members
            a, b = (src[0], dst[1]) if hop.src == hop.dst else (src[0], dst[0])
            assert hop.ports and (ports is None or not hop.ports - ports)
            for protocol, lo, hi in hop.ports.spans:
                for port in (lo, hi):
                    assert evaluator.evaluate(Flow(a, b, protocol, port)).allowed, (a.display, b.display, port)
    assert [len(c) for c in chains] == sorted(len(c) for c in chains)


PORTS = [(80, Protocol.TCP), (53, Protocol.UDP), (8080, Protocol.TCP), (8, Protocol.ICMP)]


def _bfs_chain(edges: dict, starts: set, goals: set, max_hops: int | None, relays: set) -> bool:
    """Breadth-first search over pods: a chain of at least one hop from a start to a goal."""
    seen: set = set()
    queue = deque((s, 0) for s in starts)
    while queue:
        node, depth = queue.popleft()
        if max_hops is not None and depth == max_hops or (depth and node not in relays):
            continue
        for nxt in edges.get(node, ()):
            if nxt in goals:
                return True
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, depth + 1))
    return False


_peers = st.one_of(selectors.map(lambda s: Pods(s, str(s))), st.just(Addresses(WORLD["world"], "world")))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets(), inventory=inventories(), src=_peers, dst=_peers,
       max_hops=st.none() | st.integers(1, 4))
def test_no_path_holds_exactly_when_bfs_over_matrix_finds_no_chain(policy, inventory, src, dst, max_hops):
    pods = Inventory(inventory.pods, inventory.namespaces)  # the matrix holds pods and addresses, not nodes
    inv = NoPath("n", _HERE, src, dst, max_hops, tuple(PortRange(p, n, n) for n, p in PORTS))
    graph = MultiHop(policy, pods, [inv])
    holds = graph.prove(inv)[0]
    outside = [p.rep for p in graph.conn.places if p.kind.outside]
    endpoints = list(pods.pods) + outside
    edges: dict = {}
    for row in compute(policy, endpoints, PORTS):
        if row["verdict"] == "allow":
            edges.setdefault(row["from"], set()).add(row["to"])
    for a in outside:  # two addresses outside the cluster: no policy decides, no hop
        edges[a.display] = {b for b in edges.get(a.display, ()) if b not in {o.display for o in outside}}

    def members(peer) -> set[str]:
        if isinstance(peer, Pods):
            return {ep.display for ep in pods.pods if peer.selector.matches(ep.identity.labels)}
        return {o.display for o in outside if o.kind is EndpointKind.EXTERNAL and o.ips}

    relays, goals = {ep.display for ep in pods.pods}, members(dst)
    # a pod coming back to itself reaches no destination
    assert holds == (not any(_bfs_chain(edges, {s}, goals - {s}, max_hops, relays) for s in members(src)))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets() | broad_policy_sets(), inventory=inventories(), trust=st.booleans(), ports=st.none() | st.just(PortSet.of(
    [(Protocol.TCP, 80, 80), (Protocol.UDP, 53, 53)])))
def test_blast_radius_counts_over_the_condensation_equal_breadth_first_search(policy, inventory, trust, ports):
    conn = build(policy, inventory, targets=[])
    avoid = frozenset(conn.nodes()) if trust else frozenset()
    counts = reach_counts(conn, ports, avoid)
    within = {hops: reach_counts_within(conn, ports, avoid, hops) for hops in (1, 2, 3)}
    for place in conn.places:
        if place.kind is Kind.PODS:
            assert counts[place.id] == _reached_pods(conn, place, conn.reach({place.id}, None, ports, avoid))
        if place.kind in (Kind.PODS, Kind.NODE):  # bounded: every class at once, as a search from each
            for hops, bounded in within.items():
                found = conn.reach({place.id}, hops, ports, avoid)
                assert bounded[place.id] == _reached_pods(conn, place, found), (place.name, hops)


def _reached_pods(conn, place, found) -> int:
    """Pods a pod of ``place`` reaches: every member of a reached class but that pod itself."""
    pods = sum(len(conn.places[p].members) for p in found if conn.places[p].kind is Kind.PODS)
    return pods - (place.id in found and place.kind is Kind.PODS)


def test_max_blast_radius_bounded_and_unbounded_agree_on_the_example():
    policy, inventory = load_policies([POLICIES])[0], load_inventory([INVENTORY])
    every = Pods(Selector(), "*")
    unbounded, bounded = MaxBlastRadius("a", _HERE, every, 3), MaxBlastRadius("b", _HERE, every, 3, max_hops=9)
    graph = MultiHop(policy, inventory, [unbounded, bounded])
    (held, one, _, worst), (held_too, other, _, worst_too) = graph.prove(unbounded), graph.prove(bounded)
    assert not held and not held_too and worst == worst_too and worst["pods"] == 5
    assert one.split(" pods")[0] == other.split(" pods")[0]


def test_the_cut_of_outside_addresses_follows_the_policy_cidrs():
    policy = load_policies([POLICIES])[0]
    conn = build(policy, load_inventory([INVENTORY]), targets=[])
    names = sorted(p.name for p in conn.places if p.kind is Kind.WORLD)
    assert names == ["203.0.113.0/24 except 203.0.113.128/25", "203.0.113.128/25",
                     "world-ipv4 except 203.0.113.0/24", "world-ipv6"]
    assert conn.places[conn.place_in(ipaddress.ip_address("203.0.113.200"))].name == "203.0.113.128/25"


# ---------------------------------------------------------------- the bundled example (its README says so)

SHOP = Path(__file__).resolve().parents[1] / "examples" / "shop"
SHOP_INPUTS = (str(SHOP / "policies"), "--inventory", str(SHOP / "inventory.yaml"))


def test_the_shop_chains_its_readme_shows(capsys):
    code, out, _ = run(capsys, "paths", "world", "data/postgres", *SHOP_INPUTS, "--trust-nodes", "-o", "json")
    chain = json.loads(out)["chains"][0]
    assert code == 1 and [p["name"] for p in chain["places"]][1:] == [
        "ops/ingress", "shop/frontend", "shop/catalog", "data/postgres"]
    assert chain["hops"][2]["l7_filtered"] == ["8080/TCP"]
    _, out, _ = run(capsys, "paths", "world", "data/postgres", *SHOP_INPUTS, "-o", "json")
    assert [h["to"] for h in json.loads(out)["chains"][0]["hops"]] == ["node-2", "data/postgres"]
    _, out, _ = run(capsys, "blast-radius", "shop/frontend", *SHOP_INPUTS, "--trust-nodes", "-o", "json")
    data = json.loads(out)
    assert data["pods"] == 8 and [h["pods"] for h in data["by_hops"]] == [4, 4]


def test_the_shop_paths_spec_holds(capsys):
    code, out, _ = run(capsys, "verify", *SHOP_INPUTS, "--spec", str(SHOP / "paths.yaml"), "--format", "json")
    assert code == 0 and len(json.loads(out)["invariants"]) == 3


def test_the_shop_picture_shows_the_shortest_chain_in_red():
    """graph.svg is `policyc graph ... --no-nodes --highlight world data/postgres`: its red edges are the chain."""
    ns = "{http://www.w3.org/2000/svg}"
    red = set()
    for g in ET.parse(SHOP / "graph.svg").getroot().iter(f"{ns}g"):
        if g.get("class") == "edge" and any(p.get("stroke") == "#d93025" for p in g.iter(f"{ns}path")):
            red.add(g.find(f"{ns}title").text)
    assert red == {"world-ipv4 except 169.254.169.254/32, 198.51.100.0/24->ops/ingress",
                   "ops/ingress->shop/frontend", "shop/frontend->shop/catalog", "shop/catalog->data/postgres"}


# ---------------------------------------------------------------- what an adversarial review found

ATTACK = DATA / "attack"


def _cluster(name: str) -> tuple[str, str, str]:
    return str(ATTACK / name / "pol.yaml"), "--inventory", str(ATTACK / name / "inv.yaml")


def _verify(capsys, tmp_path, cluster: str, body: str, *extra: str) -> tuple[int, str, str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"invariants:\n{body}")
    return run(capsys, "verify", *_cluster(cluster), "--spec", str(spec), *extra)


def _query(capsys, cluster: str, src: str, dst: str, port: str) -> str:
    code, out, _ = run(capsys, "query", *_cluster(cluster), "--from", src, "--to", dst, "--port", port)
    assert code in (0, 1), out
    return out.splitlines()[0].rsplit(": ", 1)[1]


def test_a_cidr_of_a_node_or_pod_address_is_that_node_or_pod(capsys, tmp_path):
    """The judge: query lets the node at 192.168.0.1 reach a/db; a pod address is its pod, as on the command line."""
    assert _query(capsys, "hn", "192.168.0.1", "a/db", "5432/TCP") == "ALLOW"
    body = ("- {name: node, noPath: {from: {cidr: 192.168.0.1}, to: a/db}}\n"
            "- {name: pod, noPath: {from: {cidr: 10.0.1.5/32}, to: a/db}}\n")
    code, out, _ = _verify(capsys, tmp_path, "hn", body, "-o", "json")
    assert code == 1 and [r["holds"] for r in json.loads(out)["invariants"]] == [False, False]
    code, out, _ = run(capsys, "paths", "10.0.1.5/32", "a/db", *_cluster("hn"))
    assert code == 1 and "a/web -> node-1 -> a/db" in out


def test_host_network_pods_are_their_nodes_in_selectors_and_specs(capsys, tmp_path):
    """kube-system/agent runs on node-1's network: query lets node-1 reach a/db, so no gate about it passes."""
    assert _query(capsys, "hn", "kube-system/agent", "a/db", "5432/TCP") == "ALLOW"
    body = ("- {name: by-selector, noPath: {from: 'namespace=kube-system,app=agent', to: a/db}}\n"
            "- {name: by-name, noPath: {from: kube-system/agent, to: a/db}}\n"
            "- {name: blast, maxBlastRadius: {from: 'namespace=kube-system,app=agent', pods: 0}}\n"
            "- {name: blast-by-name, maxBlastRadius: {from: kube-system/agent, pods: 0}}\n")
    code, out, err = _verify(capsys, tmp_path, "hn", body, "-o", "json")
    assert code == 1 and [r["holds"] for r in json.loads(out)["invariants"]] == [False] * 4, err
    code, out, _ = run(capsys, "paths", "app=agent", "a/db", *_cluster("hn"), "--trust-nodes")
    assert code == 1 and "node-1 -> a/db" in out
    code, out, err = run(capsys, "paths", "kube-system/agent", "a/db", *_cluster("hn"), "--trust-nodes")
    assert code == 1 and "kube-system/agent is a hostNetwork pod" in err and "answered as node node-1" in err


def test_a_pod_coming_back_to_itself_reaches_no_destination(capsys, tmp_path):
    """a/x and a/y admit each other, a/z nobody: x -> y -> x is no chain to 'app in (x,z)'."""
    assert _query(capsys, "pin", "a/x", "a/z", "80/TCP") == "DENY"
    assert _query(capsys, "pin", "a/y", "a/z", "80/TCP") == "DENY"
    code, out, _ = run(capsys, "paths", "a/x", "app in (x,z)", *_cluster("pin"), "--trust-nodes")
    assert code == 0 and out.startswith("no chain"), out
    code, out, _ = _verify(capsys, tmp_path, "pin", "- {name: x, noPath: {from: a/x, to: 'app in (x,z)', trustNodes: true}}\n")
    assert code == 0, out
    assert run(capsys, "paths", "a/x", "app in (y,z)", *_cluster("pin"), "--trust-nodes")[0] == 1
    code, out, _ = run(capsys, "paths", "app in (x,y)", "a/x", *_cluster("pin"), "--trust-nodes")
    assert code == 1 and "1) a/y -> a/x  (1 hop)" in out  # another source reaching a/x is a chain


def test_a_node_named_world_ipv4_is_not_the_internet(capsys):
    assert _query(capsys, "coll", "8.8.8.8", "a/db", "80/TCP") == "DENY"
    assert _query(capsys, "coll", "8.8.8.8", "a/x", "80/TCP") == "ALLOW"
    code, out, _ = run(capsys, "paths", "world", "a/db", *_cluster("coll"), "--trust-nodes", "-o", "json")
    places = json.loads(out)["chains"][0]["places"]
    assert code == 1 and [(p["kind"], p["name"]) for p in places] == [
        ("world", "world-ipv4"), ("pods", "a/x"), ("pods", "a/db")]  # through a/x, not from the node
    code, out, _ = run(capsys, "graph", *_cluster("coll"), "-o", "json")
    g = nx.node_link_graph(json.loads(out), edges="edges")
    assert g.nodes["node:world-ipv4"]["kind"] == "node" and g.nodes["world-ipv4"]["kind"] == "world"
    assert not g.has_edge("world-ipv4", "world-ipv4")


def test_an_invariant_that_checks_nothing_is_vacuous_in_every_format(capsys, tmp_path):
    """A typo in a selector ('app=wbe') checks nothing: never PASS, a failure unless --allow-vacuous."""
    body = ("- {name: typo, noPath: {from: 'namespace=a,app=wbe', to: a/db}}\n"
            "- {name: checked, noPath: {from: a/web, to: a/db, trustNodes: true}}\n")
    code, out, _ = _verify(capsys, tmp_path, "hn", body, "-q")
    assert code == 1 and out.startswith("VACUOUS noPath 'typo'") and "1 hold, 1 vacuous, 0 failed" in out
    code, out, _ = _verify(capsys, tmp_path, "hn", body, "-o", "json")
    assert [(r["holds"], r["vacuous"]) for r in json.loads(out)["invariants"]] == [(True, True), (True, False)]
    for extra, tag, status in (((), "failure", 1), (("--allow-vacuous",), "skipped", 0)):
        code, out, _ = _verify(capsys, tmp_path, "hn", body, "-o", "junit", *extra)
        case = ET.fromstring(out.split("\n", 1)[1]).find(".//testcase[@name='typo']")
        assert code == status and case.find(tag) is not None and "checked nothing" in case.find(tag).get("message")



@pytest.mark.parametrize("namespace, message", [("nope", "(namespaces: app, db, ops, web)"),
                                                ("dbb", "did you mean 'db'?")])
def test_graph_of_a_namespace_no_pod_is_in_is_an_error(capsys, namespace, message):
    code, out, err = run(capsys, "graph", *CLUSTER, "--namespace", namespace)
    assert code == 2 and out == "" and f"--namespace {namespace}: no pod of the inventory" in err and message in err


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_gate_whose_reader_left_never_exits_zero(fmt):
    """`paths ... | head` under pipefail: exit 0 would say "no chain" while one exists; 141 is SIGPIPE's."""
    import os
    import subprocess
    import sys
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    done = subprocess.run([sys.executable, "-m", "policyc.cli", "paths", "world", "db/postgres-0", *CLUSTER,
                           "-k", "3", "-o", fmt], stdout=write, stderr=subprocess.PIPE, env=env, timeout=120)
    os.close(write)
    assert done.returncode == 141 and b"Traceback" not in done.stderr and b"Exception" not in done.stderr


def test_answers_that_leave_out_fqdn_peers_say_so(capsys, tmp_path):
    """Every pod may reach every Internet name (toFQDNs '*'): 'no chain to world' must carry the caveat."""
    code, _, err = run(capsys, "paths", "a/p1", "world", *_cluster("fq"), "--trust-nodes")
    assert code == 0 and "allow toFQDNs peers, which the graph leaves out" in err
    code, out, _ = _verify(capsys, tmp_path, "fq", "- {name: x, noPath: {from: 'namespace=a', to: {entity: world}, "
                                                    "trustNodes: true}}\n", "-o", "json")
    assert code == 0 and "caveat: " in json.loads(out)["invariants"][0]["message"]


def test_the_highlighted_chain_is_drawn_whole_with_namespace(capsys):
    code, out, _ = run(capsys, "graph", *CLUSTER, "-o", "json", "--namespace", "db", "--highlight", "world",
                       "db/postgres-0", "--no-nodes")
    lit = [(e["source"], e["target"]) for e in json.loads(out)["edges"] if e["highlighted"]]
    assert code == 0 and {b for _, b in lit} - {a for a, _ in lit} == {"db/postgres-0"}
    assert {a for a, _ in lit} - {b for _, b in lit} == {"world-ipv4 except 203.0.113.0/24"}  # the whole chain


def test_answers_over_a_backend_of_cilium_ingress_say_the_proxy_does_not_relay(capsys):
    code, _, err = run(capsys, "paths", "world", "a/backend", *_cluster("ing"), "--trust-nodes")
    assert code == 0 and "chains never pass through it" in err
    code, out, _ = run(capsys, "paths", "ingress", "a/backend", *_cluster("ing"), "--trust-nodes")
    assert code == 1 and "reserved:ingress -> a/backend" in out


LONE_INVENTORY = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: a}}
- {apiVersion: v1, kind: Pod, metadata: {name: p, namespace: a, labels: {app: p}}, spec: {nodeName: n1}, status: {podIP: 10.0.1.1}}
- {apiVersion: v1, kind: Pod, metadata: {name: q, namespace: a, labels: {app: q}}, spec: {nodeName: n1}, status: {podIP: 10.0.1.2}}
- {apiVersion: v1, kind: Pod, metadata: {name: r, namespace: a, labels: {app: r}}, spec: {nodeName: n1}, status: {podIP: 10.0.1.3}}
- {apiVersion: v1, kind: Node, metadata: {name: n1}, status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}}
"""
LONE_POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: q-only-from-r, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: q}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: r}}]
"""


def test_k_chains_never_come_back_to_a_one_pod_source(tmp_path, capsys):
    """An adversarial user's find: `-k 6` from a/p listed `a/p -> a/r -> a/p -> n1 -> a/q` (the source
    pod again, a loop) to fill its six. Only four chains exist, and only they are listed."""
    (tmp_path / "inv.yaml").write_text(LONE_INVENTORY)
    (tmp_path / "pol.yaml").write_text(LONE_POLICY)
    assert main(["paths", "a/p", "a/q", str(tmp_path / "pol.yaml"), "--inventory", str(tmp_path / "inv.yaml"),
                 "-k", "6", "--ports", "80/TCP", "--format", "json"]) == 1
    chains = json.loads(capsys.readouterr().out)["chains"]
    assert len(chains) == 4
    for chain in chains:
        names = [chain["hops"][0]["from"]] + [hop["to"] for hop in chain["hops"]]
        assert names.count("a/p") == 1, names


def test_an_error_nobody_reads_still_exits_2(tmp_path):
    """`policyc paths ... 2>&1 | head -0`-like: the reader of the error left. The error exit (2) stands;
    before, writing the error raised BrokenPipeError out of main and Python exited 1, which for `paths`
    means "a chain exists"."""
    (tmp_path / "inv.yaml").write_text(LONE_INVENTORY)
    (tmp_path / "pol.yaml").write_text(LONE_POLICY)
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-m", "policyc.cli", "paths", "a/p", "a/nope", str(tmp_path / "pol.yaml"),
                           "--inventory", str(tmp_path / "inv.yaml")], stdout=write, stderr=write, env=env)
    os.close(write)
    assert done.returncode == 2


def test_a_node_is_not_its_own_blast_radius(capsys):
    """An adversarial user's find: from n1, the chain n1 -> ops/debug-0 -> n1 counted n1 as a node
    reached (2 nodes; BFS over matrix reaches n2 only). The compromised endpoints are left out whatever
    their kind, as its pods always were."""
    assert main(["blast-radius", "n1", str(DATA / "policies.yaml"), "--inventory", str(DATA / "inventory.yaml"),
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["nodes"] == 1
    assert [row["name"] for row in data["reached"] if row["kind"] == "node"] == ["n2"]
