"""Lowering: IR (PolicySet) × Inventory → the datapath's tables, as pure functions.

The tables answer the evaluator's question with map look-ups:

* **ipcache** (LPM trie): address → identity.  Pod and node addresses are
  host routes; every CIDR and except prefix used by any rule gets its own
  CIDR identity (from 1<<24, numbered in address order); 0.0.0.0/0 and ::/0
  are world-ipv4 and world-ipv6.  A longest-prefix match lands an address in
  the *region* of its most specific prefix.  Prefixes nest or are disjoint,
  so if a rule's CIDR or one of its excepts contains any address of a region
  it contains the region's whole prefix: every region is uniformly inside or
  outside every ``CIDR except ...`` peer, and the identity stands for it exactly.
* **endpoints** (hash): local address → endpoint id, identity, policy id and
  default-deny flags.  Pods with equal labels and named ports share a policy id.
* **policy** (LPM trie on (policy id, peer, direction, protocol, port bits),
  or a hash with explicit fall-back levels when no rule uses a port range):
  the merged verdict of all rules per port block.  Verdicts are merged at
  compile time (deny before allow), so the most specific entry is the answer;
  the only run-time combination is between the peer's own entry and the
  any-peer entry (rules whose peer is the wildcard selector), where deny wins.

Named ports are resolved at the destination: the subject's own ports for
ingress, the peer identity's ports for egress.
"""
from __future__ import annotations

import heapq
import ipaddress
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from .entities import FIRST_CIDR_ID, FIRST_CLUSTER_ID, RESERVED_IDS, reserved_label, world_labels
from .evaluate import Evaluator, LabelIndex, subject_labels
from .inventory import Inventory
from .ir import (Action, CIDRPeer, Direction, Endpoint, EndpointKind, IPNetwork,
                 NamedPort, PolicySet, PortMatch, Protocol, Rule, SelectorPeer,
                 SubjectKind, pending_scope)
from .prefixes import PrefixIndex, prefix_blocks

DIR_CODE = {Direction.INGRESS: 1, Direction.EGRESS: 2}
ACTION_CODE = {Action.ALLOW: 1, Action.DENY: 2}
FLAG_L7 = 1                  # policy value / event flag: the allow carries L7 rules, enforced as L4 only
EP_DEFAULT_DENY = {Direction.INGRESS: 1, Direction.EGRESS: 2}
IPCACHE_LOCAL = 1            # ipcache flag the loader sets: a pod bound on this node (xdp_node anti-spoofing)
ANY_PEER = 0
# The addresses kube-proxy translates (ClusterIPs, external and load-balancer IPs): policy sees the
# backend, never these (R7.8), so they get a policyc-only identity no rule matches, not world's.
SERVICE_ID = 255
HOST_ID = RESERVED_IDS["host"]
REMOTE_NODE_ID = RESERVED_IDS["remote-node"]
# Exact-mode fall-back levels (hash policy map): the datapath tries them in this order.
LEVEL_PORT, LEVEL_PROTO, LEVEL_ANY = 0, 1, 2


@dataclass(frozen=True)
class IPCacheEntry:
    network: IPNetwork
    identity: int
    source: str  # what put it there: a pod, a node, a CIDR, world


@dataclass(frozen=True)
class EndpointEntry:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    endpoint_id: int
    identity: int
    policy_id: int
    default_deny: tuple[Direction, ...]
    name: str


@dataclass(frozen=True)
class Verdict:
    """The merged answer of every rule matching one key: deny wins, lowest rule number decides."""

    action: Action
    rule: int            # 1-based index into PolicySet.rules
    l7: bool = False     # every matching allow carries L7 rules (R9.3)


@dataclass(frozen=True)
class PolicyEntry:
    policy_id: int
    peer: int                 # identity, or ANY_PEER
    direction: Direction
    protocol: int | None      # None: every IP protocol (L3-only rules)
    port: int                 # first port of the block (ICMP: type)
    port_bits: int            # how many leading bits of the port are fixed: 16 one port, 0 every port
    verdict: Verdict


