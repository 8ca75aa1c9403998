"""The connectivity graph: which endpoint may open a connection to which, on which ports, and chains of them.

A node ("place") is an endpoint class (pods no policy can tell apart: same identity labels and
named ports and, when nodes take part, the same node), a node of the inventory, a range of
addresses outside the cluster that the policies' CIDRs cut apart, or a reserved identity a policy
names as an entity (kube-apiserver, health, ...).  An edge u -> v is a connection that both sides
allow, u's egress and v's ingress (R3.8), with the ports it may use, the rules that decide it and
the ports that only an L7 filter lets through.  A chain of edges is an attack path; what chains
reach is a blast radius.  docs/paths.md says what the graph does not know.

Working on classes keeps 10,000 pods to a few thousand places (docs/benchmarks.md); edges
between two places outside the cluster are left out, since no policy has a say there.
"""
from __future__ import annotations

import enum
import heapq
import ipaddress
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import networkx as nx

from .entities import RESERVED_IDS, reserved_identity, world_labels
from .inventory import Inventory
from .ir import (Action, CIDRPeer, Direction, Endpoint, EndpointKind, FQDNPeer, Identity, IPAddress, IPNetwork, PolicySet,
                 SelectorPeer)
from .portset import PortSet
from .openpairs import OpenPairs, Pool, key_of
from .evaluate import peer_labels
from .reachability import ClassVerdicts, Side, Uniform, classify, open_uniform, possible_ports

ROOTS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
# Entities naming identities that are neither pods, nodes nor world: a place each when a policy names them.
RESERVED_PLACES = tuple(n for n in RESERVED_IDS if n not in ("host", "remote-node", "world", "world-ipv4",
                                                             "world-ipv6"))


class Kind(str, enum.Enum):
    PODS = "pods"
    NODE = "node"
    WORLD = "world"
    RESERVED = "reserved"
    HUB = "hub"  # only in exported graphs: the open pairs drawn through one node (graphexport)

    @property
    def outside(self) -> bool:
        return self in (Kind.WORLD, Kind.RESERVED)


@dataclass(frozen=True)
class Place:
    """One node of the graph; ``members`` are the endpoints it stands for (one for nodes and outside)."""

    id: int
    kind: Kind
    name: str
    members: tuple[Endpoint, ...]

    @property
    def rep(self) -> Endpoint:
        return self.members[0]

    @property
    def namespace(self) -> str:
        return self.rep.namespace


@dataclass(frozen=True)
class Hop:
    """An allowed connection from place ``src`` to place ``dst``: egress and ingress both allow ``ports``."""

    src: int
    dst: int
    ports: PortSet
    l7: PortSet
    egress: Side
    ingress: Side

    def within(self, ports: PortSet | None) -> "Hop":
        """The same hop on the ports an attacker may use only."""
        if ports is None:
            return self
        return Hop(self.src, self.dst, self.ports & ports, self.l7 & ports, self.egress, self.ingress)


Chain = tuple[Hop, ...]


@dataclass(frozen=True)
class Target:
    """What a question names: inventory pods and nodes, networks outside the cluster, reserved identities."""

    text: str
    endpoints: tuple[Endpoint, ...] = ()
    networks: tuple[IPNetwork, ...] = ()
    reserved: tuple[str, ...] = ()


def address_target(text: str, networks: Iterable[IPNetwork], inventory: Inventory) -> Target:
    """Networks a question names; a single address a pod or node holds is that pod or node (as in
    ``query``): it is never outside the cluster, so as a network it would name nothing."""
    endpoints, outside = [], []
    for net in networks:
        held = inventory.holder(net.network_address) if net.num_addresses == 1 else None
        if held is None:
            outside.append(net)
        else:
            endpoints.append(held)
    return Target(text, tuple(dict.fromkeys(endpoints)), tuple(outside))


@dataclass(frozen=True)
class Outside:
    """Addresses outside the cluster that every policy treats alike: ``network`` less its ``holes``."""

    network: IPNetwork
    holes: tuple[IPNetwork, ...]
    endpoint: Endpoint

    def within(self, net: IPNetwork) -> bool:
        """Wholly inside ``net`` (a network the cut was made with: never partly inside)."""
        return self.network.version == net.version and self.network.subnet_of(net)

    def contains(self, ip: IPAddress) -> bool:
        return ip.version == self.network.version and ip in self.network and not any(ip in h for h in self.holes)


