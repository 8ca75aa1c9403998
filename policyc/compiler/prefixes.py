"""Containment among IP prefixes without testing every pair: sorted intervals per address family.

Two prefixes nest or are disjoint.  Sorted by (first address, length), the prefixes inside N are one
contiguous run starting at N's first address (only prefixes that start where N starts and are shorter
than N get in the way, at most one per length); the prefixes containing N are N's own address masked
to each length in use.  So "which of these many prefixes are inside / around / overlapping N" costs a
binary search plus the answer, where testing every pair (``ipaddress.subnet_of``) costs the whole set.
Addresses are plain integers here: ``ipaddress`` objects are slow to compare.  A port range is a set
of prefixes of the 16-bit port space too (``prefix_blocks``): the policy map's keys, and the cells of
the verifier's port index.
"""
from __future__ import annotations

import bisect
import itertools
from typing import Generic, Iterable, Iterator, TypeVar

from .ir import IPAddress, IPNetwork

T = TypeVar("T")


def span(net: IPNetwork) -> tuple[int, int]:
    """(first, last) address of ``net`` as integers."""
    first = int(net.network_address)
    return first, first | ((1 << (net.max_prefixlen - net.prefixlen)) - 1)


def prefix_blocks(first: int, last: int, width: int = 16) -> list[tuple[int, int]]:
    """The fewest aligned (start, fixed_bits) blocks covering [first, last]."""
    out = []
    while first <= last:
        size = first & -first if first else 1 << width
        while size > last - first + 1:
            size >>= 1
        out.append((first, width - size.bit_length() + 1))
        first += size
    return out


class _Family(Generic[T]):
    """The prefixes of one address family: distinct prefixes as sorted intervals, and by (length, address)."""

    def __init__(self, bits: int, items: list[tuple[IPNetwork, T]]):
        self.bits = bits
        self.exact: dict[tuple[int, int], list[T]] = {}
        for net, value in items:
            self.exact.setdefault((net.prefixlen, int(net.network_address)), []).append(value)
        rows = sorted((first, first | ((1 << (bits - length)) - 1), length) for length, first in self.exact)
        self.firsts = [r[0] for r in rows]
        self.lasts = [r[1] for r in rows]
        self.groups = [self.exact[(r[2], r[0])] for r in rows]
        self.counts = list(itertools.accumulate(map(len, self.groups), initial=0))  # values before each row
        self.lengths = sorted({length for length, _ in self.exact})

    def within(self, first: int, last: int, strict: bool = False) -> Iterator[T]:
        """Values of the prefixes inside [first, last]; ``strict`` leaves out that very prefix."""
        i = bisect.bisect_left(self.firsts, first)
        while i < len(self.firsts) and self.firsts[i] <= last:
            if self.lasts[i] <= last and not (strict and self.firsts[i] == first and self.lasts[i] == last):
                yield from self.groups[i]
            i += 1

    def bound(self, first: int, last: int, length: int) -> int:
        """At least the number of values ``within`` and ``containing`` yield, in a few look-ups."""
        inside = self.counts[bisect.bisect_right(self.firsts, last)] - self.counts[bisect.bisect_left(self.firsts, first)]
        return inside + sum(
            len(self.exact.get((n, first & (((1 << n) - 1) << (self.bits - n))), ())) for n in self.lengths
            if n <= length)

    def containing(self, first: int, length: int) -> Iterator[T]:
        for n in self.lengths:
            if n > length:
                break
            mask = ((1 << n) - 1) << (self.bits - n)
            yield from self.exact.get((n, first & mask), ())


class PrefixIndex(Generic[T]):
    """Values attached to prefixes, found by containment; a prefix may carry several values."""

    def __init__(self, items: Iterable[tuple[IPNetwork, T]]):
        by_version: dict[int, list] = {4: [], 6: []}
        for net, value in items:
            by_version[net.version].append((net, value))
        self._families = {v: _Family(32 if v == 4 else 128, rows) for v, rows in by_version.items()}

    def within(self, net: IPNetwork) -> Iterator[T]:
        """Values of the prefixes inside ``net`` (``net`` itself included)."""
        return self._families[net.version].within(*span(net))

    def containing(self, net: IPNetwork) -> Iterator[T]:
        """Values of the prefixes around ``net`` (``net`` itself included), shortest first."""
        return self._families[net.version].containing(span(net)[0], net.prefixlen)

    def containing_address(self, ip: IPAddress) -> Iterator[T]:
        return self._families[ip.version].containing(int(ip), ip.max_prefixlen)

    def bound(self, net: IPNetwork) -> int:
        """An upper bound on the size of ``overlapping(net)``, without enumerating it."""
        return self._families[net.version].bound(*span(net), net.prefixlen)

    def overlapping(self, net: IPNetwork) -> Iterator[T]:
        """Values of the prefixes that share an address with ``net``: around it or inside it."""
        yield from self.containing(net)
        yield from self._families[net.version].within(*span(net), strict=True)
