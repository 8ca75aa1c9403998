"""Cheap syntactic over-approximations of "can these two rules meet the same flow?".

They are sound (False only when no flow can match both), so checks use them
to pick the few rules a Z3 query needs: each rule is compared with its
neighbours, never with the whole policy set, and never re-checked by removal.
"""
from __future__ import annotations

from collections import defaultdict

from ..entities import world_labels
from ..ir import (ANY_SOURCE, CIDRPeer, DefaultDeny, FQDNPeer, Op, Peer, PortMatch,
                  Protocol, Requirement, Rule, Selector, SelectorPeer)


def _excludes(a: Requirement, b: Requirement) -> bool:
    """No label set satisfies both (a label set holds one label per key)."""
    if a.key != b.key:
        return False
    positive = (Op.IN, Op.EXISTS)
    for x, y in ((a, b), (b, a)):
        same_source = y.source in (ANY_SOURCE, x.source)
        if x.op is Op.IN and y.op is Op.IN and not set(x.values) & set(y.values):
            return True
        if x.op in positive and y.op is Op.DOES_NOT_EXIST and same_source:
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


def rules_overlap(a: Rule, b: Rule, a_ports=None, b_ports=None) -> bool:
    """Some flow might match both rules (restricted to the given port entries)."""
    return (subjects_overlap(a, b)
            and any(ports_overlap(x, y) for x in (a_ports or a.ports) for y in (b_ports or b.ports))
            and any(peers_overlap(x, y) for x in a.peers for y in b.peers))


def namespace_of(sel: Selector) -> str | None:
    return sel.namespace


class Index:
    """Rules bucketed by direction, subject kind and subject namespace: neighbours come from two buckets."""

    def __init__(self, items):
        self.buckets: dict = defaultdict(list)
        for item in items:
            self.buckets[(item.direction, item.subject_kind, namespace_of(item.subject))].append(item)

    def near(self, direction, subject_kind, subject: Selector) -> list:
        """Items whose subject may overlap ``subject`` in ``direction``."""
        ns = namespace_of(subject)
        if ns is not None:
            keys = [(direction, subject_kind, ns), (direction, subject_kind, None)]
        else:
            keys = [k for k in self.buckets if k[:2] == (direction, subject_kind)]
        return [x for k in keys for x in self.buckets.get(k, ())
                if x.subject_kind is subject_kind and not selectors_disjoint(subject, x.subject)]
