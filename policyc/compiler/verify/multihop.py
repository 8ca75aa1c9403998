"""`noPath` and `maxBlastRadius`: invariants about chains of connections, decided on the connectivity graph.

A chain is a path in a graph, not one flow, so these two are decided by exact search over the
inventory's endpoint classes (``connectivity``) rather than by Z3; each hop of the graph is
held equal to the evaluator (tests/test_paths.py).  They need the inventory: without one, a
chain could pass through any pod that might ever exist.
"""
from __future__ import annotations

import networkx as nx

from ..chains import blast_json, blast_text, chain_json, chain_text, plural
from ..connectivity import Connectivity, Kind, Target, address_target, build
from ..inventory import Inventory
from ..ir import PolicySet
from ..portset import PortSet
from .spec import Addresses, MaxBlastRadius, NamedPod, NoPath, Peer, Pods, PortRange


def target(peer: Peer, inventory: Inventory) -> Target:
    if isinstance(peer, Pods):
        return Target(str(peer), inventory.select(peer.selector))
    if isinstance(peer, NamedPod):
        return Target(str(peer), (inventory.find(peer.ref),))
    assert isinstance(peer, Addresses)
    return address_target(str(peer), peer.networks, inventory)


def _names(t: Target) -> frozenset[str]:
    return frozenset(ep.display for ep in t.endpoints)


def _ports(ranges: tuple[PortRange, ...]) -> PortSet | None:
    return PortSet.of((p.protocol, p.first, p.last) for p in ranges) if ranges else None


def _limits(inv) -> str:
    parts = [f"within {inv.max_hops} hops" if inv.max_hops else "",
             f"on {', '.join(map(str, inv.ports))}" if inv.ports else "",
             "through no node" if inv.trust_nodes else ""]
    return "".join(" " + p for p in parts if p)


class MultiHop:
    """One graph for every multi-hop invariant of a spec (built with each one's networks)."""

    def __init__(self, policy: PolicySet, inventory: Inventory, invariants: list):
        self.inventory = inventory
        peers = [p for inv in invariants for p in (inv.src, getattr(inv, "dst", None)) if p is not None]
        self.conn: Connectivity = build(policy, inventory, targets=[target(p, inventory) for p in peers])

    def _avoid(self, inv) -> frozenset[int]:
        return frozenset(self.conn.nodes()) if inv.trust_nodes else frozenset()

    def empty(self, inv) -> list[str]:
        """Peers (other than selectors, which ``invariants.vacuity`` covers) that name no place of the
        graph, such as a CIDR whose every address a pod or node holds, so that nothing was checked."""
        peers = [p for p in (inv.src, getattr(inv, "dst", None)) if p is not None and not isinstance(p, Pods)]
        return [f"{p} names no endpoint of the graph" for p in peers
                if not self.conn.places_of(target(p, self.inventory))]

    def prove(self, inv) -> tuple[bool, str, str, dict | None]:
        """(holds, message, explanation, counter-example as JSON)."""
        if isinstance(inv, NoPath):
            return self.no_path(inv)
        return self.max_blast_radius(inv)

    def no_path(self, inv: NoPath) -> tuple[bool, str, str, dict | None]:
        src, dst = target(inv.src, self.inventory), target(inv.dst, self.inventory)
        chains = self.conn.chains(self.conn.places_of(src), self.conn.places_of(dst), 1, inv.max_hops,
                                  _ports(inv.ports), self._avoid(inv), self.conn.pinned(src, dst))
        if not chains:
            caveat = "".join(f" (caveat: {note})" for note in self.conn.notes)
            return (True, f"no chain of allowed connections leads from {inv.src} to {inv.dst}{_limits(inv)}{caveat}",
                    "", None)
        chain, ends = chains[0], (_names(src), _names(dst))
        return (False, f"a chain of {len(chain)} allowed connection{'s' if len(chain) > 1 else ''} leads from "
                       f"{inv.src} to {inv.dst}{_limits(inv)}",
                "\n".join(chain_text(self.conn, chain, *ends)), chain_json(self.conn, chain, *ends))

    def max_blast_radius(self, inv: MaxBlastRadius) -> tuple[bool, str, str, dict | None]:
        src = target(inv.src, self.inventory)
        ports, avoid = _ports(inv.ports), self._avoid(inv)
        classes = sorted(p for p in self.conn.places_of(src) if self.conn.places[p].kind in (Kind.PODS, Kind.NODE))
        if not classes:
            return True, f"no pod matches {inv.src} (vacuously)", "", None
        counts = (reach_counts(self.conn, ports, avoid) if inv.max_hops is None else
                  reach_counts_within(self.conn, ports, avoid, inv.max_hops))
        worst = max(classes, key=lambda c: (counts[c], -c))
        pod = next(ep.display for ep in self.conn.places[worst].members if ep in src.endpoints)
        found = self.conn.reach({worst}, inv.max_hops, ports, avoid)
        data = {"from": pod, **blast_json(self.conn, found, frozenset({pod}))}
        if counts[worst] <= inv.pods:
            return True, (f"no pod of {inv.src} reaches more than {plural(inv.pods, 'pod')}{_limits(inv)} (the most: "
                          f"{pod}, {counts[worst]})"), "", None
        return (False, f"{pod} reaches {plural(counts[worst], 'pod')}{_limits(inv)}, more than {inv.pods}",
                "\n".join(blast_text(self.conn, data)), data)


