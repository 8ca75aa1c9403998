"""The concrete evaluator: the executable specification of one flow's verdict.

A connection S→D on (protocol, port) is allowed iff S's egress and D's ingress
allow it (R3.8, R11.4).  One direction of one endpoint decides (R4.4):
a matching deny rule drops; an endpoint not switched to default-deny allows;
otherwise a matching allow rule allows and nothing else does.

The Z3 encoding and the datapath lowering are held against this module.
"""
from __future__ import annotations

import enum
import functools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

from .entities import reserved_label
from .ir import (ANY_SOURCE, Action, CIDRPeer, DefaultDeny, Direction, Endpoint,
                 EndpointKind, FQDNPeer, HTTPRule, L7Rules, Op, Peer, PolicySet, PortMatch,
                 Protocol, Rule, Selector, SelectorPeer, SubjectKind, PENDING_SCOPES, pending_scope)


class Reason(str, enum.Enum):
    SELF = "self"                    # R11.5: a pod talking to itself never meets policy
    NOT_ENDPOINT = "not-an-endpoint"  # outside the cluster nothing enforces
    LOCALHOST = "allow-localhost"    # R3.9: the local node may always reach its pods
    NOT_ENFORCED = "not-enforced"    # R3.5: no policy switched this direction to default-deny
    DENIED = "denied-by-rule"        # R4.2
    ALLOWED = "allowed-by-rule"      # R4.1
    DEFAULT_DENY = "default-deny"    # R3.4
    HAIRPIN = "hairpin"              # R11.6: a pod reaching itself through its Service (services.py)
    AUTH_REQUIRED = "authentication-required"  # R10.11: an allowing rule wants a handshake that failed
    REQUEST_DENIED = "request-denied"  # R9.2: the connection reaches the proxy, which refuses this request
    NO_PACKET = "no-such-packet"     # ICMP(v6) between ends without an address of its IP version


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
class Request:
    """One L7 request: HTTP method, path and host, or a DNS query name.

    ``assumed`` decides the parts of filters policyc cannot read (header
    matches, Kafka and generic rules, patterns outside the analysed regex
    subset), keyed by ``opaque_key``: a request satisfies such a part only
    when it says so.  The verifier decodes its witnesses with every part it
    left free, so the evaluator replays them to the same verdict.
    """

    method: str = ""
    path: str = ""
    host: str = ""
    dns: str = ""
    assumed: tuple[tuple[str, bool], ...] = ()

    def decides(self, key: str) -> bool | None:
        return dict(self.assumed).get(key)

    def keep(self, kinds) -> "Request":
        """Only the parts filters of these kinds (http, dns) read: what a witness shows."""
        http = "http" in kinds
        return replace(self, method=self.method if http else "", path=self.path if http else "",
                       host=self.host if http else "", dns=self.dns if "dns" in kinds else "")


def opaque_key(kind: str, value) -> str:
    """The name of an opaque filter part, shared by the evaluator and the Z3 encoding."""
    return f"{kind}:{value}"


@dataclass(frozen=True)
class Flow:
    """The first packet of a connection; ``request`` (if any) is what it asks an L7 proxy.

    ``authenticated``: whether the mutual-authentication handshake between the
    two ends succeeds (R10.11); concrete answers assume it does.
    """

    src: Endpoint
    dst: Endpoint
    protocol: Protocol
    port: int
    request: Request | None = None
    authenticated: bool = True


def speaks(ep: Endpoint, version: int) -> bool:
    """An endpoint with addresses sends and receives only their IP versions; one without any may use either."""
    return not ep.ips or any(ip.version == version for ip in ep.ips)


def possible(flow: Flow) -> bool:
    """ICMP travels on IPv4 and ICMPv6 on IPv6 only: other flows of those protocols are no packets at all."""
    family = flow.protocol.family
    return family is None or (speaks(flow.src, family) and speaks(flow.dst, family))


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


_DNS_CHAR = "[-a-z0-9_]"


def fqdn_regex(match_name: str | None, match_pattern: str | None) -> str:
    """A toFQDNs or DNS-rule name as a regex over lower-case names without the trailing dot (R10.2).

    ``*`` stands for zero or more DNS characters within one label, a lone ``*``
    for every name, a leading ``**.`` for one or more labels.  The result stays
    inside the regex subset the verifier translates (verify/regex.py).
    """
    if match_name is not None:
        return "".join(c if c.isalnum() else "\\" + c for c in match_name)
    pattern = match_pattern or ""
    if pattern == "*":
        return "[-a-z0-9_.]+"
    head = ""
    if pattern.startswith("**."):
        head, pattern = f"({_DNS_CHAR}+\\.)+", pattern[3:]
    return head + "".join(f"{_DNS_CHAR}*" if c == "*" else c if c.isalnum() else "\\" + c for c in pattern)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str):
    try:
        return re.compile(pattern)
    except re.error:
        return None


