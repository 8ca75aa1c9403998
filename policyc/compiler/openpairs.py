"""Pairs of places that two uniform sides decide, held as sets of places instead of an edge each.

In a cluster with few policies most classes' egress is not enforced and most ingress admits anyone,
and each such pair may connect on every port both ends can speak: an edge per pair grows with the
square of the classes (1,000 open pods: a million edges, 155 s and 3.9 GB for `graph`).  The same
holds where a rule decides a side for nearly every peer, as Cilium's advice for deny policies does
(an allow to `all` beside a deny: 1,000 pods, a million ruled edges).  So each place's egress and
ingress is held as a ``Uniform`` side: one decision toward every peer but a few exceptions.  A pair
whose two sides are uniform toward each other (neither names the other as an exception) is decided
by the two uniform sides alone, and places with equal sides, address families and (where a rule
names a port) named ports decide alike: the graph keeps the places per group, and the searches
enumerate the pairs without materialising them:

* breadth-first search takes the places a uniform egress reaches from a pool of places not reached
  yet (the classic search over a complement graph), leaving the source's exceptions in the pool, so
  each place leaves the pool once and a search costs places + exceptions + explicit edges, not pairs;
* questions over whole components (every class's blast radius) use a hub per group of sources and
  set of exceptions: u -> hub -> w stands for every uniform pair, and reaches exactly what they reach.

A pair's hop is exact, not an approximation: the two uniform sides and the ports both ends can speak
(``possible_ports``).  Places are keyed by whether they are outside the cluster (two outside places
are never joined: no policy decides there) and which IP versions they speak (ICMP needs IPv4 at both
ends, ICMPv6 IPv6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterable, Iterator

from .evaluate import speaks
from .ir import Endpoint
from .portset import PortSet
from .reachability import Side, Uniform, possible_ports

Key = tuple[bool, bool, bool]  # outside the cluster, speaks IPv4, speaks IPv6


def key_of(ep: Endpoint, outside: bool) -> Key:
    return outside, speaks(ep, 4), speaks(ep, 6)


@dataclass(frozen=True)
class Template:
    """What every uniform pair of a source group and a target group is: both sides and the ports."""

    egress: Side
    ingress: Side
    ports: PortSet
    l7: PortSet


@dataclass(frozen=True)
class OpenPairs:
    """u -> w for every u of ``out`` and w of ``into`` that are no exception of each other's side and
    whose sides allow a port both can speak, but between two outside places and from a place to itself
    unless it holds two endpoints or more (``multi``).  ``out`` and ``into``: uniform sides by place id,
    their exceptions as place ids; ``keys`` and ``reps`` by place id."""

    out: dict[int, Uniform]
    into: dict[int, Uniform]
    keys: tuple[Key, ...]
    reps: tuple[Endpoint, ...]
    multi: frozenset[int]
    _templates: dict = field(default_factory=dict, compare=False, repr=False)
    _targets: dict = field(default_factory=dict, compare=False, repr=False)
    _possible: dict = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def named_ports(self) -> bool:
        return any(u.named_ports for side in (self.out, self.into) for u in side.values())

    def source(self, u: int) -> tuple:
        return self.keys[u], self.out[u].group

    def target(self, w: int) -> tuple:
        return self.keys[w], self.into[w].group, self.reps[w].ports if self.named_ports else None

    @cached_property
    def _first(self) -> dict[tuple, int]:
        """A place of every source group (a sample: every place of a group decides alike)."""
        out: dict[tuple, int] = {}
        for u in sorted(self.out):
            out.setdefault(self.source(u), u)
        return out

    @cached_property
    def groups(self) -> dict[tuple, tuple[int, ...]]:
        """The places of ``into`` by target group, in place order."""
        out: dict[tuple, list[int]] = {}
        for w in sorted(self.into):
            out.setdefault(self.target(w), []).append(w)
        return {k: tuple(v) for k, v in out.items()}

    @cached_property
    def barred(self) -> dict[int, frozenset[int]]:
        """Per source, the places of ``into`` it has no uniform pair with: its own exceptions, and the
        ingresses that name it as one of theirs."""
        named: dict[int, set[int]] = {}
        for w, side in self.into.items():
            for u in side.exceptions:
                named.setdefault(u, set()).add(w)
        return {u: side.exceptions | named[u] if u in named else side.exceptions for u, side in self.out.items()}

    @cached_property
    def barring(self) -> dict[int, set[int]]:
        """``barred`` read backwards: per place, the sources barred from it."""
        out: dict[int, set[int]] = {}
        for u, barred in self.barred.items():
            for w in barred:
                out.setdefault(w, set()).add(u)
        return out

    def possible(self, u: int, w: int) -> PortSet:
        """``possible_ports`` of two places, once per pair of keys."""
        hit = self._possible.get((self.keys[u], self.keys[w]))
        if hit is None:
            hit = self._possible[(self.keys[u], self.keys[w])] = possible_ports(self.reps[u], self.reps[w])
        return hit

    def template(self, source: tuple, target: tuple) -> Template:
        """The hop of the pairs from ``source`` to ``target`` (groups), decided once from a sample of each."""
        hit = self._templates.get((source, target))
        if hit is None:
            u, w = self._first[source], self.groups[target][0]
            e, i = self.out[u].side(self.reps[w]), self.into[w].side(self.reps[u])
            ports = e.ports & i.ports & self.possible(u, w)
            hit = self._templates[(source, target)] = Template(e, i, ports, (e.l7 | i.l7) & ports)
        return hit

    def uniform(self, u: int, w: int) -> bool:
        """Whether the two uniform sides decide u -> w (they may allow no port)."""
        return (u in self.out and w in self.into and not (self.keys[u][0] and self.keys[w][0])
                and (u != w or u in self.multi) and w not in self.barred[u])

    def pair(self, u: int, w: int) -> Template | None:
        if not self.uniform(u, w):
            return None
        t = self.template(self.source(u), self.target(w))
        return t if t.ports else None

    def targets(self, source: tuple, ports: PortSet | None) -> list[tuple]:
        """The target groups that sources of group ``source`` reach on one of ``ports`` (None: any)."""
        hit = self._targets.get((source, ports))
        if hit is None:
            hit = self._targets[(source, ports)] = [
                k for k in self.groups if not (source[0][0] and k[0][0])
                and (self.template(source, k).ports if ports is None else self.template(source, k).ports & ports)]
        return hit

    def kept(self, u: int) -> frozenset[int]:
        """The places u has no uniform pair with: ``barred`` and, for a place of one endpoint, itself."""
        return self.barred[u] if u in self.multi else self.barred[u] | {u}

    def count(self, ports: PortSet | None = None) -> int:
        """How many pairs there are (what an edge per pair would cost)."""
        total = 0
        for u in self.out:
            reach = self.targets(self.source(u), ports)
            total += sum(len(self.groups[k]) for k in reach)
            reach_set = set(reach)
            total -= sum(1 for w in self.kept(u) if w in self.into and self.target(w) in reach_set)
        return total

    def pool(self, ports: PortSet | None) -> "Pool":
        return Pool(self, ports, {k: set(v) for k, v in self.groups.items()})

    def hub(self, u: int, linked) -> tuple:
        """u's hub: its source group and the places of ``barred`` it has no edge to (``linked(u, w)``: a
        ruled edge, on the ports asked about): for reachability a barred pair whose own rules allow it
        is as good as a uniform one, so that sources barred only from what they reach anyway (a pod's
        own node, which always admits it) share a hub."""
        return "hub", self.source(u), frozenset(w for w in self.barred[u] if not linked(u, w))

    def hubs(self, ports: PortSet | None, sources: Iterable[int], linked) -> Iterator[tuple]:
        """Edges through one hub per source group and set of places barred and unlinked (``hub``): u -> hub
        for each of ``sources`` in ``out``, hub -> w for each w it reaches.  Reachability through them
        is the pairs' and the ruled edges' own, but for a place of one endpoint reaching itself
        (u -> hub -> u), which callers that count reached endpoints less the source's own need not mind."""
        used: set[tuple] = set()
        for u in sources:
            if u in self.out:
                hub = self.hub(u, linked)
                used.add(hub)
                yield u, hub
        for hub in used:
            for k in self.targets(hub[1], ports):
                yield from ((hub, w) for w in self.groups[k] if w not in hub[2])


@dataclass
class Pool:
    """The places of ``into`` that a search has not reached yet, by target group; ``take`` empties them."""

    pairs: OpenPairs
    ports: PortSet | None
    left: dict[tuple, set[int]]

    def discard(self, w: int) -> None:
        if w in self.pairs.into:
            self.left[self.pairs.target(w)].discard(w)

    def take(self, u: int, skip: frozenset[int] | set[int] = frozenset()) -> list[int]:
        """The places not reached yet that u's uniform egress reaches, less ``skip`` (and u's exceptions,
        and u itself when it cannot reach itself), in place order; they leave the pool, the others stay."""
        if u not in self.pairs.out:
            return []
        keep = self.pairs.kept(u)
        keep = keep | skip if skip else keep
        taken: list[int] = []
        for k in self.pairs.targets(self.pairs.source(u), self.ports):
            left = self.left[k]
            if not left:
                continue
            stay = left & keep
            taken.extend(left - stay if stay else left)
            self.left[k] = stay
        return sorted(taken)