# ---------------------------------------------------------------- outside the cluster

def policy_networks(policy: PolicySet) -> set[IPNetwork]:
    """Every network a CIDR peer names, excepts included: where verdicts on outside addresses may change."""
    return {net for r in policy.rules for p in r.peers if isinstance(p, CIDRPeer)
            for net in (p.network,) + p.excepts}


def _free_address(net: IPNetwork, holes: list[IPNetwork], taken: set) -> IPAddress | None:
    """The first address of ``net`` in no hole and held by no pod or node (those are never outside)."""
    at, end = int(net.network_address), int(net.broadcast_address)
    for hole in holes + [None]:
        stop = int(hole.network_address) if hole is not None else end + 1
        while at < stop:
            ip = ipaddress.ip_address(at) if net.version == 4 else ipaddress.IPv6Address(at)
            if ip not in taken:
                return ip
            at += 1
        if hole is not None:
            at = max(at, int(hole.broadcast_address) + 1)
    return None


def _outside_name(net: IPNetwork, holes: list[IPNetwork]) -> str:
    base = {ROOTS[0]: "world-ipv4", ROOTS[1]: "world-ipv6"}.get(net, str(net))
    if not holes:
        return base
    return f"{base} except {', '.join(map(str, holes))}" if len(holes) <= 2 else f"{base} except {len(holes)} prefixes"


def cut_outside(networks: Iterable[IPNetwork], taken: set) -> list[Outside]:
    """The address space cut by ``networks``: one piece per network, less the networks inside it.

    CIDRs nest or are disjoint, so they form a tree; each network less its children is a set of
    addresses that every CIDR peer (and every network a question names) matches all or nothing of.
    """
    nets = sorted(set(networks) | set(ROOTS), key=lambda n: (n.version, int(n.network_address), n.prefixlen))
    children: dict[IPNetwork, list[IPNetwork]] = {n: [] for n in nets}
    stack: list[IPNetwork] = []
    for net in nets:
        while stack and not (stack[-1].version == net.version and net.subnet_of(stack[-1])):
            stack.pop()
        if stack:
            children[stack[-1]].append(net)
        stack.append(net)
    out = []
    for net in nets:
        holes = children[net]
        ip = _free_address(net, holes, taken)
        if ip is not None:
            ident = Identity(RESERVED_IDS["world-ipv4" if ip.version == 4 else "world-ipv6"], world_labels(ip.version))
            out.append(Outside(net, tuple(holes), Endpoint(EndpointKind.EXTERNAL, _outside_name(net, holes), "",
                                                           (ip,), ident)))
    return out


def reserved_named(policy: PolicySet) -> list[str]:
    """Reserved identities a policy names as an entity (kube-apiserver, health, ...), in a stable order."""
    named = {p.name for r in policy.rules for p in r.peers if isinstance(p, SelectorPeer) and p.kind == "entity"}
    return [n for n in RESERVED_PLACES if n in named]


def reserved_endpoint(name: str) -> Endpoint:
    return Endpoint(EndpointKind.EXTERNAL, f"reserved:{name}", "", (), reserved_identity(name))


# ---------------------------------------------------------------- the graph

def _class_name(members: list[Endpoint]) -> str:
    first = members[0].display
    return first if len(members) == 1 else f"{first} (+{len(members) - 1})"


def _join(u: Place, v: Place, egress: Side | None, ingress: Side | None, possible: PortSet | None = None) -> Hop | None:
    if egress is None or ingress is None:
        return None
    ports = egress.ports & ingress.ports & (possible_ports(u.rep, v.rep) if possible is None else possible)
    if not ports:
        return None
    return Hop(u.id, v.id, ports, (egress.l7 | ingress.l7) & ports, egress, ingress)


