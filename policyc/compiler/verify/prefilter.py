"""Cheap syntactic over-approximations of "can these two rules meet the same flow?".

They are sound (False only when no flow can match both), so checks use them
to pick the few rules a Z3 query needs: each rule is compared with its
neighbours, never with the whole policy set, and never re-checked by removal.
"""
from __future__ import annotations

import bisect
import functools
import itertools
from typing import Callable, Iterable

from ..entities import RESERVED, world_labels
from ..ir import (ANY_SOURCE, CIDRPeer, DefaultDeny, FQDNPeer, Op, Peer, PortMatch,
                  Protocol, Requirement, Rule, Selector, SelectorPeer)
from ..prefixes import PrefixIndex, prefix_blocks, span


_POSITIVE = (Op.IN, Op.EXISTS)
_APART = {("k8s", RESERVED), (RESERVED, "k8s")}  # label sources no endpoint carries together


def _excludes(a: Requirement, b: Requirement) -> bool:
    """No label set satisfies both (a label set holds one label per key).

    Nor does any endpoint's: k8s-sourced labels are a pod's (inventory.pod_labels; encode's
    ``_label_source_ok``), and a pod carries no reserved label (those are nodes', the world's and the
    reserved identities'), so a requirement for a k8s label excludes one for a reserved label.  Every
    namespaced selector requires its namespace's k8s label: without this, an entity peer such as world
    met every pod selector, and each such pair cost the checks a Z3 query (issue 15).
    """
    if (a.source, b.source) in _APART and a.op in _POSITIVE and b.op in _POSITIVE:
        return True
    if a.key != b.key:
        return False
    for x, y in ((a, b), (b, a)):
        same_source = y.source in (ANY_SOURCE, x.source)
        if x.op is Op.IN and y.op is Op.IN and not set(x.values) & set(y.values):
            return True
        if x.op in _POSITIVE and y.op is Op.DOES_NOT_EXIST and same_source:
            return True
        if x.op is Op.IN and y.op is Op.NOT_IN and set(x.values) <= set(y.values) and same_source:
            return True
    return False


def selectors_disjoint(a: Selector, b: Selector) -> bool:
    return any(_excludes(x, y) for x in a.requirements for y in b.requirements)


def ports_overlap(a: PortMatch, b: PortMatch) -> bool:
    if Protocol.ANY not in (a.protocol, b.protocol) and a.protocol is not b.protocol:
        return False
    if a.name or b.name:
        return True
    return a.first <= b.last and b.first <= a.last


def _selector_sees_world(peer: SelectorPeer, version: int) -> bool:
    return any(s.matches(world_labels(version)) for s in peer.selectors)


@functools.lru_cache(maxsize=1 << 16)
def _worlds(peer: SelectorPeer) -> tuple[int, ...]:
    """The address families whose world a selector peer sees; indexes ask about every peer often."""
    return tuple(v for v in (4, 6) if _selector_sees_world(peer, v))


def peers_overlap(a: Peer, b: Peer) -> bool:
    if isinstance(a, FQDNPeer) or isinstance(b, FQDNPeer):
        return False  # toFQDNs matches nothing statically (R10.2c)
    if isinstance(a, CIDRPeer) and isinstance(b, CIDRPeer):
        return a.network.version == b.network.version and a.network.overlaps(b.network)
    if isinstance(a, CIDRPeer) or isinstance(b, CIDRPeer):
        cidr, sel = (a, b) if isinstance(a, CIDRPeer) else (b, a)
        return _selector_sees_world(sel, cidr.network.version)
    return any(not selectors_disjoint(x, y) for x in a.selectors for y in b.selectors)


def subjects_overlap(a: Rule | DefaultDeny, b: Rule | DefaultDeny) -> bool:
    return (a.direction is b.direction and a.subject_kind is b.subject_kind
            and not selectors_disjoint(a.subject, b.subject))


SMALL = 64  # pairs compared one by one; beyond that, sorted sweeps


def _sweep_meets(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]]) -> bool:
    """Some interval of ``a`` intersects some interval of ``b``: sorted by start, each interval meets
    an earlier one of the other side exactly when it starts before that side's furthest end."""
    furthest = [-1, -1]
    for first, last, side in sorted([(f, l, 0) for f, l in a] + [(f, l, 1) for f, l in b]):
        if first <= furthest[1 - side]:
            return True
        furthest[side] = max(furthest[side], last)
    return False