@dataclass(frozen=True)
class PeerIdentity:
    """One identity as a policy peer: its labels, its ipcache region (CIDR/world), its named ports."""

    id: int
    labels: frozenset
    region: IPNetwork | None = None
    ports: tuple[NamedPort, ...] = ()
    pending: str | None = None  # a pod whose labels are not known yet (ir.pending_scope)


@dataclass(frozen=True)
class Features:
    """What the policy set needs compiled in; the manifest lists these."""

    ipv6: bool
    port_ranges: bool
    deny: bool
    icmp: bool
    l7: bool
    any_peer: bool
    cidr: bool
    services: bool  # Service addresses in the ipcache: from_pod defers to them, nf_node decides after the DNAT

    def as_dict(self) -> dict[str, bool]:
        return dict(sorted(vars(self).items()))


@dataclass(frozen=True)
class Datapath:
    ipcache: tuple[IPCacheEntry, ...]
    endpoints: tuple[EndpointEntry, ...]
    policy: tuple[PolicyEntry, ...]
    identities: tuple[PeerIdentity, ...]
    rules: tuple[Rule, ...]
    features: Features
    warnings: tuple[str, ...]


# ---- identities and the ipcache ----

def used_prefixes(policy: PolicySet) -> list[IPNetwork]:
    """Every CIDR and except prefix any rule names, in address order."""
    nets = {n for r in policy.rules for p in r.peers if isinstance(p, CIDRPeer) for n in (p.network, *p.excepts)}
    return sorted(nets, key=network_order)


def network_order(net: IPNetwork) -> tuple[int, int, int]:
    """Address order as integers: comparing ``ipaddress`` objects is slow when there are 100,000."""
    return net.version, int(net.network_address), net.prefixlen


def wants_ipv6(policy: PolicySet, inventory: Inventory) -> bool:
    return (any(ip.version == 6 for ep in inventory.endpoints for ip in ep.ips)
            or any(p.network.version == 6 for r in policy.rules for p in r.peers if isinstance(p, CIDRPeer)))


def pods_by_identity(inventory: Inventory) -> dict[int, list[Endpoint]]:
    """Pods grouped by identity number, built once: per-identity scans of every pod are quadratic."""
    out: dict[int, list[Endpoint]] = {}
    for ep in inventory.pods:
        out.setdefault(ep.identity.id, []).append(ep)
    return out


def _union_ports(eps: Iterable[Endpoint]) -> tuple[NamedPort, ...]:
    return tuple(sorted({np for ep in eps for np in ep.ports}, key=lambda n: (n.name, n.protocol, n.port)))


def peer_identities(policy: PolicySet, inventory: Inventory, ipv6: bool) -> tuple[PeerIdentity, ...]:
    """Every identity the datapath can see as a peer, with what the evaluator would see for it."""
    out: dict[int, PeerIdentity] = {}
    pods = pods_by_identity(inventory)
    for ident in inventory.identities:
        if ident.id >= FIRST_CLUSTER_ID:  # pods; nodes share remote-node below
            out[ident.id] = PeerIdentity(ident.id, ident.labels, None, _union_ports(pods.get(ident.id, ())),
                                         pending_scope(ident.labels))
    nodes = inventory.nodes
    node_lbls = nodes[0].identity.labels if nodes else frozenset({reserved_label("remote-node")})
    out[REMOTE_NODE_ID] = PeerIdentity(REMOTE_NODE_ID, node_lbls)
    # R3.9/R6.2: the node a pod runs on is "host"; the loader maps the local node's addresses to it.
    out[HOST_ID] = PeerIdentity(HOST_ID, frozenset({reserved_label("host")}))
    out[RESERVED_IDS["world-ipv4"]] = PeerIdentity(RESERVED_IDS["world-ipv4"], world_labels(4),
                                                   ipaddress.ip_network("0.0.0.0/0"))
    if ipv6:
        out[RESERVED_IDS["world-ipv6"]] = PeerIdentity(RESERVED_IDS["world-ipv6"], world_labels(6),
                                                       ipaddress.ip_network("::/0"))
    host_routes = {ipaddress.ip_network(ip) for ep in inventory.endpoints for ip in ep.ips}
    n = 0
    for net in used_prefixes(policy):
        if net.prefixlen == 0 or net in host_routes:
            continue  # /0 is world; an endpoint address keeps its own identity (R7.1)
        out[FIRST_CIDR_ID + n] = PeerIdentity(FIRST_CIDR_ID + n, world_labels(net.version), net)
        n += 1
    return tuple(out[k] for k in sorted(out))


