"""The concrete evaluator: the executable specification of one flow's verdict.

A connection S→D on (protocol, port) is allowed iff S's egress and D's ingress
allow it (R3.8, R11.4).  One direction of one endpoint decides (R4.4):
a matching deny rule drops; an endpoint not switched to default-deny allows;
otherwise a matching allow rule allows and nothing else does.

The Z3 encoding and the datapath lowering are held against this module.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .entities import reserved_label
from .ir import (ANY_SOURCE, NAMESPACE_KEY, Action, CIDRPeer, DefaultDeny, Direction, Endpoint,
                 EndpointKind, FQDNPeer, L7Rules, Op, Peer, PolicySet, PortMatch,
                 Protocol, Rule, Selector, SelectorPeer, SubjectKind, pending_scope)


class Reason(str, enum.Enum):
    SELF = "self"                    # R11.5: a pod talking to itself never meets policy
    NOT_ENDPOINT = "not-an-endpoint"  # outside the cluster nothing enforces
    LOCALHOST = "allow-localhost"    # R3.9: the local node may always reach its pods
    NOT_ENFORCED = "not-enforced"    # R3.5: no policy switched this direction to default-deny
    DENIED = "denied-by-rule"        # R4.2
    ALLOWED = "allowed-by-rule"      # R4.1
    DEFAULT_DENY = "default-deny"    # R3.4


@dataclass(frozen=True)
class DirectionVerdict:
    direction: Direction
    subject: Endpoint
    action: Action
    reason: Reason
    rules: tuple[Rule, ...] = ()
    default_deny: tuple[DefaultDeny, ...] = ()
    l7: tuple[L7Rules, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW


@dataclass(frozen=True)
class Flow:
    src: Endpoint
    dst: Endpoint
    protocol: Protocol
    port: int


@dataclass(frozen=True)
class Verdict:
    flow: Flow
    egress: DirectionVerdict
    ingress: DirectionVerdict

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    @property
    def action(self) -> Action:
        return Action.ALLOW if self.allowed else Action.DENY

    @property
    def l7(self) -> tuple[L7Rules, ...]:
        """L7 filters the flow is subject to; non-empty means its requests are proxied (R9.1)."""
        return self.egress.l7 + self.ingress.l7


def subject_labels(ep: Endpoint) -> frozenset:
    """Labels a subject selector sees: the host endpoint is ``reserved:host`` plus node labels."""
    if ep.kind is EndpointKind.NODE:
        return frozenset(lab for lab in ep.identity.labels if lab.source != "reserved") | {reserved_label("host")}
    return ep.identity.labels


def selects(rule_subject_kind: SubjectKind, selector, ep: Endpoint) -> bool:
    """endpointSelector rules select pods, nodeSelector rules the host endpoint (R2.7)."""
    wanted = EndpointKind.POD if rule_subject_kind is SubjectKind.ENDPOINT else EndpointKind.NODE
    return ep.kind is wanted and selector.matches(subject_labels(ep))


def peer_labels(peer: Endpoint, subject: Endpoint) -> frozenset:
    """The labels ``subject`` sees for ``peer``: its own node is ``host``, other nodes ``remote-node``."""
    if peer.kind is EndpointKind.NODE and subject.node == peer.name:
        return frozenset({reserved_label("host")})
    return peer.identity.labels


def peer_matches(peer: Peer, ep: Endpoint, labels: frozenset, pending: str | None = None,
                 possibly: bool = False) -> bool:
    """``pending``: the scope of a peer whose labels are not known yet; then an allow needs a selector that
    matches whatever they turn out to be, and a deny (``possibly``) one that may match (docs/agent.md)."""
    if isinstance(peer, SelectorPeer):
        if pending:
            return any(sel.bounds(labels, pending)[possibly] for sel in peer.selectors)
        return any(sel.matches(labels) for sel in peer.selectors)
    if isinstance(peer, CIDRPeer):  # R7.1: CIDRs only ever select addresses outside the cluster
        return ep.kind is EndpointKind.EXTERNAL and any(peer.contains(ip) for ip in ep.ips)
    assert isinstance(peer, FQDNPeer)
    return False  # R10.2c: nothing is known to resolve statically


def port_matches(pm: PortMatch, protocol: Protocol, port: int, dst: Endpoint, possibly: bool = False) -> bool:
    """A named port of a pending destination is unknown: it may be any port (a deny, ``possibly``), it is
    none for sure (an allow)."""
    if pm.protocol is not Protocol.ANY and pm.protocol is not protocol:
        return False
    if pm.name is None:
        return pm.first <= port <= pm.last
    if pending_scope(dst.identity.labels):
        return possibly
    return any(np.name == pm.name and np.port == port and np.protocol is protocol for np in dst.ports)


def matching_ports(rule: Rule, protocol: Protocol, port: int, dst: Endpoint) -> tuple[PortMatch, ...]:
    return tuple(pm for pm in rule.ports if port_matches(pm, protocol, port, dst, rule.action is Action.DENY))


def rule_matches(rule: Rule, peer: Endpoint, labels: frozenset, protocol: Protocol, port: int,
                 dst: Endpoint, pending: str | None = None) -> bool:
    possibly = rule.action is Action.DENY
    return bool(matching_ports(rule, protocol, port, dst)) and any(
        peer_matches(p, peer, labels, pending, possibly) for p in rule.peers)


def _by_namespace(items) -> dict[str | None, list[int]]:
    """Positions of rules (or default-deny entries) by the one namespace their subject requires."""
    out: dict[str | None, list[int]] = {}
    for i, item in enumerate(items):
        out.setdefault(item.subject.namespace, []).append(i)
    return out


def _candidates(items, buckets: dict, labels: frozenset) -> list:
    """Items that may select a subject with ``labels``: those of its namespace and those of none, in order."""
    namespaces = {lab.value for lab in labels if lab.key == NAMESPACE_KEY}
    return [items[i] for i in sorted(buckets.get(None, []) + [i for ns in namespaces for i in buckets.get(ns, [])])]


class LabelIndex:
    """Which of many label sets a selector matches, without testing every set.

    An ``In`` requirement holds only for sets carrying one of its labels, so the index narrows to
    those and only they are matched in full (``Selector.matches`` stays the judge).
    """

    def __init__(self, label_sets: list[frozenset]):
        self.label_sets = label_sets
        self._by_label: dict[tuple[str, str, str], set[int]] = {}
        for i, labels in enumerate(label_sets):
            for lab in labels:
                self._by_label.setdefault((lab.source, lab.key, lab.value), set()).add(i)
                self._by_label.setdefault((ANY_SOURCE, lab.key, lab.value), set()).add(i)

    def matching(self, sel: Selector) -> list[int]:
        """Positions of the label sets ``sel`` matches, ascending."""
        candidates: set[int] | None = None
        for req in sel.requirements:
            if req.op is Op.IN:
                hit = set().union(*(self._by_label.get((req.source, req.key, v), ()) for v in req.values))
                candidates = hit if candidates is None else candidates & hit
        pool = range(len(self.label_sets)) if candidates is None else sorted(candidates)
        return [i for i in pool if sel.matches(self.label_sets[i])]


class Evaluator:
    """Verdicts over one policy set, with the per-subject rule selection cached.

    Subjects are tested only against rules whose subject may be in their namespace (a pod carries its
    namespace as a label), which keeps large policy sets cheap without changing any answer.
    """

    def __init__(self, policy: PolicySet):
        self.policy = policy
        self._subject_cache: dict[tuple, tuple] = {}
        self.rule_number = {id(r): n + 1 for n, r in enumerate(policy.rules)}  # 1-based, as the datapath counts
        self._rule_buckets = _by_namespace(policy.rules)
        self._dd_buckets = _by_namespace(policy.default_deny)

    def subject_rules(self, subject: Endpoint, direction: Direction):
        """(allow rules, deny rules, default-deny entries) selecting ``subject`` in ``direction``, cached per labels."""
        key = (subject.kind, subject_labels(subject), direction)
        hit = self._subject_cache.get(key)
        if hit is None:
            labels = key[1]
            scope = pending_scope(labels) if subject.kind is EndpointKind.POD else None
            if scope:  # allows must select whatever the labels turn out to be; denies and default-deny may
                picks = lambda item, possibly: (item.subject_kind is SubjectKind.ENDPOINT  # noqa: E731
                                                and item.subject.bounds(labels, scope)[possibly])
            else:
                picks = lambda item, possibly: selects(item.subject_kind, item.subject, subject)  # noqa: E731
            rules = [r for r in _candidates(self.policy.rules, self._rule_buckets, labels)
                     if r.direction is direction and picks(r, r.action is Action.DENY)]
            hit = (tuple(r for r in rules if r.action is Action.ALLOW),
                   tuple(r for r in rules if r.action is Action.DENY),
                   tuple(d for d in _candidates(self.policy.default_deny, self._dd_buckets, labels)
                         if d.direction is direction and picks(d, True)))
            self._subject_cache[key] = hit
        return hit

    def is_default_deny(self, subject: Endpoint, direction: Direction) -> bool:
        return bool(self.subject_rules(subject, direction)[2])

    def direction(self, direction: Direction, subject: Endpoint, peer: Endpoint,
                  protocol: Protocol, port: int, dst: Endpoint) -> DirectionVerdict:
        """One side's verdict; ``dst`` resolves named ports (R8.4)."""
        def verdict(action: Action, reason: Reason, rules=(), dd=(), l7=()) -> DirectionVerdict:
            return DirectionVerdict(direction, subject, action, reason, tuple(rules), tuple(dd), tuple(l7))

        if subject.kind is EndpointKind.EXTERNAL:
            return verdict(Action.ALLOW, Reason.NOT_ENDPOINT)
        labels = peer_labels(peer, subject)
        if (direction is Direction.INGRESS and subject.kind is EndpointKind.POD
                and peer.kind is EndpointKind.NODE and subject.node == peer.name):
            return verdict(Action.ALLOW, Reason.LOCALHOST)
        allows, denies, dd = self.subject_rules(subject, direction)
        pending = pending_scope(labels) if peer.kind is EndpointKind.POD else None
        denied = [r for r in denies if rule_matches(r, peer, labels, protocol, port, dst, pending)]
        if denied:
            return verdict(Action.DENY, Reason.DENIED, denied)
        if not dd:
            return verdict(Action.ALLOW, Reason.NOT_ENFORCED)
        allowed = [r for r in allows if rule_matches(r, peer, labels, protocol, port, dst, pending)]
        if not allowed:
            return verdict(Action.DENY, Reason.DEFAULT_DENY, dd=dd)
        return verdict(Action.ALLOW, Reason.ALLOWED, allowed, l7=_l7_filters(allowed, protocol, port, dst))

    def near_misses(self, v: DirectionVerdict, flow: Flow) -> list[tuple[Rule, str]]:
        """For a default-deny verdict, the allow rules of that side that match all but one part of the
        flow: the peer but not the port ("port"), or the port but not the peer ("peer")."""
        if v.reason is not Reason.DEFAULT_DENY:
            return []
        peer = flow.dst if v.direction is Direction.EGRESS else flow.src
        labels = peer_labels(peer, v.subject)
        out = []
        for rule in self.subject_rules(v.subject, v.direction)[0]:
            peer_ok = any(peer_matches(p, peer, labels) for p in rule.peers)
            port_ok = bool(matching_ports(rule, flow.protocol, flow.port, flow.dst))
            if peer_ok != port_ok:
                out.append((rule, "port" if peer_ok else "peer"))
        return out

    def evaluate(self, flow: Flow) -> Verdict:
        src, dst = flow.src, flow.dst
        if src == dst:
            ok = lambda d, s: DirectionVerdict(d, s, Action.ALLOW, Reason.SELF)  # noqa: E731
            return Verdict(flow, ok(Direction.EGRESS, src), ok(Direction.INGRESS, dst))
        egress = self.direction(Direction.EGRESS, src, dst, flow.protocol, flow.port, dst)
        ingress = self.direction(Direction.INGRESS, dst, src, flow.protocol, flow.port, dst)
        return Verdict(flow, egress, ingress)


def _l7_filters(allowed: list[Rule], protocol: Protocol, port: int, dst: Endpoint) -> tuple[L7Rules, ...]:
    """The union of L7 filters; any matching entry without L7 makes it an allow-all (R9.3)."""
    ports = [pm for r in allowed for pm in matching_ports(r, protocol, port, dst)]
    if any(pm.l7 is None for pm in ports):
        return ()
    return tuple(dict.fromkeys(pm.l7 for pm in ports))


def evaluate(policy: PolicySet, flow: Flow) -> Verdict:
    return Evaluator(policy).evaluate(flow)