def ports_meet(xs, ys) -> bool:
    """``any(ports_overlap(x, y) for x in xs for y in ys)``, in n log n when both lists are long."""
    if len(xs) * len(ys) <= SMALL:
        return any(ports_overlap(x, y) for x in xs for y in ys)
    if xs and ys and any(p.protocol is Protocol.ANY for p in (*xs, *ys)):
        return True
    for proto in {p.protocol for p in xs} & {p.protocol for p in ys}:
        mine = [p for p in xs if p.protocol is proto]
        theirs = [p for p in ys if p.protocol is proto]
        if any(p.name for p in (*mine, *theirs)) or _sweep_meets(
                ((p.first, p.last) for p in mine), ((p.first, p.last) for p in theirs)):
            return True
    return False


def peers_meet(xs, ys) -> bool:
    """``any(peers_overlap(x, y) for x in xs for y in ys)``; CIDR sets meet through one sorted sweep."""
    if len(xs) * len(ys) <= SMALL:
        return any(peers_overlap(x, y) for x in xs for y in ys)
    sx = [p for p in xs if isinstance(p, SelectorPeer)]
    sy = [p for p in ys if isinstance(p, SelectorPeer)]
    if any(peers_overlap(x, y) for x in sx for y in sy):
        return True
    cx = [p.network for p in xs if isinstance(p, CIDRPeer)]
    cy = [p.network for p in ys if isinstance(p, CIDRPeer)]
    for v in (4, 6):
        if (any(n.version == v for n in cx) and any(_selector_sees_world(s, v) for s in sy)) or \
                (any(n.version == v for n in cy) and any(_selector_sees_world(s, v) for s in sx)):
            return True
        if _sweep_meets((span(n) for n in cx if n.version == v), (span(n) for n in cy if n.version == v)):
            return True
    return False


def rules_overlap(a: Rule, b: Rule, a_ports=None, b_ports=None) -> bool:
    """Some flow might match both rules (restricted to the given port entries)."""
    return (subjects_overlap(a, b) and ports_meet(a_ports or a.ports, b_ports or b.ports)
            and peers_meet(a.peers, b.peers))


# ---- indexes: the neighbours of one rule without comparing it with every other rule ----

Candidates = tuple[int, Callable[[], Iterable[int]]]  # (upper bound on the answer, how to list it)
GRID_FROM = 64  # below this many candidates, comparing them costs less than the per-group look-ups
EVERY = -1  # a bound meaning "no narrowing": every item


class SelectorIndex:
    """Which of many selectors may share a label set with a query selector (not ``selectors_disjoint``).

    Two ``In`` requirements on one key without a common value exclude each other, so for a query with
    ``key In values`` only the selectors without an ``In`` on that key and those whose ``In`` names one
    of the values remain.  Selectors are grouped by the keys of their ``In`` requirements, so "without
    an ``In`` on that key" is a few whole groups.
    """

    def __init__(self, selectors: Iterable[Selector]):
        self._groups: dict[frozenset[str], list[int]] = {}
        self._by_value: dict[tuple[str, str], set[int]] = {}
        for i, sel in enumerate(selectors):
            ins = [r for r in sel.requirements if r.op is Op.IN]
            self._groups.setdefault(frozenset(r.key for r in ins), []).append(i)
            for r in ins:
                for v in r.values:
                    self._by_value.setdefault((r.key, v), set()).add(i)

    def candidates(self, sel: Selector) -> Candidates:
        best: Candidates = (EVERY, lambda: itertools.chain.from_iterable(self._groups.values()))
        for r in sel.requirements:
            if r.op is not Op.IN:
                continue
            lacking = [g for keys, g in self._groups.items() if r.key not in keys]
            hits = [self._by_value.get((r.key, v), ()) for v in r.values]
            bound = sum(map(len, lacking)) + sum(map(len, hits))
            if best[0] == EVERY or bound < best[0]:
                best = (bound, lambda parts=lacking + hits: itertools.chain.from_iterable(parts))
        return best