def ipcache_entries(inventory: Inventory, identities: tuple[PeerIdentity, ...]) -> tuple[IPCacheEntry, ...]:
    entries = [IPCacheEntry(ipaddress.ip_network(ip), ep.identity.id if ep.kind is EndpointKind.POD else REMOTE_NODE_ID,
                            f"{ep.kind.value} {ep.display}")
               for ep in inventory.endpoints if ep.kind is not EndpointKind.EXTERNAL for ip in ep.ips]
    entries += [IPCacheEntry(i.region, i.id, "world" if i.region.prefixlen == 0 else "cidr")
                for i in identities if i.region is not None]
    held = {ip for ep in inventory.endpoints for ip in ep.ips}  # an address a node holds stays the node's
    entries += [IPCacheEntry(ipaddress.ip_network(ip), SERVICE_ID, f"service {s.display}")
                for s in inventory.services for ip in dict.fromkeys(s.frontends) if ip not in held]
    return tuple(sorted(entries, key=lambda e: network_order(e.network)))


class PeerIndex:
    """Which identities each peer of a rule matches, found through indexes, kept per distinct peer.

    Selectors go through a label index over the identities' labels, CIDR peers through a prefix index
    over their regions: a CIDR peer matches the regions inside its CIDR and inside none of its excepts,
    which is exact for whole regions (see the module doc).  The cost is the size of the answers, never
    peers × identities; one lowering shares one index, and each distinct peer is looked up once.

    Pending identities (labels not known yet) stay out of the label index: whether a rule's peer matches
    one depends on the rule's action (an allow must match whatever the labels turn out to be, a deny
    may), so ``rule`` tests them one by one (there are a few per namespace at most).
    """

    def __init__(self, identities: tuple[PeerIdentity, ...], universe: LabelIndex | None = None):
        """``universe``: a label index over (at least) every known identity's labels, kept by the caller
        across many indexes (the agent's); without it, one is built over these identities."""
        self.identities = identities
        self._known = [n for n, i in enumerate(identities) if not i.pending]
        self._pending = [n for n, i in enumerate(identities) if i.pending]
        if universe is None:
            self._labels = LabelIndex([identities[n].labels for n in self._known])
            self._at: list | None = None  # label index position -> identity positions (None: _known's)
        else:
            self._labels = universe
            where: dict[frozenset, list[int]] = {}
            for n in self._known:
                where.setdefault(identities[n].labels, []).append(n)
            self._at = [where.get(labels, ()) for labels in universe.label_sets]
        self._regions = PrefixIndex((i.region, n) for n, i in enumerate(identities) if i.region is not None)
        self._peers: dict = {}
        self._rules: dict[int, frozenset[int]] = {}

    def _match(self, p) -> frozenset[int]:
        if isinstance(p, SelectorPeer):
            if self._at is None:
                return frozenset(self._known[k] for s in p.selectors for k in self._labels.matching(s))
            return frozenset(n for s in p.selectors for k in self._labels.matching(s) for n in self._at[k])
        if isinstance(p, CIDRPeer):
            out = set(self._regions.within(p.network))
            for ex in p.excepts:
                out.difference_update(self._regions.within(ex))
            return frozenset(out)
        return frozenset()  # FQDN peers match nothing statically (R10.2c)

    def peer(self, p) -> frozenset[int]:
        """Positions in ``identities`` of the identities with known labels that peer ``p`` matches."""
        hit = self._peers.get(p)
        if hit is None:
            hit = self._peers[p] = self._match(p)
        return hit

    def rule(self, rule: Rule) -> frozenset[int]:
        """Positions of the identities some peer of ``rule`` matches."""
        hit = self._rules.get(id(rule))
        if hit is None:
            possibly = rule.action is Action.DENY
            pending = {n for n in self._pending if any(pending_peer_matches(p, self.identities[n], possibly)
                                                      for p in rule.peers)}
            hit = self._rules[id(rule)] = frozenset().union(pending, *map(self.peer, rule.peers))
        return hit


