"""Sets of (protocol, destination port) as merged ranges: what one connection may use, over every port.

The evaluator answers one port at a time; a hop of the connectivity graph needs every port at
once ("8080/TCP, 9100-9199/TCP"), so rules' port matches become sets and are combined with
union, intersection and difference exactly as the evaluator combines allow and deny rules.
For ICMP and ICMPv6 the port slot holds the type (R8.6), as everywhere in the IR.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .ir import Endpoint, PortMatch, Protocol, Rule

PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP, Protocol.ICMP, Protocol.ICMPV6)
MAX_PORT = 65535
MAX_ICMP_TYPE = 255  # an ICMP type is one byte; a policy's icmps refuse more too

Span = tuple[Protocol, int, int]


_ORDER = {p: i for i, p in enumerate(PROTOCOLS)}


def _merge(spans) -> tuple[Span, ...]:
    """Sorted, with touching and overlapping ranges of one protocol joined."""
    ordered = sorted(spans, key=lambda s: (_ORDER[s[0]], s[1], s[2]))
    if len(ordered) < 2:
        return tuple(ordered)
    out = [ordered[0]]
    for span in ordered[1:]:
        proto, lo, hi = span
        last = out[-1]
        if last[0] is proto and lo <= last[2] + 1:
            if hi > last[2]:
                out[-1] = (proto, last[1], hi)
        else:
            out.append(span)
    return tuple(out)


@dataclass(frozen=True)
class PortSet:
    """Destination ports per protocol, as sorted disjoint ranges (``spans``); empty is false."""

    spans: tuple[Span, ...] = ()

    @classmethod
    def of(cls, spans) -> "PortSet":
        return cls(_merge(spans))

    def __bool__(self) -> bool:
        return bool(self.spans)

    def __or__(self, other: "PortSet") -> "PortSet":
        if not other.spans or other.spans == self.spans:
            return self
        if not self.spans:
            return other
        return PortSet(_merge(self.spans + other.spans))

    def __and__(self, other: "PortSet") -> "PortSet":
        """One sweep over both sorted span lists: a rule of thousands of ports costs thousands, not millions."""
        if self is EVERY:
            return other
        if other is EVERY:
            return self
        a, b, out = self.spans, other.spans, []
        i = j = 0
        while i < len(a) and j < len(b):
            p, lo, hi = a[i]
            q, lo2, hi2 = b[j]
            if p is q and lo <= hi2 and lo2 <= hi:
                out.append((p, max(lo, lo2), min(hi, hi2)))
            if (_ORDER[p], hi) < (_ORDER[q], hi2):  # the span that ends first meets nothing further
                i += 1
            else:
                j += 1
        return PortSet(_merge(out))

    def __sub__(self, other: "PortSet") -> "PortSet":
        """One sweep: each span of ``other`` is passed over once, or twice when it reaches into the next."""
        if not other.spans or not self.spans:
            return self
        b, out, j = other.spans, [], 0
        for p, lo, hi in self.spans:
            at = lo
            while j < len(b) and (_ORDER[b[j][0]], b[j][2]) < (_ORDER[p], at):
                j += 1  # ends before this span: before every later one too
            k = j
            while k < len(b) and b[k][0] is p and b[k][1] <= hi:
                _, lo2, hi2 = b[k]
                if lo2 > at:
                    out.append((p, at, lo2 - 1))
                at = max(at, hi2 + 1)
                k += 1
            if at <= hi:
                out.append((p, at, hi))
        return PortSet(tuple(out))

    @classmethod
    def union(cls, sets) -> "PortSet":
        """The union of many sets at once: one sort, not a merge per set."""
        spans = [span for s in sets for span in s.spans]
        return cls(_merge(spans))

    def contains(self, protocol: Protocol, port: int) -> bool:
        return any(p is protocol and lo <= port <= hi for p, lo, hi in self.spans)

    def samples(self) -> list[tuple[Protocol, int]]:
        """One port of every range: enough to replay each range through the evaluator."""
        return [(p, lo) for p, lo, _ in self.spans]

    def __str__(self) -> str:
        return label(self.texts())

    def texts(self) -> list[str]:
        return [span_text(s) for s in self.spans]


EVERY = PortSet(tuple((p, 0, MAX_PORT) for p in PROTOCOLS))
NONE = PortSet()


def label(texts: list[str]) -> str:
    """``PortSet.texts()`` read back as one phrase (``any`` for every port)."""
    return "any" if texts == EVERY.texts() else ", ".join(texts) or "none"


def span_text(span: Span) -> str:
    """``8080/TCP``, ``9100-9199/TCP``, ``*/UDP``: the spelling `--ports` and spec files accept."""
    proto, lo, hi = span
    where = "*" if (lo, hi) == (0, MAX_PORT) else str(lo) if lo == hi else f"{lo}-{hi}"
    return f"{where}/{proto.label}"


def match_ports(pm: PortMatch, dst: Endpoint) -> PortSet:
    """The ports ``pm`` matches toward ``dst``: a named port is the destination's own (R8.4)."""
    protocols = PROTOCOLS if pm.protocol is Protocol.ANY else (pm.protocol,)
    if pm.name is None:
        return PortSet.of((p, pm.first, pm.last) for p in protocols)
    return PortSet.of((np.protocol, np.port, np.port) for np in dst.ports
                      if np.name == pm.name and np.protocol in protocols)


def rule_ports(rule: Rule, dst: Endpoint, plain_only: bool = False) -> PortSet:
    """The union of the rule's port matches toward ``dst``; ``plain_only``: those without L7 rules."""
    return PortSet.union(match_ports(pm, dst) for pm in rule.ports if not plain_only or pm.l7 is None)


_SPAN = re.compile(r"^(\*|[0-9]+(?:-[0-9]+)?)(?:/([A-Za-z0-9]+))?$")


def parse_ports(text: str) -> PortSet:
    """``443/TCP,8000-8100/UDP,*/TCP,8/ICMP,53/ANY`` (ANY: TCP, UDP and SCTP, as in toPorts; TCP by default).

    Raises ValueError with a message for the user.
    """
    spans: list[Span] = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        match = _SPAN.match(item)
        if match is None:
            raise ValueError(f"invalid port {item!r}: expected PORT[-PORT][/PROTOCOL] such as 443/TCP, "
                             "8000-8100/UDP, */TCP or 8/ICMP")
        where, proto = match.groups()
        try:
            protocol = Protocol.parse(proto or "TCP")
        except KeyError:
            raise ValueError(f"invalid port {item!r}: protocol TCP, UDP, SCTP, ICMP, ICMPv6 or ANY") from None
        lo, _, hi = ("0-65535" if where == "*" else where).partition("-")
        first, last = int(lo), int(hi or lo)
        if not first <= last <= MAX_PORT:
            raise ValueError(f"invalid port {item!r}: ports are 0-65535, first <= last")
        if protocol.family and where != "*" and last > MAX_ICMP_TYPE:
            raise ValueError(f"invalid port {item!r}: ICMP and ICMPv6 types are 0-{MAX_ICMP_TYPE}")
        protocols = (Protocol.TCP, Protocol.UDP, Protocol.SCTP) if protocol is Protocol.ANY else (protocol,)
        spans += [(p, first, last) for p in protocols]
    if not spans:
        raise ValueError("no port given")
    return PortSet.of(spans)
