"""Pairs of places that only the two sides' defaults decide, held as two sets instead of an edge each.

In a cluster with few policies most classes' egress is not enforced and most ingress admits anyone,
and each such pair may connect on every port both ends can speak: an edge per pair grows with the
square of the classes (1,000 open pods: a million edges, 155 s and 3.9 GB for `graph`). Such a pair
is decided by two facts, "u's egress treats every peer alike" and "w's ingress treats every peer
alike", so the graph keeps the two sets (``out``, ``into``) and the searches enumerate their product
without materialising it:

* breadth-first search takes the places an open egress reaches from a pool of places not reached
  yet (the classic search over a complement graph), so each place leaves the pool once and a search
  costs places + explicit edges, not pairs;
* questions over whole components (every class's blast radius) use a hub per kind of source:
  u -> hub -> w stands for every open pair, and reaches exactly what the pairs reach.

The pair's hop is exact, not an approximation: both defaults allow every port, so it is the ports
both ends can speak (``possible_ports``) and no rule decides it.  Places are keyed by whether they
are outside the cluster (two outside places are never joined: no policy decides there) and which
IP versions they speak (ICMP needs IPv4 at both ends, ICMPv6 IPv6).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator

from .evaluate import speaks
from .ir import Endpoint
from .portset import PortSet
from .reachability import possible_ports

Key = tuple[bool, bool, bool]  # outside the cluster, speaks IPv4, speaks IPv6


def key_of(ep: Endpoint, outside: bool) -> Key:
    return outside, speaks(ep, 4), speaks(ep, 6)


@dataclass(frozen=True)
class OpenPairs:
    """u -> w for every u of ``out`` and w of ``into``, but between two outside places and from a place to
    itself unless it holds two endpoints or more (``multi``); ``keys`` and ``reps`` by place id."""

    out: frozenset[int]
    into: frozenset[int]
    keys: tuple[Key, ...]
    reps: tuple[Endpoint, ...]
    multi: frozenset[int]
    _ports: dict = field(default_factory=dict, compare=False, repr=False)

    def pair(self, u: int, w: int) -> bool:
        return (u in self.out and w in self.into and not (self.keys[u][0] and self.keys[w][0])
                and (u != w or u in self.multi))

    def ports(self, u: int, w: int) -> PortSet:
        """The pair's ports: every port both ends can speak (the same for every place of a key)."""
        return self.key_ports(self.keys[u], self.keys[w])

    def key_ports(self, a: Key, b: Key) -> PortSet:
        hit = self._ports.get((a, b))
        if hit is None:
            hit = self._ports[(a, b)] = possible_ports(self._rep[a], self._rep[b])
        return hit

    @cached_property
    def _rep(self) -> dict[Key, Endpoint]:
        return {k: ep for k, ep in zip(self.keys, self.reps)}

    @cached_property
    def groups(self) -> dict[Key, tuple[int, ...]]:
        """The places of ``into`` by key, in place order."""
        out: dict[Key, list[int]] = {}
        for w in sorted(self.into):
            out.setdefault(self.keys[w], []).append(w)
        return {k: tuple(v) for k, v in out.items()}

    def targets(self, source: Key, ports: PortSet | None) -> list[Key]:
        """The keys of ``into`` that a source of key ``source`` reaches on one of ``ports`` (None: any)."""
        return [k for k in self.groups if not (source[0] and k[0])
                and (ports is None or self.key_ports(source, k) & ports)]

    def count(self, ports: PortSet | None = None) -> int:
        """How many pairs there are (what an edge per pair would cost)."""
        sources: dict[Key, int] = {}
        for u in self.out:
            sources[self.keys[u]] = sources.get(self.keys[u], 0) + 1
        loops = sum(1 for u in self.out & self.into  # a place of one endpoint does not reach itself
                    if u not in self.multi and self.keys[u] in self.targets(self.keys[u], ports))
        return sum(n * len(self.groups[k]) for s, n in sources.items() for k in self.targets(s, ports)) - loops

    def pool(self, ports: PortSet | None) -> "Pool":
        return Pool(self, ports, {k: set(v) for k, v in self.groups.items()})

    def hubs(self, ports: PortSet | None, sources: Iterator[int]) -> Iterator[tuple]:
        """Edges through one hub per source key, ``("hub", key)``: u -> hub for each of ``sources`` in
        ``out``, hub -> w for each w it reaches.  Reachability through them is the pairs' own, but for
        a place of one endpoint reaching itself (u -> hub -> u), which callers that count reached
        endpoints less the source's own need not mind."""
        used: set[Key] = set()
        for u in sources:
            if u in self.out:
                used.add(self.keys[u])
                yield u, ("hub", self.keys[u])
        for s in used:
            for k in self.targets(s, ports):
                yield from ((("hub", s), w) for w in self.groups[k])


@dataclass
class Pool:
    """The places of ``into`` that a search has not reached yet, by key; ``take`` empties them."""

    pairs: OpenPairs
    ports: PortSet | None
    left: dict[Key, set[int]]

    def discard(self, w: int) -> None:
        if w in self.pairs.into:
            self.left[self.pairs.keys[w]].discard(w)

    def take(self, u: int, skip: frozenset[int] | set[int] = frozenset()) -> list[int]:
        """The places not reached yet that u's open egress reaches, less ``skip`` (and u itself when it
        cannot reach itself), in place order; they leave the pool, the skipped ones stay."""
        if u not in self.pairs.out:
            return []
        keep = set(skip) if u in self.pairs.multi else set(skip) | {u}
        taken: list[int] = []
        for k in self.pairs.targets(self.pairs.keys[u], self.ports):
            left = self.left[k]
            if not left:
                continue
            stay = left & keep
            taken.extend(left - stay)
            self.left[k] = stay
        return sorted(taken)
