"""What one allow rule opens to the world, as sets: exposure is a property of the set, not of the text.

``fromCIDR: [0.0.0.0/1, 128.0.0.0/1]`` and ``0.0.0.0/0 except 10.0.0.0/8``
admit every public address as surely as ``0.0.0.0/0`` does, and
``1-65535/UDP`` opens every UDP port as surely as an L3-only rule does.
Addresses are integer intervals per IP version; ports per protocol.
"""
from __future__ import annotations

import ipaddress

from ..cliselector import format_peer
from ..entities import world_labels
from ..ir import CIDRPeer, IPNetwork, Protocol, Rule, SelectorPeer

# Special-purpose ranges that are not reachable from the internet (IANA special-purpose registries):
# a rule that admits everything but these admits every public address.
_NOT_PUBLIC = {
    4: ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4"),
    6: ("::/127", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "3fff::/20", "fc00::/7",
        "fe80::/10", "ff00::/8"),
}
L4 = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)

Spans = list[tuple[int, int]]


def _span(net: IPNetwork) -> tuple[int, int]:
    return int(net.network_address), int(net.broadcast_address)


def _merge(spans) -> Spans:
    out: Spans = []
    for lo, hi in sorted(spans):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _minus(spans: Spans, holes: Spans) -> Spans:
    """``spans`` without ``holes`` (both merged, sorted)."""
    out: Spans = []
    for lo, hi in spans:
        for h_lo, h_hi in holes:
            if h_hi < lo or h_lo > hi:
                continue
            if h_lo > lo:
                out.append((lo, h_lo - 1))
            lo = h_hi + 1
            if lo > hi:
                break
        if lo <= hi:
            out.append((lo, hi))
    return out


def _cidr_spans(peer: CIDRPeer) -> Spans:
    return _minus([_span(peer.network)], _merge(_span(x) for x in peer.excepts))


def _peer_text(peer: SelectorPeer | CIDRPeer) -> str:
    """A peer as the CLI spells it; a rule that names no peer says so rather than printing an empty selector."""
    if isinstance(peer, SelectorPeer) and peer.kind == "wildcard":
        return "every peer (the rule names none)"
    return format_peer(peer)


def world_peers(rule: Rule) -> list[str]:
    """The rule's peers that together admit every public address of IPv4 or IPv6 (R2.10: a selector that
    matches world does, whatever else it names); empty when the rule does not."""
    out: list[str] = []
    for version in (4, 6):
        selectors = [p for p in rule.peers if isinstance(p, SelectorPeer)
                     and any(s.matches(world_labels(version)) for s in p.selectors)]
        if selectors:
            out += [n for n in map(_peer_text, selectors) if n not in out]
            continue
        cidrs = [p for p in rule.peers if isinstance(p, CIDRPeer) and p.network.version == version]
        whole = _span(ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0"))
        missing = _minus([whole], _merge(s for p in cidrs for s in _cidr_spans(p)))
        if cidrs and not _minus(missing, _merge(_span(ipaddress.ip_network(n)) for n in _NOT_PUBLIC[version])):
            out += [_peer_text(p) for p in cidrs]
    return out


def open_protocols(rule: Rule) -> list[Protocol]:
    """The L4 protocols on which the rule opens every port 1-65535 (an L3-only rule opens them all)."""
    out = []
    for proto in L4:
        spans = _merge((pm.first, pm.last) for pm in rule.ports
                       if pm.protocol in (proto, Protocol.ANY) and pm.name is None)
        if not _minus([(1, 65535)], spans):
            out.append(proto)
    return out