class PortIndex:
    """Which port lists (of rules) have an entry that may meet a given one (``ports_overlap``).

    L3-only and any-protocol named entries meet everything; a named entry meets its protocol; numbered
    ranges are cut into aligned port blocks (``prefix_blocks``), so the ranges around a port are at most
    17 look-ups, and those starting inside a range one binary search.
    """

    def __init__(self, port_lists: list[Iterable[PortMatch]]):
        self.size = len(port_lists)
        self._any: set[int] = set()
        self._named: dict[Protocol, set[int]] = {}
        self._all: dict[Protocol, set[int]] = {}
        self._cells: dict[tuple[Protocol, int, int], set[int]] = {}
        starts: dict[Protocol, list[tuple[int, int]]] = {}
        for i, ports in enumerate(port_lists):
            for pm in ports:
                if pm.protocol is Protocol.ANY:
                    self._any.add(i)
                    continue
                self._all.setdefault(pm.protocol, set()).add(i)
                if pm.name:
                    self._named.setdefault(pm.protocol, set()).add(i)
                    continue
                starts.setdefault(pm.protocol, []).append((pm.first, i))
                for start, bits in prefix_blocks(pm.first, pm.last):
                    self._cells.setdefault((pm.protocol, bits, start), set()).add(i)
        self._starts = {p: sorted(rows) for p, rows in starts.items()}

    def _around(self, protocol: Protocol, port: int) -> list[set[int]]:
        return [self._cells.get((protocol, bits, port >> (16 - bits) << (16 - bits)), set()) for bits in range(17)]

    def _entry(self, pm: PortMatch) -> Candidates:
        if pm.protocol is Protocol.ANY:
            return EVERY, lambda: range(self.size)
        fixed = [self._any, self._named.get(pm.protocol, set())]
        if pm.name:
            fixed.append(self._all.get(pm.protocol, set()))
            return sum(map(len, fixed)), lambda: itertools.chain.from_iterable(fixed)
        rows = self._starts.get(pm.protocol, [])
        lo, hi = bisect.bisect_left(rows, (pm.first, -1)), bisect.bisect_right(rows, (pm.last, self.size))
        around = self._around(pm.protocol, pm.first)
        return (sum(map(len, fixed + around)) + hi - lo,
                lambda: itertools.chain(*fixed, *around, (i for _, i in rows[lo:hi])))

    def candidates(self, ports) -> Candidates:
        return union(map(self._entry, ports))


class PeerIndex:
    """Which peer lists (of rules) have a peer that may meet a given one (``peers_overlap``): CIDRs
    through a prefix index, selectors through a selector index, and the world seen by selectors on
    both sides."""

    def __init__(self, peer_lists: list[Iterable[Peer]]):
        self._cidr = PrefixIndex((p.network, i) for i, peers in enumerate(peer_lists) for p in peers
                                 if isinstance(p, CIDRPeer))
        self._cidr_rules: dict[int, set[int]] = {4: set(), 6: set()}
        self._world: dict[int, set[int]] = {4: set(), 6: set()}
        owners = []
        for i, peers in enumerate(peer_lists):
            for p in peers:
                if isinstance(p, CIDRPeer):
                    self._cidr_rules[p.network.version].add(i)
                elif isinstance(p, SelectorPeer):
                    for v in _worlds(p):
                        self._world[v].add(i)
                    owners += [(s, i) for s in p.selectors]
        self._owners = [i for _, i in owners]
        self._selectors = SelectorIndex(s for s, _ in owners)

    def _peer(self, peer: Peer) -> Candidates:
        if isinstance(peer, CIDRPeer):
            v = peer.network.version
            return (self._cidr.bound(peer.network) + len(self._world[v]),
                    lambda: itertools.chain(self._cidr.overlapping(peer.network), self._world[v]))
        if isinstance(peer, FQDNPeer):
            return 0, lambda: ()
        world = [self._cidr_rules[v] for v in _worlds(peer)]
        parts = [(sum(map(len, world)), lambda: itertools.chain.from_iterable(world))]
        for sel in peer.selectors:
            bound, produce = self._selectors.candidates(sel)
            parts.append((bound, lambda produce=produce: (self._owners[j] for j in produce())))
        return union(parts)

    def candidates(self, peers) -> Candidates:
        return union(map(self._peer, peers))


def union(parts: Iterable[Candidates]) -> Candidates:
    """The union of candidate sets: bounds add up, and one "every" makes the whole "every"."""
    parts = list(parts)
    if any(b == EVERY for b, _ in parts):
        return EVERY, lambda: ()
    return sum(b for b, _ in parts), lambda: itertools.chain.from_iterable(p() for _, p in parts)


def own_ports(rule: Rule) -> int:
    """What ``rule``'s own port entries add to the bound of the port index it is in."""
    return PortIndex([rule.ports]).candidates(rule.ports)[0]


def own_peers(rule: Rule) -> int:
    """What ``rule``'s own CIDRs add to the bound of the peer index it is in (100 CIDRs of one rule meet
    each other; its selectors count a few times at most, and each other index counts it too)."""
    cidrs = [p for p in rule.peers if isinstance(p, CIDRPeer)]
    return PeerIndex([cidrs]).candidates(cidrs)[0] if cidrs else 0