def pending_peer_matches(p, peer: PeerIdentity, possibly: bool) -> bool:
    """Whether rule peer ``p`` matches a pending identity: for sure, or (``possibly``, a deny's) maybe
    (evaluate.peer_matches).  A pending pod has no CIDR region and no name, so only selectors can."""
    return isinstance(p, SelectorPeer) and any(s.bounds(peer.labels, peer.pending)[possibly] for s in p.selectors)


def is_any_peer(rule: Rule) -> bool:
    """A rule whose peer is the empty selector matches every identity, present and future."""
    return any(isinstance(p, SelectorPeer) and any(s.is_wildcard for s in p.selectors) for p in rule.peers)


# ---- port items and merged verdicts ----

@dataclass(frozen=True)
class Item:
    """One rule's contribution for one peer: (protocol, port range) → action."""

    protocol: int | None
    first: int
    last: int
    action: Action
    rule: int
    l7: bool


def resolve_port(pm: PortMatch, dst_ports: tuple[NamedPort, ...] | None,
                 action: Action = Action.ALLOW) -> list[tuple[int | None, int, int]]:
    """(protocol, first, last) triples; a named port becomes the destination's numbers (R8.4).

    ``dst_ports`` None: a pending destination, whose named ports are unknown: an allow resolves to no
    port, a deny to every port of its protocol (evaluate.port_matches)."""
    if pm.name is not None and dst_ports is None:
        if action is Action.ALLOW:
            return []
        return [(None, 0, 65535)] if pm.protocol is Protocol.ANY else [(int(pm.protocol), 0, 65535)]
    if pm.name is not None:
        return [(int(np.protocol), np.port, np.port) for np in dst_ports
                if np.name == pm.name and (pm.protocol is Protocol.ANY or np.protocol is pm.protocol)]
    if pm.protocol is Protocol.ANY:
        if (pm.first, pm.last) != (0, 65535):
            raise ValueError(f"L3-only port match with a port range {pm}: the frontend should expand it")
        return [(None, 0, 65535)]
    return [(int(pm.protocol), pm.first, pm.last)]


def items_for(rules: Iterable[tuple[int, Rule]], dst_ports: tuple[NamedPort, ...] | None) -> list[Item]:
    return [Item(proto, lo, hi, r.action, num, pm.l7 is not None)
            for num, r in rules for pm in r.ports for proto, lo, hi in resolve_port(pm, dst_ports, r.action)]


def merge(items: Iterable[Item]) -> Verdict | None:
    """The evaluator's order: any deny drops; else any allow allows; L7 only if every allow has it."""
    items = list(items)
    denies = [i.rule for i in items if i.action is Action.DENY]
    if denies:
        return Verdict(Action.DENY, min(denies))
    allows = [i for i in items if i.action is Action.ALLOW]
    if not allows:
        return None
    return Verdict(Action.ALLOW, min(i.rule for i in allows), all(i.l7 for i in allows))