def _class_hops(verdicts: ClassVerdicts, places: list[Place]) -> tuple[list[Hop], dict[int, Uniform],
                                                                     dict[int, Uniform]]:
    """Hops between classes (pods and outside) that a pair's own rules decide, from each class's sides;
    with the uniform sides of the classes that have one, by direction (``OpenPairs`` decides the
    pairs of two uniform sides that name each other as no exception).

    A default-deny egress without a broad allow reaches only the classes its allow rules name.  A
    uniform egress may reach its exceptions, and the classes whose ingress rules name it: those
    with no uniform ingress (a default-deny of narrow rules), and those whose uniform ingress has
    it as an exception.  Every other pair is ``OpenPairs``'s: an edge each would be classes squared
    in a cluster with few policies, or with an allow-all beside a deny.
    """
    n = len(places)
    egress = [verdicts.sides(c, Direction.EGRESS) for c in range(n)]
    ingress = [verdicts.sides(c, Direction.INGRESS) for c in range(n)]
    out = {u: side for u in range(n) if (side := egress[u].uniform()) is not None}
    into = {w: side for w in range(n) if (side := ingress[w].uniform()) is not None}
    naming: dict[int, set[int]] = {u: set() for u in out}  # uniform source -> ingresses deciding it by rule
    for w in range(n):
        named = into[w].exceptions if w in into else set().union(*(verdicts.peer_classes(r) for r in ingress[w].allows))
        for u in named & out.keys():
            naming[u].add(w)
    hops = []
    for u in range(n):
        candidates = out[u].exceptions | naming[u] if u in out else egress[u].named()
        for w in sorted(candidates):
            if (u == w and (places[u].kind.outside or len(places[u].members) < 2)) \
                    or (places[u].kind.outside and places[w].kind.outside):
                continue  # one endpoint to itself, or two outside the cluster: no policy decides
            e = egress[u].get(w)
            if e is not None and e.ports:
                hop = _join(places[u], places[w], e, ingress[w].get(u))
                if hop is not None:
                    hops.append(hop)
    return hops, out, into


def _with_nodes(verdicts: ClassVerdicts, places: list[Place], classes: list[int], nodes: list[Place],
                sides: dict[int, Uniform], direction: Direction) -> dict[int, Uniform]:
    """Uniform sides once nodes take part: a node that no host policy selects in ``direction`` is open
    toward every peer, and a pod place's uniform side gains as exceptions the nodes its rules do not
    decide as it decides a class (found once per set of rules, a node seen as ``remote-node``), and
    its own node, which it sees as ``host`` and (ingress) always admits (R3.9)."""
    out: dict[int, Uniform] = {}
    every = frozenset(n.id for n in nodes)
    by_name = {n.name: n for n in nodes}
    apart: dict[tuple, frozenset[int]] = {}
    for pid, side in sides.items():
        place = places[pid]
        if place.kind is not Kind.PODS:  # outside: nothing enforces, toward nodes too
            out[pid] = side
            continue
        full = verdicts.sides(classes[pid], direction)
        rules = full.allows + full.denies if full.default_deny else full.denies
        broad = {id(r) for r in side.sides.allows + side.sides.denies}
        key = tuple(map(id, rules)), tuple(sorted(broad))
        if key not in apart:
            apart[key] = every - {n.id for n in nodes if verdicts.fits(rules, broad, n.rep, n.rep.identity.labels)}
        extra = apart[key]
        own = by_name.get(place.rep.node)
        if own is not None:
            host = direction is Direction.EGRESS and verdicts.fits(rules, broad, own.rep,
                                                                   peer_labels(own.rep, place.rep))
            extra = extra - {own.id} if host else extra | {own.id}
        out[pid] = replace(side, exceptions=side.exceptions | extra) if extra else side
    for node in nodes:
        allows, denies, dd = verdicts.evaluator.subject_rules(node.rep, direction)
        if not (allows or denies or dd):
            out[node.id] = open_uniform(verdicts, direction, node.rep)
    return out


def _node_hops(verdicts: ClassVerdicts, nodes: list[Place], others: list[Place], classes: list[int],
               pairs: OpenPairs) -> Iterator[Hop]:
    """Hops to and from nodes that a pair's own rules decide, pair by pair (a node looks different from
    the pods it runs: R3.9); ``classes``: the verdicts' class of each place of ``others``, by place id.
    The pairs of two uniform sides are ``pairs``'s, so a node whose sides are uniform meets only the
    places without a uniform side and those barred from it, not every place."""
    every = others + nodes
    not_out = [p.id for p in every if p.id not in pairs.out]
    not_into = [p.id for p in every if p.id not in pairs.into]

    def hop(u: Place, v: Place) -> Hop | None:
        cu, cv = (None if p.kind is Kind.NODE else classes[p.id] for p in (u, v))
        e = verdicts.endpoint_side(Direction.EGRESS, u.rep, v.rep, cu)
        if not e.ports:
            return None
        possible = pairs.possible(u.id, v.id)
        return _join(u, v, e, verdicts.endpoint_side(Direction.INGRESS, v.rep, u.rep, cv), possible)

    for node in nodes:
        outs = set(not_into) | pairs.barred[node.id] if node.id in pairs.out else set(range(len(every)))
        ins = set(not_out) | pairs.barring.get(node.id, set()) if node.id in pairs.into else set(range(len(every)))
        for o in sorted((outs | ins) - {node.id}):  # in place order, as the graph always listed them
            other = every[o]
            for h in (hop(node, other) if o in outs else None,
                      hop(other, node) if o in ins and other.kind is not Kind.NODE else None):
                if h is not None:
                    yield h