def _pod_bits(conn: Connectivity, g: nx.DiGraph) -> dict:
    """Each place's pods as bits of one integer (a bit per pod; none for hubs and what is not a pod)."""
    bits, at = {}, 0
    for p in conn.places:
        size = len(p.members) if p.kind is Kind.PODS else 0
        bits[p.id] = ((1 << size) - 1) << at
        at += size
    bits.update((n, 0) for n in g if n not in bits)  # hubs
    return bits


def _counts(conn: Connectivity, reached: dict, bits: dict) -> dict[int, int]:
    """Pods one pod of each pod class (and node) reaches: the bits reached, less that pod itself."""
    return {c: reached[c].bit_count() - bool(reached[c] & bits[c])
            for c in range(len(conn.places)) if conn.places[c].kind in (Kind.PODS, Kind.NODE)}


def reach_counts(conn: Connectivity, ports: PortSet | None, avoid: frozenset[int]) -> dict[int, int]:
    """For every pod class (and node), how many pods one of its pods reaches by chains of any length.

    One pass over the condensation (strongly connected components, in reverse topological order),
    the pods reached held as bit sets: every class at the cost of a few breadth-first searches.  The
    uniform pairs pass through hubs (``Connectivity.relay_graph``), which hold no pod; a place of one
    pod may seem to reach itself through one, and a pod's own bit is never counted.
    """
    g = conn.relay_graph(ports, avoid | conn.ends)
    bits = _pod_bits(conn, g)
    dag = nx.condensation(g)
    pods: dict[int, int] = {}
    for comp, members in dag.nodes(data="members"):
        pods[comp] = 0
        for m in members:
            pods[comp] |= bits[m]
    reached: dict[int, int] = {}
    for comp in reversed(list(nx.topological_sort(dag))):
        members = dag.nodes[comp]["members"]
        cycle = len(members) > 1 or any(g.has_edge(m, m) for m in members)
        own = pods[comp] if cycle else 0
        for nxt in dag.successors(comp):
            own |= reached[nxt] | pods[nxt]
        reached[comp] = own
    mapping = dag.graph["mapping"]
    return _counts(conn, {c: reached[mapping[c]] for c in range(len(conn.places))}, bits)


def reach_counts_within(conn: Connectivity, ports: PortSet | None, avoid: frozenset[int],
                        max_hops: int) -> dict[int, int]:
    """``reach_counts`` by chains of at most ``max_hops`` hops, as ``Connectivity.reach`` counts them.

    Breadth first for every place at once, the pods reached held as bit sets: round k gives each
    place what it reaches in k hops from its successors' round k - 1 (a hub passes its places' on in
    the same hop), so ``max_hops`` rounds over the edges (fewer once nothing changes) rather than a
    search per class.  Every place takes its first hop; a place of ``avoid`` or outside the cluster
    is reached but relays nothing.
    """
    stop = avoid | conn.ends
    g = conn.relay_graph(ports, frozenset())
    bits = _pod_bits(conn, g)
    hubs = [n for n in g if not isinstance(n, int)]
    reached = {n: 0 for n in range(len(conn.places))}
    for _ in range(max_hops):
        gain = {v: bits[v] | reached[v] if v not in stop else bits[v] for v in reached}
        through = {h: _union(gain[w] for w in g.successors(h)) for h in hubs}
        nxt = {u: _union(through[v] if v in through else gain[v] for v in g.successors(u)) for u in reached}
        if nxt == reached:
            break
        reached = nxt
    return _counts(conn, reached, bits)


def _union(bit_sets) -> int:
    out = 0
    for b in bit_sets:
        out |= b
    return out