class Covering:
    """The items covering one port during a sweep, so that their merged verdict costs a heap look-up.

    ``merge`` over the covering items of every elementary interval would cost intervals × items
    (quadratic in the ports of one rule); here each item enters and leaves once.
    """

    def __init__(self, items: Iterable[Item] = ()):
        self._heaps: dict[Action, list[int]] = {Action.DENY: [], Action.ALLOW: []}
        self._gone: dict[Action, Counter] = {Action.DENY: Counter(), Action.ALLOW: Counter()}
        self._size = {Action.DENY: 0, Action.ALLOW: 0}
        self._plain = 0  # allows without L7
        for i in items:
            self.add(i)

    def add(self, i: Item) -> None:
        heapq.heappush(self._heaps[i.action], i.rule)
        self._size[i.action] += 1
        self._plain += i.action is Action.ALLOW and not i.l7

    def remove(self, i: Item) -> None:
        self._gone[i.action][i.rule] += 1  # dropped from the heap when it reaches the top
        self._size[i.action] -= 1
        self._plain -= i.action is Action.ALLOW and not i.l7

    def _first(self, action: Action) -> int:
        heap, gone = self._heaps[action], self._gone[action]
        while gone[heap[0]]:
            gone[heap[0]] -= 1
            heapq.heappop(heap)
        return heap[0]

    def verdict(self) -> Verdict | None:
        """``merge`` of the covering items."""
        if self._size[Action.DENY]:
            return Verdict(Action.DENY, self._first(Action.DENY))
        if self._size[Action.ALLOW]:
            return Verdict(Action.ALLOW, self._first(Action.ALLOW), self._plain == 0)
        return None


def lpm_blocks(own: list[Item], common: list[Item]) -> list[tuple[int, int, Verdict]]:
    """Port blocks for one protocol in LPM mode; ``common`` (L3-only items) hold at every port.

    A sweep over the cuts of the items' ranges: each elementary interval some item of ``own`` covers
    gets the merged verdict, and runs of equal verdicts become aligned prefix blocks.
    """
    starts: dict[int, list[Item]] = {}
    ends: dict[int, list[Item]] = {}
    for i in own:
        starts.setdefault(i.first, []).append(i)
        ends.setdefault(i.last + 1, []).append(i)
    cuts = sorted({0, 65536} | starts.keys() | ends.keys())
    cover, active, runs = Covering(common), 0, []
    for a, nxt in zip(cuts, cuts[1:]):
        for i in ends.get(a, ()):
            cover.remove(i)
        for i in starts.get(a, ()):
            cover.add(i)
        active += len(starts.get(a, ())) - len(ends.get(a, ()))
        if not active:
            continue  # no own item here: the L3-only entry answers
        v = cover.verdict()
        if runs and runs[-1][1] + 1 == a and runs[-1][2] == v:
            runs[-1][1] = nxt - 1
        else:
            runs.append([a, nxt - 1, v])
    return [(start, bits, v) for a, b, v in runs if v is not None for start, bits in prefix_blocks(a, b)]


def exact_blocks(own: list[Item], common: list[Item]) -> list[tuple[int, int, Verdict]]:
    """Port blocks in exact mode: single ports plus one every-port entry (no ranges exist)."""
    full = [i for i in own if (i.first, i.last) == (0, 65535)]
    singles: dict[int, list[Item]] = {}
    for i in own:
        if i.first == i.last:
            singles.setdefault(i.first, []).append(i)
    cover = Covering(full + common)
    out = [(0, 0, cover.verdict())] if full else []
    for port in sorted(singles):
        for i in singles[port]:
            cover.add(i)
        out.append((port, 16, cover.verdict()))
        for i in singles[port]:
            cover.remove(i)
    return [(p, bits, v) for p, bits, v in out if v is not None]


def verdict_blocks(items: list[Item], port_lpm: bool) -> list[tuple[int | None, int, int, Verdict]]:
    """(protocol, port, port bits, verdict) for one peer: one per protocol port block, one L3-only fall-back."""
    common = [i for i in items if i.protocol is None]
    any_verdict = merge(common)
    out = [] if any_verdict is None else [(None, 0, 0, any_verdict)]
    blocks = lpm_blocks if port_lpm else exact_blocks
    by_proto: dict[int, list[Item]] = {}
    for i in items:
        if i.protocol is not None:
            by_proto.setdefault(i.protocol, []).append(i)
    for proto in sorted(by_proto):
        out += [(proto, port, bits, v) for port, bits, v in blocks(by_proto[proto], common)]
    return out


def peer_entries(policy_id: int, peer: int, direction: Direction,
                 blocks: list[tuple[int | None, int, int, Verdict]]) -> list[PolicyEntry]:
    return [PolicyEntry(policy_id, peer, direction, proto, port, bits, v) for proto, port, bits, v in blocks]


