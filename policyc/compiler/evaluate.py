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
from dataclasses import dataclass, replace

from .entities import reserved_label
from .ir import (ANY_SOURCE, NAMESPACE_KEY, Action, CIDRPeer, DefaultDeny, Direction, Endpoint,
                 EndpointKind, FQDNPeer, HTTPRule, L7Rules, Op, Peer, PolicySet, PortMatch,
                 Protocol, Rule, Selector, SelectorPeer, SubjectKind, pending_scope)


class Reason(str, enum.Enum):
    SELF = "self"                    # R11.5: a pod talking to itself never meets policy
    NOT_ENDPOINT = "not-an-endpoint"  # outside the cluster nothing enforces
    LOCALHOST = "allow-localhost"    # R3.9: the local node may always reach its pods
    NOT_ENFORCED = "not-enforced"    # R3.5: no policy switched this direction to default-deny
    DENIED = "denied-by-rule"        # R4.2
    ALLOWED = "allowed-by-rule"      # R4.1
    DEFAULT_DENY = "default-deny"    # R3.4
    AUTH_REQUIRED = "authentication-required"  # R10.11: an allowing rule wants a handshake that failed
    REQUEST_DENIED = "request-denied"  # R9.2: the connection reaches the proxy, which refuses this request


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
    assert isinstance(peer, FQDNPeer)  # R10.3: outside the cluster, through a name it was learned under
    return ep.kind is EndpointKind.EXTERNAL and any(fqdn_matches(peer, n) for n in ep.dns_names)


def _field_admits(pattern: str | None, value: str, request: Request) -> bool:
    """An HTTP field regex against the whole value (R9.2); an omitted field matches anything."""
    if not pattern:
        return True
    assumed = request.decides(opaque_key("regex", pattern))
    return assumed if assumed is not None else _full_match(pattern, value)


def _http_admits(rule: HTTPRule, request: Request) -> bool:
    return (_field_admits(rule.method, request.method, request) and _field_admits(rule.path, request.path, request)
            and _field_admits(rule.host, request.host, request)
            and all(request.decides(opaque_key("header", h)) for h in rule.headers))


def l7_admits(l7: L7Rules | None, request: Request) -> bool:
    """Whether one port entry's L7 filter lets ``request`` through; no filter lets everything (R9.3)."""
    if l7 is None:
        return True
    if l7.kind == "http":
        return any(_http_admits(h, request) for h in l7.http)
    if l7.kind == "dns":
        return any(_full_match(fqdn_regex(d.match_name, d.match_pattern), request.dns) for d in l7.dns)
    return bool(request.decides(opaque_key("l7", l7)))


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
        denied = [r for r in denies if rule_matches(r, peer, labels, protocol, port, dst, pending)]
        if denied:
            return verdict(Action.DENY, Reason.DENIED, denied)
        if not dd:
            return verdict(Action.ALLOW, Reason.NOT_ENFORCED)
        allowed = [r for r in allows if rule_matches(r, peer, labels, protocol, port, dst, pending)]
        if not allowed:
            return verdict(Action.DENY, Reason.DEFAULT_DENY, dd=dd)
        l7 = _l7_filters(allowed, protocol, port, dst)
        wants_auth = [r for r in allowed if r.auth]  # one rule's requirement covers the flow (R10.11)
        if wants_auth and not authenticated:
            return verdict(Action.DENY, Reason.AUTH_REQUIRED, wants_auth, l7=l7)
        if request is not None:
            admitting = [r for r in allowed
                         if any(l7_admits(pm.l7, request) for pm in matching_ports(r, protocol, port, dst))]
            if not admitting:
                return verdict(Action.DENY, Reason.REQUEST_DENIED, allowed, l7=l7)
            allowed = admitting
        return verdict(Action.ALLOW, Reason.ALLOWED, allowed, l7=l7)

    def l7_kinds(self, flow: Flow) -> set[str]:
        """The kinds of L7 filter the connection meets on either side (R9.1)."""
        v = self.evaluate(replace(flow, request=None))
        return {x.kind for x in v.egress.l7 + v.ingress.l7}

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