def _by_node(places: list[Place]) -> list[list[Place]]:
    """Each class parted by the node its pods run on (numbered anew, in order); others stay whole."""
    out: list[list[Place]] = []
    at = 0
    for place in places:
        groups: dict[str | None, list[Endpoint]] = {}
        for ep in place.members:
            groups.setdefault(ep.node if place.kind is Kind.PODS else None, []).append(ep)
        out.append([Place(at + i, place.kind, _class_name(m) if place.kind is Kind.PODS else place.name, tuple(m))
                    for i, m in enumerate(groups.values())])
        at += len(groups)
    return out


def _parted(sides: dict[int, Uniform], parts: list[list[Place]]) -> dict[int, Uniform]:
    """Uniform sides by class as uniform sides by place, once classes part by node: every part of a
    class has its side, and an exception class stands for all its parts."""
    mapped: dict[frozenset[int], frozenset[int]] = {}
    out = {}
    for c, side in sides.items():
        if side.exceptions not in mapped:
            mapped[side.exceptions] = frozenset(p.id for x in side.exceptions for p in parts[x])
        for p in parts[c]:
            out[p.id] = replace(side, exceptions=mapped[side.exceptions])
    return out


class Connectivity:
    """The graph and the questions asked of it: ``graph`` (networkx: node attribute ``place``, edge
    attribute ``hop``) holds the hops some rule decides, ``open`` the pairs both sides' defaults decide
    (``edge`` is either); the searches walk both, so answers are those of an edge per pair."""

    def __init__(self, places: list[Place], hops: Iterable[Hop], outside: list[Outside], notes: list[str],
                 open_pairs: OpenPairs):
        self.places = places
        self.open = open_pairs
        self.outside = outside
        self.notes = notes
        self.graph = nx.DiGraph()
        for p in places:
            self.graph.add_node(p.id, place=p)
        for h in hops:
            self.graph.add_edge(h.src, h.dst, hop=h)
        # Keyed by kind and name: a node may be called world-ipv4, like the Internet's place.
        self._of = {(ep.kind, ep.display): p.id for p in places for ep in p.members}
        # Outside addresses start and end chains but never relay one: the policies say nothing
        # about a host outside the cluster, and whoever holds one is asked about as `world`.
        self.ends = frozenset(p.id for p in places if p.kind.outside)

    # ---- where endpoints are

    def place_of(self, ep: Endpoint) -> int:
        """The place of an inventory endpoint, an outside address or a reserved identity."""
        if ep.kind is EndpointKind.EXTERNAL and ep.ips:
            return self.place_in(ep.ips[0])
        return self._of[(ep.kind, ep.display)]

    def place_in(self, ip: IPAddress) -> int:
        for piece in self.outside:
            if piece.contains(ip):
                return self.place_of_outside(piece)
        raise KeyError(str(ip))

    def places_within(self, net: IPNetwork) -> set[int]:
        return {self.place_of_outside(o) for o in self.outside if o.within(net)}

    def place_of_outside(self, piece: Outside) -> int:
        return self._of[(EndpointKind.EXTERNAL, piece.endpoint.display)]

    def places_of(self, target: Target) -> set[int]:
        """The places a target covers (the graph was built with its networks and reserved names)."""
        out = {self.place_of(ep) for ep in target.endpoints}
        out |= {p for net in target.networks for p in self.places_within(net)}
        return out | {self._of[(EndpointKind.EXTERNAL, f"reserved:{name}")] for name in target.reserved}

    def pinned(self, src: Target, dst: Target) -> frozenset[int]:
        """Places holding exactly one pod of each target, the same pod (see ``chains``)."""
        def pods(t: Target) -> dict[int, set[str]]:
            out: dict[int, set[str]] = {}
            for ep in t.endpoints:
                out.setdefault(self.place_of(ep), set()).add(ep.display)
            return out
        a, b = pods(src), pods(dst)
        return frozenset(p for p, names in a.items() if len(names) == 1 and b.get(p) == names)

    def nodes(self) -> set[int]:
        return {p.id for p in self.places if p.kind is Kind.NODE}

    # ---- edges

    def edge(self, u: int, v: int) -> Hop | None:
        """The hop from u to v, ruled or left to the defaults, or None."""
        if self.graph.has_edge(u, v):
            return self.graph[u][v]["hop"]
        pair = self.open.pair(u, v)
        return None if pair is None else Hop(u, v, pair.ports, pair.l7, pair.egress, pair.ingress)

    def hop(self, u: int, v: int, ports: PortSet | None = None) -> Hop:
        hop = self.edge(u, v)
        assert hop is not None, (u, v)
        return hop.within(ports)

    def ruled(self, ports: PortSet | None) -> nx.DiGraph:
        """The hops some rule decides, or a view of those that allow one of ``ports``."""
        if ports is None:
            return self.graph
        return nx.subgraph_view(self.graph, filter_edge=lambda u, v: bool(self.graph[u][v]["hop"].ports & ports))

    def edges(self, ports: PortSet | None = None) -> Iterator[tuple[int, int]]:
        """Every edge usable on ``ports``, one pair at a time: classes squared in an open cluster; the
        searches never call it (tests and ``graph --open-edges expand`` do)."""
        yield from self.ruled(ports).edges
        for u in sorted(self.open.out):
            yield from ((u, w) for w in self.open.pool(ports).take(u))

    def relay_graph(self, ports: PortSet | None, stop: frozenset[int]) -> nx.DiGraph:
        """Every place, the edges usable on ``ports`` that leave places not in ``stop`` (those that
        relay), the uniform pairs through hubs (``OpenPairs.hubs``): what reaches what, in linear size."""
        g = nx.DiGraph()
        g.add_nodes_from(range(len(self.places)))
        ruled = self.ruled(ports)
        g.add_edges_from(e for e in ruled.edges if e[0] not in stop)
        g.add_edges_from(self.open.hubs(ports, (p for p in range(len(self.places)) if p not in stop), ruled.has_edge))
        return g

    def _expand(self, u: int, ports: PortSet | None, pool: Pool, seen: set[int],
                skip: frozenset[int] | set[int] = frozenset()) -> list[int]:
        """u's successors on ``ports`` not in ``seen`` nor ``skip``: they join ``seen`` and leave the pool."""
        out = []
        for v in self.graph.successors(u):
            if v not in seen and v not in skip and (ports is None or self.graph[u][v]["hop"].ports & ports):
                seen.add(v)
                pool.discard(v)
                out.append(v)
        taken = pool.take(u, skip)  # the pool holds no place of seen
        seen.update(taken)
        return out + taken

    # ---- questions

    def chains(self, srcs: set[int], dsts: set[int], k: int = 1, max_hops: int | None = None,
               ports: PortSet | None = None, avoid: frozenset[int] = frozenset(),
               pinned: frozenset[int] = frozenset()) -> list[Chain]:
        """The ``k`` shortest chains of at least one hop from a place of ``srcs`` to one of ``dsts``,
        passing through no place of ``avoid`` nor outside the cluster (those only start or end a chain).

        ``pinned``: places whose one source pod is also their one destination pod: a chain that
        starts there never ends there (that is the pod coming back to itself, or reaching a replica
        that is no destination), though chains from other sources may end there.
        Chains are simple (no place twice after the first); the first hop leaves the first source (in
        place order) that has it.
        """
        groups = [(srcs - pinned, dsts)] + [({p}, dsts - {p}) for p in sorted(srcs & pinned)]
        search = [_Search(self, s, d, ports, avoid | self.ends | self.lone(s), pinned, max_hops)
                  for s, d in groups if s and d]
        out: list[Chain] = []
        for nodes in heapq.merge(*(_yen(s) for s in search), key=len):
            if max_hops is not None and len(nodes) - 1 > max_hops or len(out) == k:
                break
            out.append(tuple(self.hop(a, b, ports) for a, b in zip(nodes, nodes[1:])))
        return out

    def lone(self, srcs: set[int]) -> frozenset[int]:
        """``srcs`` when it is one place of one pod: a chain may end there but never pass through it (that
        is the pod coming back to itself; a place of several pods may be passed: another replica)."""
        if len(srcs) == 1 and len(self.places[next(iter(srcs))].members) == 1:
            return frozenset(srcs)
        return frozenset()

    def reach(self, srcs: set[int], max_hops: int | None = None, ports: PortSet | None = None,
              avoid: frozenset[int] = frozenset()) -> dict[int, tuple[int, Hop]]:
        """Every place a chain of 1..``max_hops`` hops from ``srcs`` reaches: its distance and the hop
        that first reaches it (breadth first, in place order).  A source is in it only when a chain
        leads back to it (another pod of its class); a place of ``avoid`` or outside the cluster is
        reached but not left."""
        stop = avoid | self.ends
        found: dict[int, tuple[int, Hop]] = {}
        seen: set[int] = set()
        pool = self.open.pool(ports)
        frontier, hops = sorted(srcs), 0
        while frontier and (max_hops is None or hops < max_hops):
            hops += 1
            nxt = []
            for u in frontier:
                for v in self._expand(u, ports, pool, seen):
                    found[v] = (hops, self.hop(u, v, ports))
                    if v not in stop:
                        nxt.append(v)
            frontier = nxt
        return found

    @staticmethod
    def chain_to(found: dict[int, tuple[int, Hop]], place: int) -> Chain:
        """The breadth-first chain that reaches ``place`` (found by ``reach``)."""
        out = []
        distance, hop = found[place]
        while True:
            out.append(hop)
            distance -= 1
            if distance == 0:
                return tuple(reversed(out))
            hop = found[hop.src][1]