def _full_match(pattern: str, value: str) -> bool:
    compiled = _compiled(pattern)
    return bool(compiled and compiled.fullmatch(value))


def fqdn_matches(peer: FQDNPeer, name: str) -> bool:
    return _full_match(fqdn_regex(peer.match_name, peer.match_pattern), name)


ALWAYS_FAIL = "test-always-fail"  # Cilium's handler for it returns an error on every handshake (pkg/auth)


def sees_lookups(rule: Rule) -> bool:
    """A rule whose DNS L7 filter sends its subject's lookups through the proxy: only then does
    Cilium learn addresses for toFQDNs peers (R10.1, PC014)."""
    return rule.action is Action.ALLOW and any(pm.l7 is not None and pm.l7.kind == "dns" for pm in rule.ports)


def peer_matches(peer: Peer, ep: Endpoint, labels: frozenset, names: bool = True, pending: str | None = None,
                 possibly: bool = False) -> bool:
    """``names``: whether the subject's lookups are proxied, so that toFQDNs peers can match at all.
    ``pending``: the scope of a peer whose labels are not known yet; then an allow needs a selector that
    matches whatever they turn out to be, and a deny (``possibly``) one that may match (docs/agent.md)."""
    if isinstance(peer, SelectorPeer):
        if pending:
            return any(sel.bounds(labels, pending)[possibly] for sel in peer.selectors)
        return any(sel.matches(labels) for sel in peer.selectors)
    if isinstance(peer, CIDRPeer):  # R7.1: CIDRs only ever select addresses outside the cluster
        return ep.kind is EndpointKind.EXTERNAL and any(peer.contains(ip) for ip in ep.ips)
    assert isinstance(peer, FQDNPeer)  # R10.3: outside the cluster, through a name it was learned under
    return names and ep.kind is EndpointKind.EXTERNAL and any(fqdn_matches(peer, n) for n in ep.dns_names)


def _field_admits(pattern: str | None, value: str, request: Request) -> bool:
    """An HTTP field regex against the whole value (R9.2); an omitted field matches anything."""
    if not pattern:
        return True
    assumed = request.decides(opaque_key("regex", pattern))
    return assumed if assumed is not None else _full_match(pattern, value)


def _http_admits(rule: HTTPRule, request: Request) -> bool:
    return (_field_admits(rule.method, request.method, request) and _field_admits(rule.path, request.path, request)
            and _field_admits(rule.host, request.host, request)
            and all(request.decides(opaque_key("header", h)) for h in rule.header_parts))


def l7_admits(l7: L7Rules | None, request: Request) -> bool:
    """Whether one port entry's L7 filter lets ``request`` through; no filter lets everything (R9.3)."""
    if l7 is None:
        return True
    if l7.kind == "http":
        return any(_http_admits(h, request) for h in l7.http)
    if l7.kind == "dns":
        return any(_full_match(fqdn_regex(d.match_name, d.match_pattern), request.dns) for d in l7.dns)
    return bool(request.decides(opaque_key("l7", l7)))


def port_admits(pm: PortMatch, request: Request) -> bool:
    """Whether one port entry lets ``request`` through: its L7 filter and every TLS condition, an
    opaque part the request decides (without a request, concrete answers ignore TLS: L3/L4 only)."""
    return l7_admits(pm.l7, request) and all(request.decides(opaque_key("tls", t)) for t in pm.tls)


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


def matching_ports(rule: Rule, protocol: Protocol, port: int, dst: Endpoint,
                   possibly: bool | None = None) -> tuple[PortMatch, ...]:
    """``possibly``: what may match for a pending end; by default a deny's question (it may), an allow's
    (it must)."""
    possibly = rule.action is Action.DENY if possibly is None else possibly
    return tuple(pm for pm in rule.ports if port_matches(pm, protocol, port, dst, possibly))


def rule_matches(rule: Rule, peer: Endpoint, labels: frozenset, protocol: Protocol, port: int,
                 dst: Endpoint, names: bool = True, pending: str | None = None, possibly: bool | None = None) -> bool:
    possibly = rule.action is Action.DENY if possibly is None else possibly
    return bool(matching_ports(rule, protocol, port, dst, possibly)) and any(
        peer_matches(p, peer, labels, names, pending=pending, possibly=possibly) for p in rule.peers)


