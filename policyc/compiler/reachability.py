"""Which endpoint classes may reach which, per port: the evaluator's pair verdict as set algebra.

Endpoints that no policy can tell apart (same kind, labels, named ports, and addresses for
outside ones) form one class, so a question about thousands of pods is answered over a few
hundred classes.  `policyc matrix`, `paths`, `blast-radius` and `graph` all read these tables.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property

from .evaluate import (Evaluator, LabelIndex, Reason, matching_ports, peer_labels, peer_matches, speaks,
                       subject_labels)
from .ir import (Action, CIDRPeer, Direction, Endpoint, EndpointKind, PolicySet, Protocol, Rule, Selector,
                 SelectorPeer, SubjectKind)
from .portset import EVERY, MAX_PORT, NONE, PortSet, rule_ports
from .prefixes import PrefixIndex


@dataclass(frozen=True)
class Side:
    """What one direction of one endpoint allows toward one peer, over every port, and why.

    ``Evaluator.direction`` for every port at once: ``rules`` are the allow rules that allow some of
    ``ports``, ``denies`` the deny rules that took some away, and ``l7`` the part of ``ports`` that
    only an L7 filter lets through (the proxy sees every request, R9.1).
    """

    reason: Reason
    ports: PortSet
    l7: PortSet = NONE
    rules: tuple[Rule, ...] = ()
    denies: tuple[Rule, ...] = ()


OUTSIDE = Side(Reason.NOT_ENDPOINT, EVERY)
OPEN = Side(Reason.NOT_ENFORCED, EVERY)
LOCALHOST = Side(Reason.LOCALHOST, EVERY)


_union = PortSet.union


def _class_key(ep: Endpoint) -> tuple:
    """Endpoints with equal keys get equal verdicts: compute once per class, not per pod.

    Classes hold pods and addresses, never nodes, so a pod's node changes no verdict
    (only a node peer on the pod's own node would: R3.9).
    """
    return (ep.kind, subject_labels(ep), ep.identity.labels, ep.ports,
            ep.ips if ep.kind is EndpointKind.EXTERNAL else frozenset(ip.version for ip in ep.ips))


def possible_ports(a: Endpoint, b: Endpoint) -> PortSet:
    """Every port less ICMP where an end has no IPv4 address and ICMPv6 where one has no IPv6: such
    packets do not exist (``evaluate.possible``), so no edge or table may carry them."""
    gone = [p for p in (Protocol.ICMP, Protocol.ICMPV6) if not (speaks(a, p.family) and speaks(b, p.family))]
    return EVERY - PortSet.of([(p, 0, MAX_PORT) for p in gone]) if gone else EVERY


def classify(endpoints: list[Endpoint]) -> tuple[list[int], list[Endpoint]]:
    """The class number of every endpoint, and one representative endpoint per class."""
    numbers: dict[tuple, int] = {}
    cls = [numbers.setdefault(_class_key(ep), len(numbers)) for ep in endpoints]
    reps: list[Endpoint] = [None] * len(numbers)  # type: ignore[list-item]
    for ep, c in zip(endpoints, cls):
        reps[c] = reps[c] or ep
    return cls, reps


class ClassVerdicts:
    """Which classes may reach which, per port: the evaluator's decision (R4.4) as set algebra.

    Per subject class and direction, the peers a direction allows are all classes (not enforced) or
    the union of its matching allow rules' peer classes, less those of its matching deny rules.  A
    selector's classes are computed once, found through a label index, for subjects and peers alike.
    Pair by pair this equals ``Evaluator.evaluate`` on endpoints without nodes (tests/test_matrix.py).
    """

    def __init__(self, policy: PolicySet, reps: list[Endpoint]):
        if any(ep.kind is EndpointKind.NODE for ep in reps):
            raise ValueError("ClassVerdicts covers pods and addresses only")
        self.policy = policy
        self.reps = reps
        self._ports_cache: dict[tuple, PortSet] = {}
        self._side_cache: dict[tuple, Side] = {}
        self._names_cache: dict[tuple, bool] = {}
        self._pair_cache: dict[tuple, Side] = {}
        self.every = frozenset(range(len(reps)))
        outside = [c for c, ep in enumerate(reps) if ep.kind is EndpointKind.EXTERNAL]
        # CIDR peers find their classes by prefix (the graph has a class per CIDR the policies name),
        # toFQDNs peers among the addresses learned under a name
        self._addresses = PrefixIndex((ipaddress.ip_network(ip), c) for c in outside for ip in reps[c].ips)
        self._named = [c for c in outside if reps[c].dns_names]
        self._index = LabelIndex([ep.identity.labels for ep in reps])
        self._selector_cache: dict[Selector, frozenset[int]] = {}
        self._rule_cache: dict[int, frozenset[int]] = {}
        self._unnamed_cache: dict[int, frozenset[int]] = {}
        # (class, direction) -> (allow rules, deny rules, default-deny?), as Evaluator.subject selection
        self._subject: dict[tuple[int, Direction], tuple[list[Rule], list[Rule], bool]] = {
            (c, d): ([], [], False) for c in range(len(reps)) for d in Direction}
        for rule in policy.rules:
            for c in self._subjects(rule.subject_kind, rule.subject):
                self._subject[(c, rule.direction)][rule.action is Action.DENY].append(rule)
        for dd in policy.default_deny:
            for c in self._subjects(dd.subject_kind, dd.subject):
                allows, denies, _ = self._subject[(c, dd.direction)]
                self._subject[(c, dd.direction)] = (allows, denies, True)

    def _subjects(self, kind: SubjectKind, sel: Selector) -> list[int]:
        """Classes an endpointSelector selects (pods only: ``selects``); node selectors select none here."""
        if kind is not SubjectKind.ENDPOINT:
            return []
        return [c for c in self._selector_classes(sel) if self.reps[c].kind is EndpointKind.POD]

    def _selector_classes(self, sel: Selector) -> frozenset[int]:
        hit = self._selector_cache.get(sel)
        if hit is None:
            hit = self._selector_cache[sel] = frozenset(self._index.matching(sel))
        return hit

    def peer_classes(self, rule: Rule) -> frozenset[int]:
        """Classes matching any peer of ``rule`` (peer_matches, for non-node peers)."""
        hit = self._rule_cache.get(id(rule))
        if hit is None:
            out: set[int] = set()
            for peer in rule.peers:
                if isinstance(peer, SelectorPeer):
                    for sel in peer.selectors:
                        out |= self._selector_classes(sel)
                else:  # CIDR and FQDN peers only ever match addresses outside the cluster (R7.1)
                    near = self._addresses.within(peer.network) if isinstance(peer, CIDRPeer) else self._named
                    out |= {c for c in near if peer_matches(peer, self.reps[c], self.reps[c].identity.labels)}
            hit = self._rule_cache[id(rule)] = frozenset(out)
        return hit

    def unnamed(self, rule: Rule) -> frozenset[int]:
        """Classes ``rule`` does not name: few for a broad rule (``toEntities: [all]``, ``cluster``)."""
        hit = self._unnamed_cache.get(id(rule))
        if hit is None:
            hit = self._unnamed_cache[id(rule)] = self.every - self.peer_classes(rule)
        return hit

    def _rule_peers(self, rule: Rule, direction: Direction, subject: Endpoint, protocol: Protocol,
                    port: int) -> set[int] | frozenset[int]:
        """Peer classes ``rule`` matches on this port; named ports resolve at the destination (R8.4)."""
        if direction is Direction.INGRESS or all(pm.name is None for pm in rule.ports):
            dst = subject  # ingress: the subject is the destination; numbered ports ignore it
            return self.peer_classes(rule) if matching_ports(rule, protocol, port, dst) else frozenset()
        return {c for c in self.peer_classes(rule) if matching_ports(rule, protocol, port, self.reps[c])}

    def _allowed_peers(self, c: int, direction: Direction, protocol: Protocol, port: int) -> frozenset[int]:
        subject = self.reps[c]
        if subject.kind is EndpointKind.EXTERNAL:
            return self.every  # nothing enforces outside the cluster
        allows, denies, dd = self._subject[(c, direction)]
        denied = set().union(*(self._rule_peers(r, direction, subject, protocol, port) for r in denies))
        if not dd:
            return self.every - denied
        allowed = set().union(*(self._rule_peers(r, direction, subject, protocol, port) for r in allows))
        return frozenset(allowed - denied)

    def table(self, protocol: Protocol, port: int) -> list[frozenset[int]]:
        """For every source class, the destination classes it may reach (egress and ingress allow)."""
        n = len(self.reps)
        egress = [self._allowed_peers(c, Direction.EGRESS, protocol, port) for c in range(n)]
        admits: list[set[int]] = [set() for _ in range(n)]  # source class -> destinations admitting it
        for dst in range(n):
            for src in self._allowed_peers(dst, Direction.INGRESS, protocol, port):
                admits[src].add(dst)
        out = [egress[c] & admits[c] for c in range(n)]
        if protocol.family is None:
            return out
        speak = {c for c in range(n) if speaks(self.reps[c], protocol.family)}  # evaluate.possible
        return [frozenset(out[c] & speak) if c in speak else frozenset() for c in range(n)]

    # ---- every port at once: what the connectivity graph's edges carry

    def _ports(self, rule: Rule, dst: Endpoint, plain: bool = False) -> PortSet:
        """``rule_ports``, cached per rule and (for named ports only) destination's container ports."""
        key = (id(rule), dst.ports if any(pm.name for pm in rule.ports) else None, plain)
        hit = self._ports_cache.get(key)
        if hit is None:
            hit = self._ports_cache[key] = rule_ports(rule, dst, plain)
        return hit

    def decide(self, allows: list[Rule], denies: list[Rule], default_deny: bool, dst: Endpoint) -> Side:
        """One side over every port, from the allow and deny rules whose peers match (R4.4, R9.3).

        Remembered per rules and destination ports: most pairs of a large cluster repeat a few sides.
        """
        key = (tuple(map(id, allows)), tuple(map(id, denies)), default_deny, dst.ports)
        hit = self._side_cache.get(key)
        if hit is None:
            hit = self._side_cache[key] = self._decide(allows, denies, default_deny, dst)
        return hit

    def _decide(self, allows: list[Rule], denies: list[Rule], default_deny: bool, dst: Endpoint) -> Side:
        denied = _union(self._ports(r, dst) for r in denies)
        if not default_deny:
            return Side(Reason.NOT_ENFORCED, EVERY - denied, denies=tuple(r for r in denies if self._ports(r, dst)))
        allowed = _union(self._ports(r, dst) for r in allows)
        ports = allowed - denied
        plain = _union(self._ports(r, dst, True) for r in allows)
        return Side(Reason.ALLOWED, ports, ports - plain, tuple(r for r in allows if self._ports(r, dst) & ports),
                    tuple(r for r in denies if self._ports(r, dst) & allowed))

    def sides(self, c: int, direction: Direction) -> "Sides":
        """What ``direction`` of class ``c`` allows toward each peer class, over every port."""
        subject = self.reps[c]
        if subject.kind is EndpointKind.EXTERNAL:
            return Sides(self, direction, subject, (), (), False, OUTSIDE)
        allows, denies, dd = self._subject[(c, direction)]
        return Sides(self, direction, subject, tuple(allows), tuple(denies), dd, None if dd else OPEN)

    @cached_property
    def evaluator(self) -> Evaluator:
        return Evaluator(self.policy)

    def endpoint_side(self, direction: Direction, subject: Endpoint, peer: Endpoint, c: int | None = None) -> Side:
        """``sides`` for one pair of any endpoints, nodes included (``c``: the subject's class, if any).

        A node is ``host`` to the pods it runs and ``remote-node`` to the others, and always reaches
        its own pods (R3.9), so node pairs are decided one by one, as ``Evaluator.direction`` does.
        """
        if subject.kind is EndpointKind.EXTERNAL:
            return OUTSIDE
        if (direction is Direction.INGRESS and subject.kind is EndpointKind.POD
                and peer.kind is EndpointKind.NODE and subject.node == peer.name):
            return LOCALHOST
        labels = peer_labels(peer, subject)
        dst = peer if direction is Direction.EGRESS else subject
        key = (subject.name if c is None else c, direction, labels, peer.ips if peer.kind is EndpointKind.EXTERNAL
               else (), dst.ports)  # all a side depends on: the pods of a class are alike on every node
        hit = self._pair_cache.get(key)
        if hit is None:
            allows, denies, dd = self._subject[(c, direction)] if c is not None else \
                self.evaluator.subject_rules(subject, direction)
            hit = self._pair_cache[key] = self.decide([r for r in allows if self._names(r, peer, labels)],
                                                      [r for r in denies if self._names(r, peer, labels)], bool(dd),
                                                      dst)
        return hit

    def fits(self, rules: tuple[Rule, ...], broad: set[int], peer: Endpoint, labels: frozenset) -> bool:
        """Whether exactly the ``broad`` ones (by id) of ``rules`` name ``peer`` seen with ``labels``: then a
        uniform side of those rules decides the peer (``Uniform``), as it decides a class."""
        return all(self._names(r, peer, labels) == (id(r) in broad) for r in rules)

    def _names(self, rule: Rule, peer: Endpoint, labels: frozenset) -> bool:
        """Whether a peer of ``rule`` matches ``peer`` seen with ``labels``, remembered per label set."""
        key = (id(rule), labels, peer.ips if peer.kind is EndpointKind.EXTERNAL else ())
        hit = self._names_cache.get(key)
        if hit is None:
            hit = self._names_cache[key] = any(peer_matches(p, peer, labels) for p in rule.peers)
        return hit


@dataclass(frozen=True)
class Sides:
    """One direction of one class toward every peer class, decided when a peer is asked for.

    ``default`` is the side toward the peers no rule names (None: nothing is allowed), so a
    default-deny class costs its rules' peers and nothing is held per pair: most pairs one side
    names, the other side never admits.
    """

    verdicts: ClassVerdicts
    direction: Direction
    subject: Endpoint
    allows: tuple[Rule, ...]
    denies: tuple[Rule, ...]
    default_deny: bool
    default: Side | None

    def named(self) -> set[int]:
        """The peer classes some allow rule names (those a default-deny side may allow)."""
        return set().union(*(self.verdicts.peer_classes(r) for r in self.allows))

    def names(self, peer: int) -> bool:
        return any(peer in self.verdicts.peer_classes(r) for r in self.allows + self.denies)

    def uniform(self) -> "Uniform | None":
        """The side toward most peers, and the peers it does not decide (None: it allows none of them).

        A rule that names more than half the classes is broad; the peers that every broad rule
        names and no other rule names are decided alike, by the broad rules alone (the side's
        default when there are none).  The exceptions are the rest: what each broad rule leaves
        out and what each other rule names, so they cost the smaller part of every rule, and an
        allow-all beside a few denies (Cilium's advice for deny policies) costs the denies' peers.
        Only deny rules decide a side that is not enforced.
        """
        v = self.verdicts
        rules = self.allows + self.denies if self.default_deny else self.denies
        broad = {id(r) for r in rules if 2 * len(v.peer_classes(r)) > len(v.reps)}
        allows = tuple(r for r in self.allows if id(r) in broad)
        if self.default_deny and not allows:
            return None
        parts = [v.unnamed(r) if id(r) in broad else v.peer_classes(r) for r in rules]
        exceptions = frozenset().union(*parts) if len(parts) != 1 else parts[0]
        denies = tuple(r for r in self.denies if id(r) in broad)
        sides = Sides(v, self.direction, self.subject, allows, denies, self.default_deny, self.default)
        group = (self.default is OUTSIDE, tuple(map(id, allows)), tuple(map(id, denies)), self.default_deny)
        return Uniform(sides, exceptions, group, any(pm.name for r in allows + denies for pm in r.ports))

    def get(self, peer: int) -> Side | None:
        if not self.names(peer):
            return self.default
        dst = self.verdicts.reps[peer] if self.direction is Direction.EGRESS else self.subject
        hit = lambda rules: [r for r in rules if peer in self.verdicts.peer_classes(r)]  # noqa: E731
        return self.verdicts.decide(hit(self.allows), hit(self.denies), self.default_deny, dst)


def open_uniform(verdicts: ClassVerdicts, direction: Direction, subject: Endpoint) -> "Uniform":
    """The side of an endpoint no rule selects in ``direction`` (a node without host policy): open to all."""
    return Uniform(Sides(verdicts, direction, subject, (), (), False, OPEN), frozenset(), (False, (), (), False), False)


@dataclass(frozen=True)
class Uniform:
    """One direction of one class toward every peer but its ``exceptions`` (classes): ``sides.get`` of
    any of them is the same side, but for the peer's named ports (``named_ports``: a broad rule names
    a port).  Classes of equal ``group`` decide alike toward every peer that is not an exception."""

    sides: Sides
    exceptions: frozenset[int]
    group: tuple
    named_ports: bool

    def side(self, peer: Endpoint) -> Side:
        """The side toward any peer that is no exception (``peer``: its representative)."""
        s = self.sides
        if s.default is OUTSIDE:
            return OUTSIDE
        dst = peer if s.direction is Direction.EGRESS else s.subject
        return s.verdicts.decide(list(s.allows), list(s.denies), s.default_deny, dst)


def tables(policy: PolicySet, endpoints: list[Endpoint], ports: list[tuple[int, Protocol]]):
    """Per port ``(port, protocol, cls, allowed)``: endpoint i reaches j iff ``cls[j] in allowed[cls[i]]``."""
    cls, reps = classify(endpoints)
    verdicts = ClassVerdicts(policy, reps)
    for port, protocol in ports:
        yield port, protocol, cls, verdicts.table(protocol, port)