# ---- subjects ----

def policy_classes(inventory: Inventory) -> list[tuple[int, Endpoint, tuple[Endpoint, ...]]]:
    """(policy id, representative, members): pods with equal labels and named ports share policy."""
    classes: dict[tuple, list[Endpoint]] = {}
    for ep in inventory.pods:
        classes.setdefault((subject_labels(ep), ep.ports), []).append(ep)
    return [(n + 1, eps[0], tuple(eps)) for n, eps in enumerate(classes.values())]


def subject_entries(evaluator: Evaluator, policy_id: int, subject: Endpoint,
                    direction: Direction, peers: PeerIndex, port_lpm: bool) -> list[PolicyEntry]:
    """One policy class's entries in one direction, against the identities of ``peers`` (one index is
    shared by the calls of one lowering; a run-time relabel indexes only the identities it needs)."""
    allows, denies, _ = evaluator.subject_rules(subject, direction)  # the evaluator's selection, cached per labels
    numbered = sorted(((evaluator.rule_number[id(r)], r) for r in allows + denies if not r.is_empty),
                      key=lambda item: item[0])
    if not evaluator.is_default_deny(subject, direction):
        numbered = [(n, r) for n, r in numbered if r.action is Action.DENY]  # allows cannot change anything
    wild = [(n, r) for n, r in numbered if is_any_peer(r)]
    specific = [(n, r) for n, r in numbered if not is_any_peer(r)]
    if direction is Direction.EGRESS and any(pm.name for _, r in wild for pm in r.ports):
        specific, wild = numbered, []  # egress named ports depend on each peer's ports: expand per peer
    own_ports = None if pending_scope(subject.identity.labels) else subject.ports
    out = peer_entries(policy_id, ANY_PEER, direction, verdict_blocks(items_for(wild, own_ports), port_lpm))
    matching: dict[int, list[tuple[int, Rule]]] = {}  # identity position -> its rules, in rule order
    for n, r in specific:
        for pos in peers.rule(r):
            matching.setdefault(pos, []).append((n, r))
    # Peers with the same rules (and, for named ports, the same ports) get the same blocks: merge once.
    shared: dict[tuple, list] = {}
    for pos in sorted(matching):  # no rule, no entry: identities no rule names cost nothing
        peer = peers.identities[pos]
        dst_ports = own_ports if direction is Direction.INGRESS else (None if peer.pending else peer.ports)
        key = (tuple(n for n, _ in matching[pos]), dst_ports)
        blocks = shared.get(key)
        if blocks is None:
            blocks = shared[key] = verdict_blocks(items_for(matching[pos], dst_ports), port_lpm)
        out += peer_entries(policy_id, peer.id, direction, blocks)
    return out


# ---- the whole datapath ----

def detect_features(policy: PolicySet, inventory: Inventory, entries: list[PolicyEntry],
                    ipcache: tuple[IPCacheEntry, ...]) -> Features:
    ports = [pm for r in policy.rules for pm in r.ports]
    return Features(
        ipv6=wants_ipv6(policy, inventory),
        port_ranges=any(pm.name is None and pm.protocol is not Protocol.ANY and pm.first != pm.last
                        and (pm.first, pm.last) != (0, 65535) for pm in ports),
        deny=any(e.verdict.action is Action.DENY for e in entries),
        icmp=any(pm.protocol in (Protocol.ICMP, Protocol.ICMPV6) for pm in ports),
        l7=any(e.verdict.l7 for e in entries),
        any_peer=any(e.peer == ANY_PEER for e in entries),
        cidr=any(isinstance(p, CIDRPeer) for r in policy.rules for p in r.peers),
        services=any(e.identity == SERVICE_ID for e in ipcache),
    )