class SubjectBuckets:
    """Rules (or default-deny entries) by one ``In`` requirement of their subject, so that the items that
    may select a label set are found from its labels instead of by testing every item.

    Each item sits under the values of its requirement naming the rarest labels (a pod's namespace
    rather than an app name repeated in every namespace); items without an ``In`` requirement are
    candidates for every label set.  ``selects`` stays the judge.

    A pending pod lacks the labels it will get, so an item anchored on one of those may still select
    it: such items are candidates for every pending label set of that scope (``bounds`` judges them).
    """

    def __init__(self, items, selector: Callable = lambda item: item.subject):
        ins = [[r for r in selector(item).requirements if r.op is Op.IN] for item in items]
        freq = Counter((r.key, v) for reqs in ins for r in reqs for v in set(r.values))
        self._buckets: dict[tuple[str, str], list[int]] = {}
        self._everywhere: list[int] = []
        self._unknown: dict[str, list[int]] = {scope: [] for scope in PENDING_SCOPES}
        for i, reqs in enumerate(ins):
            if not reqs:
                self._everywhere.append(i)
                continue
            anchor = min(reqs, key=lambda r: sum(freq[(r.key, v)] for v in set(r.values)))
            for v in set(anchor.values):
                self._buckets.setdefault((anchor.key, v), []).append(i)
            for scope in PENDING_SCOPES:
                if not anchor.known_when_pending(scope):
                    self._unknown[scope].append(i)

    def candidates(self, labels: frozenset, pending: str | None = None) -> list[int]:
        """Positions of the items whose subject may select ``labels`` (of a pod pending in scope
        ``pending``, if given), ascending."""
        hits = set(self._everywhere)
        if pending:
            hits.update(self._unknown[pending])
        for lab in labels:
            hits.update(self._buckets.get((lab.key, lab.value), ()))
        return sorted(hits)


class PeerBuckets:
    """Rules by the ``In`` requirements of their selector peers, so that the rules a new label set may be a
    peer of (a relabel to labels no pod holds) come from its labels instead of testing every rule.
    CIDR and FQDN peers never match a pod's identity; the caller's peer test stays the judge."""

    def __init__(self, rules: tuple[Rule, ...]):
        self._rules = rules
        self._pairs = [(n, sel) for n, r in enumerate(rules) for p in r.peers if isinstance(p, SelectorPeer)
                       for sel in p.selectors]
        self._buckets = SubjectBuckets(self._pairs, selector=lambda pair: pair[1])

    def candidates(self, labels: frozenset, pending: str | None = None) -> list[Rule]:
        """The rules with a selector peer that may match ``labels``, in policy order."""
        found = {self._pairs[i][0] for i in self._buckets.candidates(labels, pending)}
        return [self._rules[n] for n in sorted(found)]


class LabelIndex:
    """Which of many label sets a selector matches, without testing every set.

    An ``In`` requirement holds only for sets carrying one of its labels, an ``Exists`` only for sets
    carrying its key, so the index narrows to those and only they are matched in full
    (``Selector.matches`` stays the judge).
    """

    def __init__(self, label_sets: list[frozenset]):
        self.label_sets: list[frozenset] = []
        self._slot: dict[frozenset, int] = {}  # equal sets (100,000 CIDR identities share one) once
        self._distinct: list[frozenset] = []
        self._positions: list[list[int]] = []
        self._by_label: dict[tuple[str, str, str], set[int]] = {}
        self._by_key: dict[tuple[str, str], set[int]] = {}
        for labels in label_sets:
            self.add(labels)

    def add(self, labels: frozenset) -> int:
        """Append a label set (an agent's index grows as pods take new labels); its position."""
        at = len(self.label_sets)
        self.label_sets.append(labels)
        d = self._slot.get(labels)
        if d is None:
            d = self._slot[labels] = len(self._distinct)
            self._distinct.append(labels)
            self._positions.append([])
            for lab in labels:
                for source in (lab.source, ANY_SOURCE):
                    self._by_label.setdefault((source, lab.key, lab.value), set()).add(d)
                    self._by_key.setdefault((source, lab.key), set()).add(d)
        self._positions[d].append(at)
        return at

    def __contains__(self, labels: frozenset) -> bool:
        return labels in self._slot

    def _holders(self, req) -> set[int] | None:
        """The sets ``req`` can hold for, or None when it may hold for sets without its key."""
        if req.op is Op.IN:
            return set().union(*(self._by_label.get((req.source, req.key, v), ()) for v in req.values))
        if req.op is Op.EXISTS:
            return self._by_key.get((req.source, req.key), set())
        return None

    def matching(self, sel: Selector) -> list[int]:
        """Positions of the label sets ``sel`` matches, ascending."""
        narrowed = [h for h in map(self._holders, sel.requirements) if h is not None]
        if not narrowed:
            pool = range(len(self._distinct))
        else:
            smallest = min(narrowed, key=len)
            pool = smallest.intersection(*(h for h in narrowed if h is not smallest))
        return sorted(i for d in pool if sel.matches(self._distinct[d]) for i in self._positions[d])


