"""Which endpoint classes may reach which, per port: the evaluator's pair verdict as set algebra.

Endpoints that no policy can tell apart (same kind, labels, named ports, and addresses for
outside ones) form one class, so a question about thousands of pods is answered over a few
hundred classes.  `policyc matrix`, `paths`, `blast-radius` and `graph` all read these tables.
"""
from __future__ import annotations

from .evaluate import LabelIndex, matching_ports, peer_matches, subject_labels
from .ir import (Action, Direction, Endpoint, EndpointKind, PolicySet, Protocol, Rule, Selector,
                 SelectorPeer, SubjectKind)


def _class_key(ep: Endpoint) -> tuple:
    """Endpoints with equal keys get equal verdicts: compute once per class, not per pod.

    Classes hold pods and addresses, never nodes, so a pod's node changes no verdict
    (only a node peer on the pod's own node would: R3.9).
    """
    return (ep.kind, subject_labels(ep), ep.identity.labels, ep.ports,
            ep.ips if ep.kind is EndpointKind.EXTERNAL else ())


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
        self.reps = reps
        self.every = frozenset(range(len(reps)))
        self._outside = [c for c, ep in enumerate(reps) if ep.kind is EndpointKind.EXTERNAL]
        self._index = LabelIndex([ep.identity.labels for ep in reps])
        self._selector_cache: dict[Selector, frozenset[int]] = {}
        self._rule_cache: dict[int, frozenset[int]] = {}
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

    def _peer_classes(self, rule: Rule) -> frozenset[int]:
        """Classes matching any peer of ``rule`` (peer_matches, for non-node peers)."""
        hit = self._rule_cache.get(id(rule))
        if hit is None:
            out: set[int] = set()
            for peer in rule.peers:
                if isinstance(peer, SelectorPeer):
                    for sel in peer.selectors:
                        out |= self._selector_classes(sel)
                else:  # CIDR and FQDN peers only ever match addresses outside the cluster (R7.1)
                    out |= {c for c in self._outside if peer_matches(peer, self.reps[c], self.reps[c].identity.labels)}
            hit = self._rule_cache[id(rule)] = frozenset(out)
        return hit

    def _rule_peers(self, rule: Rule, direction: Direction, subject: Endpoint, protocol: Protocol,
                    port: int) -> set[int] | frozenset[int]:
        """Peer classes ``rule`` matches on this port; named ports resolve at the destination (R8.4)."""
        if direction is Direction.INGRESS or all(pm.name is None for pm in rule.ports):
            dst = subject  # ingress: the subject is the destination; numbered ports ignore it
            return self._peer_classes(rule) if matching_ports(rule, protocol, port, dst) else frozenset()
        return {c for c in self._peer_classes(rule) if matching_ports(rule, protocol, port, self.reps[c])}

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
        return [egress[c] & admits[c] for c in range(n)]


def tables(policy: PolicySet, endpoints: list[Endpoint], ports: list[tuple[int, Protocol]]):
    """Per port ``(port, protocol, cls, allowed)``: endpoint i reaches j iff ``cls[j] in allowed[cls[i]]``."""
    cls, reps = classify(endpoints)
    verdicts = ClassVerdicts(policy, reps)
    for port, protocol in ports:
        yield port, protocol, cls, verdicts.table(protocol, port)