def fqdn_caveat(policy: PolicySet) -> str:
    """toFQDNs peers match nothing statically, so their hops are missing from every answer: say so
    wherever the answer is given (an exfiltration gate would otherwise pass with no caveat)."""
    rules = [r for r in policy.rules if r.action is Action.ALLOW and any(isinstance(p, FQDNPeer) for p in r.peers)]
    if not rules:
        return ""
    return (f"{len(rules)} rule{'s' if len(rules) > 1 else ''} allow toFQDNs peers, which the graph leaves out "
            "(addresses learned from DNS are unknown statically): chains to or through them are not counted")


SOURCE = -1  # the search's virtual start: its edges are the sources' first hops


@dataclass(frozen=True)
class _Search:
    """Shortest chains from ``srcs`` to ``dsts`` as paths ``[SOURCE, v1, .., vm]`` (vm in ``dsts``):
    SOURCE -> v for every first hop of a source (but a pinned source to itself), then the edges of
    places not in ``stop``.  Paths are simple; a path ends with the virtual edge vm -> end."""

    conn: Connectivity
    srcs: set[int]
    dsts: set[int]
    ports: PortSet | None
    stop: frozenset[int]
    pinned: frozenset[int]
    max_hops: int | None

    def first(self, v: int) -> int:
        """The first source (in place order) whose hop reaches v."""
        return next(s for s in sorted(self.srcs) if not (v == s and s in self.pinned)
                    and (hop := self.conn.edge(s, v)) is not None and (self.ports is None or hop.ports & self.ports))

    def shortest(self, root: list[int], banned: set[int]) -> list[int] | None:
        """The shortest path that starts with ``root`` (its places not visited again) and leaves its last
        node by no edge to ``banned`` (END: the last node may not end the path), breadth first."""
        conn, spur = self.conn, root[-1]
        if spur != SOURCE and spur in self.dsts and END not in banned:
            return root
        seen = set(root[1:])
        pool = conn.open.pool(self.ports)
        for v in seen:
            pool.discard(v)
        parent: dict[int, int] = {}
        depth = len(root) - 1
        if spur == SOURCE:
            level = []
            for s in sorted(self.srcs):
                for v in conn._expand(s, self.ports, pool, seen, banned | ({s} if s in self.pinned else set())):
                    parent[v] = SOURCE
                    level.append(v)
        elif spur in self.stop:
            return None
        else:
            level = conn._expand(spur, self.ports, pool, seen, banned)
            parent.update((v, spur) for v in level)
        while level:
            depth += 1
            for v in level:
                if v in self.dsts:
                    path = [v]
                    while path[-1] != spur:
                        path.append(parent[path[-1]])
                    return root[:-1] + path[::-1]
            if self.max_hops is not None and depth >= self.max_hops:
                return None
            nxt = []
            for u in level:
                if u not in self.stop:
                    for v in conn._expand(u, self.ports, pool, seen):
                        parent[v] = u
                        nxt.append(v)
            level = nxt
        return None