class Evaluator:
    """Verdicts over one policy set, with the per-subject rule selection cached.

    Subjects are tested only against the rules ``SubjectBuckets`` finds from their labels, which keeps
    large policy sets cheap without changing any answer.
    """

    def __init__(self, policy: PolicySet):
        self.policy = policy
        self._subject_cache: dict[tuple, tuple] = {}
        self.rule_number = {id(r): n + 1 for n, r in enumerate(policy.rules)}  # 1-based, as the datapath counts
        self._rule_buckets = SubjectBuckets(policy.rules)
        self._dd_buckets = SubjectBuckets(policy.default_deny)

    def subject_rules(self, subject: Endpoint, direction: Direction):
        """(allow rules, deny rules, default-deny entries) selecting ``subject`` in ``direction``, cached per labels."""
        return self._selection(subject, direction)[:3]

    def possible_allows(self, subject: Endpoint, direction: Direction) -> tuple[Rule, ...]:
        """The allow rules that may select ``subject``: those that do, and for a pod whose labels are not known
        yet those whose selector needs them (``subject_rules`` keeps only the former: an allow must hold
        whatever the labels turn out to be)."""
        return self._selection(subject, direction)[3]

    def _selection(self, subject: Endpoint, direction: Direction):
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

            def selecting(items, buckets, possibly):
                return [x for x in map(items.__getitem__, buckets.candidates(labels, scope))
                        if x.direction is direction and picks(x, possibly(x))]
            may = selecting(self.policy.rules, self._rule_buckets, lambda r: True)
            hit = (tuple(r for r in may if r.action is Action.ALLOW and (not scope or picks(r, False))),
                   tuple(r for r in may if r.action is Action.DENY),
                   tuple(selecting(self.policy.default_deny, self._dd_buckets, lambda d: True)),
                   tuple(r for r in may if r.action is Action.ALLOW))
            self._subject_cache[key] = hit
        return hit

    def is_default_deny(self, subject: Endpoint, direction: Direction) -> bool:
        return bool(self.subject_rules(subject, direction)[2])

    def direction(self, direction: Direction, subject: Endpoint, peer: Endpoint,
                  protocol: Protocol, port: int, dst: Endpoint, request: Request | None = None,
                  authenticated: bool = True) -> DirectionVerdict:
        """One side's verdict; ``dst`` resolves named ports (R8.4).

        Without a request the verdict is the connection's (a proxied one counts as
        allowed); with one, the proxy's decision on that request too.
        """
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
        denied = [r for r in denies if rule_matches(r, peer, labels, protocol, port, dst, pending=pending)]
        if denied:
            return verdict(Action.DENY, Reason.DENIED, denied)
        names = any(sees_lookups(r) for r in allows)
        allowed = [r for r in allows if rule_matches(r, peer, labels, protocol, port, dst, names, pending=pending)]
        may = self._may_apply(subject, direction, peer, labels, protocol, port, dst, pending, allowed)
        if not dd:  # R3.4c: the proxy still filters the requests of ports an allow rule redirects
            if request is None or not may:
                return verdict(Action.ALLOW, Reason.NOT_ENFORCED)
            l7 = _l7_filters(may, protocol, port, dst)
            if not self._admitted(allowed, may, protocol, port, dst, request):
                return verdict(Action.DENY, Reason.REQUEST_DENIED, may, l7=l7)
            return verdict(Action.ALLOW, Reason.NOT_ENFORCED, l7=l7)
        if not allowed:
            return verdict(Action.DENY, Reason.DEFAULT_DENY, dd=dd)
        l7 = _l7_filters(allowed, protocol, port, dst)
        wants_auth = [r for r in may if r.auth]  # one rule's requirement covers the flow (R10.11)
        if wants_auth and not (authenticated and all(r.auth != ALWAYS_FAIL for r in wants_auth)):
            return verdict(Action.DENY, Reason.AUTH_REQUIRED, wants_auth, l7=l7)
        if request is not None:
            admitting = self._admitting(allowed, protocol, port, dst, request)
            if not admitting:
                return verdict(Action.DENY, Reason.REQUEST_DENIED, allowed, l7=l7)
            allowed = admitting
        return verdict(Action.ALLOW, Reason.ALLOWED, allowed, l7=l7)

    def _may_apply(self, subject: Endpoint, direction: Direction, peer: Endpoint, labels: frozenset,
                   protocol: Protocol, port: int, dst: Endpoint, pending: str | None,
                   allowed: list[Rule]) -> list[Rule]:
        """The allow rules that may apply to the flow once a pending end's labels are known: ``allowed``, and
        those whose subject, peer or named port need the unknown labels.  An allow grants only if it surely
        applies, but the L7 filter or the handshake it brings may bind the real pod, so answers past L4
        (a request, R3.4c and R9.3; mutual authentication, R10.11) count every rule that may apply."""
        if not (pending or (subject.kind is EndpointKind.POD and pending_scope(subject_labels(subject)))):
            return allowed
        possible = self.possible_allows(subject, direction)
        names = any(sees_lookups(r) for r in possible)
        return [r for r in possible
                if rule_matches(r, peer, labels, protocol, port, dst, names, pending, possibly=True)]

    def _admitted(self, allowed: list[Rule], may: list[Rule], protocol: Protocol, port: int, dst: Endpoint,
                  request: Request) -> bool:
        """Whether the request passes whichever of ``may`` turn out to apply: a rule that surely applies
        admits it, or every port entry of every rule that may apply does (R9.3: the union)."""
        return bool(self._admitting(allowed, protocol, port, dst, request)) or all(
            port_admits(pm, request) for r in may for pm in matching_ports(r, protocol, port, dst, possibly=True))

    @staticmethod
    def _admitting(allowed, protocol: Protocol, port: int, dst: Endpoint, request: Request) -> list[Rule]:
        """The matching allow rules whose port entry lets the request through (R9.3: the union)."""
        return [r for r in allowed if any(port_admits(pm, request) for pm in matching_ports(r, protocol, port, dst))]

    def l7_kinds(self, flow: Flow) -> set[str]:
        """The kinds of L7 filter the connection meets on either side (R9.1), or that refuse its request
        where the direction is not default-deny (R3.4c)."""
        v = self.evaluate(flow)
        return {x.kind for x in v.egress.l7 + v.ingress.l7}

    def near_misses(self, v: DirectionVerdict, flow: Flow) -> list[tuple[Rule, str]]:
        """For a default-deny verdict, the allow rules of that side that match all but one part of the
        flow: the peer but not the port ("port"), or the port but not the peer ("peer")."""
        if v.reason is not Reason.DEFAULT_DENY:
            return []
        peer = flow.dst if v.direction is Direction.EGRESS else flow.src
        labels = peer_labels(peer, v.subject)
        out, allows = [], self.subject_rules(v.subject, v.direction)[0]
        names = any(sees_lookups(r) for r in allows)
        for rule in allows:
            peer_ok = any(peer_matches(p, peer, labels, names) for p in rule.peers)
            port_ok = bool(matching_ports(rule, flow.protocol, flow.port, flow.dst))
            if peer_ok != port_ok:
                out.append((rule, "port" if peer_ok else "peer"))
        return out

    def evaluate(self, flow: Flow) -> Verdict:
        src, dst = flow.src, flow.dst
        if src == dst:
            ok = lambda d, s: DirectionVerdict(d, s, Action.ALLOW, Reason.SELF)  # noqa: E731
            return Verdict(flow, ok(Direction.EGRESS, src), ok(Direction.INGRESS, dst))
        if not possible(flow):  # an IPv4-only pod sends no ICMPv6: nothing can pass, whatever the rules
            none = lambda d, s: DirectionVerdict(d, s, Action.DENY, Reason.NO_PACKET)  # noqa: E731
            return Verdict(flow, none(Direction.EGRESS, src), none(Direction.INGRESS, dst))
        egress = self.direction(Direction.EGRESS, src, dst, flow.protocol, flow.port, dst, flow.request,
                                flow.authenticated)
        ingress = self.direction(Direction.INGRESS, dst, src, flow.protocol, flow.port, dst, flow.request,
                                 flow.authenticated)
        return Verdict(flow, egress, ingress)


def _l7_filters(allowed: list[Rule], protocol: Protocol, port: int, dst: Endpoint) -> tuple[L7Rules, ...]:
    """The union of L7 filters; any matching entry without L7 makes it an allow-all (R9.3)."""
    ports = [pm for r in allowed for pm in matching_ports(r, protocol, port, dst)]
    if any(pm.l7 is None for pm in ports):
        return ()
    return tuple(dict.fromkeys(pm.l7 for pm in ports))


def evaluate(policy: PolicySet, flow: Flow) -> Verdict:
    return Evaluator(policy).evaluate(flow)