def lower(policy: PolicySet, inventory: Inventory) -> Datapath:
    """The datapath tables for ``policy`` on ``inventory`` (deterministic: sorted everywhere)."""
    ipv6 = wants_ipv6(policy, inventory)
    identities = peer_identities(policy, inventory, ipv6)
    port_lpm = _needs_port_lpm(policy)
    evaluator = Evaluator(policy)
    peers = PeerIndex(identities)
    endpoints, entries = [], []
    for policy_id, rep, members in policy_classes(inventory):
        dd = tuple(d for d in Direction if evaluator.is_default_deny(rep, d))
        for direction in (Direction.INGRESS, Direction.EGRESS):
            entries += subject_entries(evaluator, policy_id, rep, direction, peers, port_lpm)
        endpoints += [EndpointEntry(ip, 0, ep.identity.id, policy_id, dd, ep.display)
                      for ep in members for ip in ep.ips]
    ids = {name: n + 1 for n, name in enumerate(ep.display for ep in inventory.pods)}
    endpoints = [EndpointEntry(e.ip, ids[e.name], e.identity, e.policy_id, e.default_deny, e.name)
                 for e in endpoints]
    entries.sort(key=lambda e: (e.policy_id, e.peer, DIR_CODE[e.direction], e.protocol or 0, e.port, e.port_bits))
    ipcache = ipcache_entries(inventory, identities)
    return Datapath(
        ipcache=ipcache,
        endpoints=tuple(sorted(endpoints, key=lambda e: (e.ip.version, e.ip))),
        policy=tuple(entries),
        identities=identities,
        rules=policy.rules,
        features=detect_features(policy, inventory, entries, ipcache),
        warnings=tuple(named_port_warnings(policy, inventory) + coverage_warnings(policy, inventory)),
    )


def fallback_levels(rules: Iterable[Rule]) -> tuple[int, ...]:
    """Exact-mode levels some rule can produce entries at, in look-up order; the datapath tries only these.

    Read from the rules, not the entries, so it holds for any identity the rules
    may later be evaluated for: single and named ports give LEVEL_PORT, a
    protocol's whole port range LEVEL_PROTO, an L3-only match LEVEL_ANY.
    """
    used = set()
    for r in rules:
        for pm in r.ports:
            if pm.name is not None or pm.first == pm.last:  # a named port resolves to single ports
                used.add(LEVEL_PORT)
            elif pm.protocol is Protocol.ANY:
                used.add(LEVEL_ANY)
            else:
                used.add(LEVEL_PROTO)
    return tuple(sorted(used))


def _needs_port_lpm(policy: PolicySet) -> bool:
    return any(pm.name is None and pm.protocol is not Protocol.ANY and pm.first != pm.last
               and (pm.first, pm.last) != (0, 65535) for r in policy.rules for pm in r.ports)


def named_port_warnings(policy: PolicySet, inventory: Inventory) -> list[str]:
    """Egress named ports resolve per peer identity: pods sharing one must agree on the numbers."""
    names = {pm.name for r in policy.rules if r.direction is Direction.EGRESS for pm in r.ports if pm.name}
    out = []
    pods = pods_by_identity(inventory) if names else {}
    for ident in inventory.identities if names else ():
        eps = pods.get(ident.id, [])
        for name in sorted(names):
            seen = {tuple(sorted((np.port, np.protocol) for np in ep.ports if np.name == name)) for ep in eps}
            if len(seen) > 1:
                out.append(f"named port {name!r} differs between pods of identity {ident.id} "
                           f"({', '.join(ep.display for ep in eps)}): egress entries allow the union")
    return out


def coverage_warnings(policy: PolicySet, inventory: Inventory) -> list[str]:
    """What the pod datapath does not enforce exactly, said at compile time."""
    out = []
    host_rules = sum(r.subject_kind is not SubjectKind.ENDPOINT for r in policy.rules)
    if host_rules:
        out.append(f"{host_rules} rule(s) select the host endpoint (nodeSelector): host policies are not "
                   "compiled into the pod datapath")
    if len({n.identity.labels for n in inventory.nodes}) > 1:
        out.append(f"nodes carry different labels but share the remote-node identity; node selectors are "
                   f"evaluated with the labels of {inventory.nodes[0].display}")
    return out