END = -2  # the virtual edge from a destination that ends a path


def _yen(search: _Search) -> Iterator[list[int]]:
    """Simple chains shortest first (Yen's algorithm over ``search.shortest``), as place lists whose
    first place is the source that makes the first hop."""
    best = search.shortest([SOURCE], set())
    if best is None:
        return
    found, seen = [best], {tuple(best)}
    heap: list[tuple[int, int, list[int]]] = []
    while True:
        yield [search.first(found[-1][1])] + found[-1][1:]
        last = found[-1]
        for j in range(len(last)):
            root = last[:j + 1]
            banned = {p[j + 1] if len(p) > j + 1 else END for p in found if p[:j + 1] == root}
            path = search.shortest(root, banned)
            if path is not None and tuple(path) not in seen:
                seen.add(tuple(path))
                heapq.heappush(heap, (len(path), len(seen), path))
        if not heap:
            return
        found.append(heapq.heappop(heap)[2])


def build(policy: PolicySet, inventory: Inventory, nodes: bool = True, targets: Iterable[Target] = ()) -> Connectivity:
    """The graph of ``policy`` over the inventory's pods (and nodes, unless ``nodes`` is false), the
    outside addresses cut by the policy's CIDRs and the targets' networks, and the reserved
    identities the policy or a target names."""
    targets = list(targets)
    networks = {net for t in targets for net in t.networks}
    reserved = set(reserved_named(policy)) | {n for t in targets for n in t.reserved}
    pods = list(inventory.pods)
    node_eps = list(inventory.nodes) if nodes else []
    cls, reps = classify(pods)
    members: list[list[Endpoint]] = [[] for _ in reps]
    for ep, c in zip(pods, cls):
        members[c].append(ep)
    taken = {ip for ep in inventory.endpoints for ip in ep.ips}
    outside = cut_outside(policy_networks(policy) | networks, taken)
    places = [Place(c, Kind.PODS, _class_name(m), tuple(m)) for c, m in enumerate(members)]
    places += [Place(len(places) + i, Kind.WORLD, o.endpoint.name, (o.endpoint,)) for i, o in enumerate(outside)]
    places += [Place(len(places) + i, Kind.RESERVED, f"reserved:{n}", (reserved_endpoint(n),))
               for i, n in enumerate(n for n in RESERVED_PLACES if n in reserved)]
    verdicts = ClassVerdicts(policy, [p.rep for p in places])
    hops, out, into = _class_hops(verdicts, places)
    node_places: list[Place] = []
    if node_eps:  # a node is host to its own pods (R3.9): classes part by node, and take their class's hops
        parts = _by_node(places)
        hops = [replace(h, src=u.id, dst=w.id) for h in hops for u in parts[h.src] for w in parts[h.dst]
                if u is not w or len(u.members) > 1]
        places = [p for part in parts for p in part]
        out, into = (_parted(side, parts) for side in (out, into))
        classes = [c for c, part in enumerate(parts) for _ in part]
        node_places = [Place(len(places) + i, Kind.NODE, ep.name, (ep,)) for i, ep in enumerate(node_eps)]
        out, into = (_with_nodes(verdicts, places, classes, node_places, side, d)
                     for side, d in ((out, Direction.EGRESS), (into, Direction.INGRESS)))
    notes = [fqdn] if (fqdn := fqdn_caveat(policy)) else []
    named = {p.name for r in policy.rules for p in r.peers if isinstance(p, SelectorPeer) and p.kind == "entity"}
    if not node_eps and named & {"host", "remote-node"}:
        notes.append("policies name the host or remote-node entity, but no node takes part "
                     + ("(--no-nodes)" if inventory.nodes else "(the inventory lists no Node objects)"))
    if "ingress" in named:  # a proxy, yet a place that never relays: chains through it are missing
        notes.append("policies admit the ingress entity (Cilium's Ingress/Gateway proxy, which forwards "
                     "requests from outside the cluster); chains never pass through it, so a chain from world "
                     "through the proxy is not counted: ask about `ingress` itself (paths ingress DST)")
    every = places + node_places
    pairs = OpenPairs(out, into, tuple(key_of(p.rep, p.kind.outside) for p in every), tuple(p.rep for p in every),
                      frozenset(p.id for p in every if len(p.members) > 1))
    if node_places:
        hops += _node_hops(verdicts, node_places, places, classes, pairs)
    return Connectivity(every, hops, outside, notes, pairs)