class Index:
    """Rules (or default-deny entries) by what they can meet: subject, ports and peers, each indexed.

    ``near`` narrows by subject.  ``overlapping`` takes the smallest of four candidate sets -- by
    subject, by port, by peer, and by peer among the rules with port entries that meet (rules grouped
    by their port entries, a peer index per group: rules listing peers × ports are a grid that each
    single index cuts only into lines) -- and compares only those with ``rules_overlap``.  Bounds
    leave out the asking rule's own entries, which every index of it holds.
    """

    def __init__(self, items):
        self.items = list(items)
        self._buckets: dict[tuple, list[int]] = {}
        for i, item in enumerate(self.items):
            self._buckets.setdefault((item.direction, item.subject_kind), []).append(i)
        self._subjects = {k: SelectorIndex(self.items[i].subject for i in members)
                          for k, members in self._buckets.items()}
        self._position = {id(x): i for i, x in enumerate(self.items)}
        self._overlapping: dict[int, tuple] = {}
        if all(isinstance(x, Rule) for x in self.items):
            self._ports = PortIndex([r.ports for r in self.items])
            self._peers = PeerIndex([r.peers for r in self.items])
            groups: dict[frozenset, list[int]] = {}
            for i, r in enumerate(self.items):
                groups.setdefault(frozenset(r.ports), []).append(i)
            self._groups = list(groups.values())
            self._group_of = {i: g for g, members in enumerate(self._groups) for i in members}
            self._group_ports = PortIndex([self.items[g[0]].ports for g in self._groups])
            self._group_peers: dict[int, PeerIndex] = {}  # made when a group is first asked about

    def _subject_candidates(self, direction, subject_kind, subject: Selector) -> Candidates:
        members = self._buckets.get((direction, subject_kind), [])
        index = self._subjects.get((direction, subject_kind))
        if index is None:
            return 0, lambda: ()
        bound, produce = index.candidates(subject)
        return (len(members) if bound == EVERY else bound), lambda: (members[j] for j in produce())

    def near(self, direction, subject_kind, subject: Selector) -> list:
        """Items whose subject may overlap ``subject`` in ``direction``, in their original order."""
        _, produce = self._subject_candidates(direction, subject_kind, subject)
        return [self.items[i] for i in sorted(set(produce()))
                if not selectors_disjoint(subject, self.items[i].subject)]

    def _group_peer_index(self, g: int) -> PeerIndex:
        index = self._group_peers.get(g)
        if index is None:
            index = self._group_peers[g] = PeerIndex([self.items[i].peers for i in self._groups[g]])
        return index

    def _grid_candidates(self, rule: Rule, me: int | None, cap: int) -> Candidates:
        """By peer, among the groups of rules whose port entries meet ``rule``'s (not past ``cap``)."""
        group_bound, groups = self._group_ports.candidates(rule.ports)
        if group_bound == EVERY or group_bound >= cap or cap <= GRID_FROM:
            return EVERY, lambda: ()
        parts, bound = [], 0
        for g in set(groups()):
            b, produce = self._group_peer_index(g).candidates(rule.peers)
            if b == EVERY:
                return EVERY, lambda: ()
            bound += b - (own_peers(rule) if me is not None and self._group_of[me] == g else 0)
            parts.append((g, produce))
        return group_bound + bound, lambda: (self._groups[g][j] for g, produce in parts for j in produce())

    def overlapping(self, rule: Rule) -> list[Rule]:
        """The indexed rules some flow may match together with ``rule`` (``rules_overlap``), in order.

        Kept per rule: checks ask for a rule's deny and its allow neighbours separately.
        """
        kept, found = self._overlapping.get(id(rule), (None, None))
        if kept is not rule:
            found = self._overlapping_now(rule)
            self._overlapping[id(rule)] = (rule, found)
        return found

    def _overlapping_now(self, rule: Rule) -> list[Rule]:
        me = self._position.get(id(rule))
        me = me if me is not None and self.items[me] is rule else None
        mine = int(me is not None)

        def others(option: Candidates, own: Callable[[], int]) -> Candidates:
            bound, produce = option
            return (bound if bound == EVERY or not mine else bound - own()), produce

        options = [others(self._subject_candidates(rule.direction, rule.subject_kind, rule.subject), lambda: 1),
                   others(self._ports.candidates(rule.ports), lambda: own_ports(rule)),
                   others(self._peers.candidates(rule.peers), lambda: own_peers(rule))]
        options = [o for o in options if o[0] != EVERY]
        grid = self._grid_candidates(rule, me, min(b for b, _ in options))
        if grid[0] != EVERY:
            options.append(grid)
        _, produce = min(options, key=lambda o: o[0])
        found = set(produce()) | ({me} if me is not None else set())
        return [self.items[i] for i in sorted(found) if rules_overlap(rule, self.items[i])]
