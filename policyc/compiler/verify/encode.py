"""The IR as Z3 formulas: the concrete evaluator's decision over symbolic flows.

Every formula here mirrors one function of ``evaluate.py`` (named in its
docstring), so that a model decodes to a ``Flow`` the evaluator replays to
the same verdict.  Two universes of endpoints:

* ``SymbolicSpace``: any pod, node, address or reserved identity.  Labels are
  finite-domain variables, one per key some selector mentions, ranging over
  absent / each mentioned value / a fresh value (a Cilium label set holds one
  label per key, so one variable per key is exact).  A pod's labels come from
  source ``k8s``, a node's from ``node``; reserved labels follow from the kind.
* ``InventorySpace``: exactly the inventory's endpoints, plus addresses no
  endpoint holds (world) and the reserved identities.  A Service address is
  not world either: a connection to it is one to a backend (R7.8, services.py).

A space built with ``unknowns=True`` (the merge gate's model) also leaves free
what concrete answers cannot know: the DNS name an external address was
learned under (toFQDNs, R10.5) and whether a mutual-authentication handshake
succeeds (R10.11).  Models decode them into the flow, so the evaluator still
replays every witness.

Formulas are built per query from only the rules that query involves, so the
domains stay small (the pre-filters in ``checks.py`` choose those rules).
"""
from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, replace

import z3
from z3 import z3core

from ..entities import RESERVED, reserved_label, world_labels
from ..evaluate import (ALWAYS_FAIL, Flow, LabelIndex, Request as ConcreteRequest, fqdn_regex, opaque_key, sees_lookups,
                        subject_labels)
from ..inventory import RESERVED_PEERS, Inventory, external, reserved_peer
from ..ir import (ANY_SOURCE, CLUSTER_KEY, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, SERVICE_ACCOUNT_KEY,
                  Action, CIDRPeer, Direction, Endpoint, EndpointKind, FQDNPeer, Identity,
                  L7Rules, Label, NamedPort, Op, Peer, PolicySet, PortMatch, Protocol, Requirement, Rule,
                  Selector, SelectorPeer, SubjectKind)
from . import regex


def _connective(make, fallback, args) -> z3.BoolRef:
    """``make`` (Z3_mk_and or Z3_mk_or) over Boolean terms in one call of Z3's C API: the same term
    ``fallback`` (z3.And or z3.Or) makes, without its per-argument sort checks and coercions, which were
    most of the time a check spent building formulas (issue 15's profile). Anything but Boolean terms
    (a Python bool, say) goes through ``fallback``."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = args[0]
    if not all(type(a) is z3.BoolRef for a in args):
        return fallback(*args)
    ctx = args[0].ctx if args else z3.main_ctx()
    terms = (z3.Ast * len(args))(*[a.as_ast() for a in args])
    return z3.BoolRef(make(ctx.ref(), len(args), terms), ctx)


def conj(*args) -> z3.BoolRef:
    """z3.And, built faster (``_connective``): a list or the terms themselves."""
    return _connective(z3core.Z3_mk_and, z3.And, args)


def disj(*args) -> z3.BoolRef:
    """z3.Or, built faster (``_connective``)."""
    return _connective(z3core.Z3_mk_or, z3.Or, args)


class Kind(enum.IntEnum):
    """What a flow endpoint is; RESERVED covers identities such as health that hold no address we model."""

    POD = 0
    NODE = 1
    EXTERNAL = 2
    RESERVED = 3


FLOW_PROTOCOLS = (Protocol.ICMP, Protocol.TCP, Protocol.UDP, Protocol.ICMPV6, Protocol.SCTP, Protocol.OTHER)
_LABEL_SOURCE = {Kind.POD: "k8s", Kind.NODE: "node"}
_POD_ONLY_KEYS = (NAMESPACE_KEY, CLUSTER_KEY, SERVICE_ACCOUNT_KEY)
_NS_NAME_KEY = NAMESPACE_LABELS_PREFIX + "kubernetes.io/metadata.name"
_REQUIRED_KEYS = _POD_ONLY_KEYS + (_NS_NAME_KEY,)  # every pod has these: no witness can drop them


class View(enum.Enum):
    """Which labels a selector sees (evaluate.subject_labels / peer_labels)."""

    SUBJECT = "subject"   # a node as a subject is reserved:host plus its node labels
    PEER = "peer"
    HOST = "host"         # a node seen from a pod on it: just reserved:host


def selectors_of(rules, dds=()) -> list[Selector]:
    out = []
    for r in rules:
        out.append(r.subject)
        out += [s for p in r.peers if isinstance(p, SelectorPeer) for s in p.selectors]
    out += [d.subject for d in dds]
    return out


# Witness addresses outside the cluster (minimal_model): documentation ranges, one per side.
DOC_ADDRESSES = ((ipaddress.IPv4Address("203.0.113.7"), ipaddress.IPv6Address("2001:db8::7")),
                 (ipaddress.IPv4Address("198.51.100.9"), ipaddress.IPv6Address("2001:db8::9")))
PLAIN_PORTS = (443, 80)  # witness ports a reader recognises, used where the question allows any
MAX_LABEL_PREFERENCES = 16  # label keys tried one by one when a witness pod cannot drop them all


@dataclass(frozen=True)
class Domain:
    """Per label key, the values selectors mention (index 0 = absent, last = a fresh value)."""

    values: dict  # key -> tuple[str, ...]
    cluster: str

    @classmethod
    def of(cls, selectors, cluster: str, extra_keys=()) -> "Domain":
        found: dict[str, set] = {NAMESPACE_KEY: set(), CLUSTER_KEY: {cluster}}
        for key in extra_keys:
            found.setdefault(key, set())
        for sel in selectors:
            for req in sel.requirements:
                if req.source != RESERVED:
                    found.setdefault(req.key, set()).update(req.values)
        if _NS_NAME_KEY in found:  # kubernetes.io/metadata.name always equals the namespace name
            both = found[_NS_NAME_KEY] | found[NAMESPACE_KEY]
            found[_NS_NAME_KEY] = set(both)
            found[NAMESPACE_KEY] = set(both)
        return cls({k: tuple(sorted(v)) for k, v in sorted(found.items())}, cluster)

    def index(self, key: str, value: str) -> int | None:
        vals = self.values[key]
        return vals.index(value) + 1 if value in vals else None

    def fresh(self, key: str) -> int:
        return len(self.values[key]) + 1


_NAME_CHARS = re.compile(r"[-a-z0-9_.]+")
_LABEL = z3.Plus(z3.Range("a", "z"))
_TYPICAL_NAME = z3.Concat(_LABEL, z3.Plus(z3.Concat(z3.Re("."), _LABEL)))


class Term:
    """One symbolic flow endpoint: kind, labels as selectors see them, address, named ports.

    ``dns`` is the name an external address was learned under ("" for none);
    only spaces with ``unknowns`` constrain and read it.
    """

    def __init__(self, name: str):
        self.name = name
        self.v4 = z3.Bool(f"{name}.v4")
        self.ip4 = z3.BitVec(f"{name}.ip4", 32)
        self.ip6 = z3.BitVec(f"{name}.ip6", 128)
        self.dns = z3.String(f"{name}.dns")
        self.reads_dns = False  # some encoded toFQDNs peer reads ``dns`` (Space.peer_matches)

    def speaks(self, version: int) -> z3.BoolRef:
        """The endpoint may send or receive IP ``version`` packets (an external address has one family)."""
        return z3.Implies(self.is_kind(Kind.EXTERNAL), self.v4 if version == 4 else z3.Not(self.v4))

    def in_network(self, net) -> z3.BoolRef:
        bits = 32 if net.version == 4 else 128
        ip = self.ip4 if net.version == 4 else self.ip6
        mask = ((1 << bits) - 1) ^ ((1 << (bits - net.prefixlen)) - 1)
        family = self.v4 if net.version == 4 else z3.Not(self.v4)
        return conj(family, ip & mask == int(net.network_address))

    def decode_ip(self, model) -> ipaddress._BaseAddress:
        if z3.is_true(model.eval(self.v4, model_completion=True)):
            return ipaddress.IPv4Address(model.eval(self.ip4, model_completion=True).as_long())
        return ipaddress.IPv6Address(model.eval(self.ip6, model_completion=True).as_long())


class SymbolicTerm(Term):
    """Any endpoint at all; labels are variables over ``Domain``."""

    def __init__(self, name: str, domain: Domain, port_names: tuple[str, ...]):
        super().__init__(name)
        self.domain = domain
        self.kind = z3.Int(f"{name}.kind")
        self.reserved = z3.Int(f"{name}.reserved")
        self.labels = {k: z3.Int(f"{name}.label.{k}") for k in domain.values}
        self._matches: dict = {}
        self._kinds: dict = {}
        self.ports = {n: (z3.Bool(f"{name}.port.{n}"), z3.BitVec(f"{name}.port.{n}.num", 16),
                          z3.Int(f"{name}.port.{n}.proto")) for n in port_names}

    def is_kind(self, kind: Kind) -> z3.BoolRef:
        """Built once per kind: every selector and peer formula asks again (an arithmetic comparison
        costs the Python API a coercion each time)."""
        hit = self._kinds.get(kind)
        if hit is None:
            hit = self._kinds[kind] = self.kind == int(kind)
        return hit

    def wellformed(self) -> list:
        """What inventory.py would build: pods carry namespace, cluster and service account labels."""
        out = [conj(self.kind >= 0, self.kind <= 3),
               conj(self.reserved >= 0, self.reserved < len(RESERVED_PEERS))]
        pod = self.is_kind(Kind.POD)
        for key, var in self.labels.items():
            out.append(conj(var >= 0, var <= self.domain.fresh(key)))
            labelled = pod if key in _POD_ONLY_KEYS or key.startswith(NAMESPACE_LABELS_PREFIX) else \
                disj(pod, self.is_kind(Kind.NODE))
            out.append(z3.Implies(z3.Not(labelled), var == 0))
        out.append(z3.Implies(pod, self.labels[NAMESPACE_KEY] != 0))
        out.append(z3.Implies(pod, self.labels[CLUSTER_KEY] == self.domain.index(CLUSTER_KEY, self.domain.cluster)))
        if SERVICE_ACCOUNT_KEY in self.labels:
            out.append(z3.Implies(pod, self.labels[SERVICE_ACCOUNT_KEY] != 0))
        if _NS_NAME_KEY in self.labels:  # same domain as the namespace key (Domain.of)
            out.append(z3.Implies(pod, self.labels[_NS_NAME_KEY] == self.labels[NAMESPACE_KEY]))
        for present, _num, proto in self.ports.values():
            out.append(z3.Implies(present, conj(pod, disj([proto == int(p) for p in
                                                              (Protocol.TCP, Protocol.UDP, Protocol.SCTP)]))))
        return out

    def _reserved_has(self, name: str, view: View) -> z3.BoolRef:
        if view is View.HOST:
            return z3.BoolVal(name == "host")
        if view is View.SUBJECT:
            return conj(self.is_kind(Kind.NODE), z3.BoolVal(name == "host"))
        options = []
        if name == "remote-node":
            options.append(self.is_kind(Kind.NODE))
        if name in ("world", "world-ipv4", "world-ipv6"):
            family = {"world": True, "world-ipv4": self.v4, "world-ipv6": z3.Not(self.v4)}[name]
            options.append(conj(self.is_kind(Kind.EXTERNAL), family))
        if name in RESERVED_PEERS:
            options.append(conj(self.is_kind(Kind.RESERVED), self.reserved == RESERVED_PEERS.index(name)))
        return disj(options) if options else z3.BoolVal(False)

    def _label_source_ok(self, source: str) -> z3.BoolRef:
        if source == ANY_SOURCE:
            return disj(self.is_kind(Kind.POD), self.is_kind(Kind.NODE))
        kinds = [k for k, s in _LABEL_SOURCE.items() if s == source]
        return disj([self.is_kind(k) for k in kinds]) if kinds else z3.BoolVal(False)

    def _has(self, req: Requirement, view: View, value: str | None) -> z3.BoolRef:
        """Some label with req's source and key (and ``value``, unless None) is present."""
        parts = []
        if req.source in (RESERVED, ANY_SOURCE) and value in (None, ""):
            parts.append(self._reserved_has(req.key, view))
        if req.source != RESERVED and view is not View.HOST and req.key in self.labels:
            var = self.labels[req.key]
            if value is None:
                hit = var != 0
            else:
                idx = self.domain.index(req.key, value)
                hit = z3.BoolVal(False) if idx is None else var == idx
            parts.append(conj(self._label_source_ok(req.source), hit))
        return disj(parts) if parts else z3.BoolVal(False)

    def requirement(self, req: Requirement, view: View) -> z3.BoolRef:
        """Requirement.matches: NotIn and DoesNotExist hold when the key is absent."""
        if req.op in (Op.EXISTS, Op.DOES_NOT_EXIST):
            hit = self._has(req, view, None)
            return hit if req.op is Op.EXISTS else z3.Not(hit)
        hit = disj([self._has(req, view, v) for v in req.values])
        return hit if req.op is Op.IN else z3.Not(hit)

    def match(self, sel: Selector, view: View) -> z3.BoolRef:
        """Built once per term: a check's queries test the same few selectors against it again and again."""
        hit = self._matches.get((sel, view))
        if hit is None:
            hit = self._matches[(sel, view)] = conj([self.requirement(r, view) for r in sel.requirements])
        return hit

    def named_port(self, name: str, protocol, port) -> z3.BoolRef:
        present, num, proto = self.ports[name]
        return conj(present, num == port, proto == protocol)


def runs(values) -> tuple[tuple[int, int], ...]:
    """Sorted distinct integers as runs of consecutive ones: (first, last) each."""
    out: list[list[int]] = []
    for v in sorted(set(values)):
        if out and v == out[-1][1] + 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return tuple((a, b) for a, b in out)


def one_of(var, spans, le=None) -> z3.BoolRef:
    """``var`` lies in one of ``spans`` (from ``runs``): one test per run of consecutive values.

    Endpoints are sorted by kind and namespace, so the indices a kind or a selector picks (and pod
    addresses) come in a few runs: the same set as one equality per value, in far fewer terms.
    ``le`` is the order for bit-vectors (``z3.ULE``).
    """
    le = le or (lambda a, b: a <= b)
    return disj([var == a if a == b else conj(le(a, var), le(var, b)) for a, b in spans])


class InventoryTerm(Term):
    """One of the inventory's endpoints, an address none holds, or a reserved identity.

    ``choice`` indexes ``space.endpoints``; the two slots after them are
    ``external`` (address in ``ip4``/``ip6``) and ``reserved``.
    """

    def __init__(self, name: str, space: "InventorySpace"):
        super().__init__(name)
        self.space = space
        self.choice = z3.Int(f"{name}.choice")
        self.reserved = z3.Int(f"{name}.reserved")
        self._formulas: dict = {}  # is_kind and match, built once per term: every rule asks again

    @property
    def external_slot(self) -> int:
        return len(self.space.endpoints)

    def _once(self, key, build) -> z3.BoolRef:
        hit = self._formulas.get(key)
        if hit is None:
            hit = self._formulas[key] = build()
        return hit

    def is_kind(self, kind: Kind) -> z3.BoolRef:
        return self._once(kind, lambda: self._is_kind(kind))

    def _is_kind(self, kind: Kind) -> z3.BoolRef:
        if kind is Kind.EXTERNAL:
            return self.choice == self.external_slot
        if kind is Kind.RESERVED:
            return self.choice == self.external_slot + 1
        want = EndpointKind.POD if kind is Kind.POD else EndpointKind.NODE
        eps = self.space.endpoints
        return one_of(self.choice, self.space.memo(("kind", want), lambda: runs(
            i for i, ep in enumerate(eps) if ep.kind is want)))

    def wellformed(self) -> list:
        not_taken = z3.If(self.v4, z3.Not(one_of(self.ip4, self.space.taken(4), z3.ULE)),
                          z3.Not(one_of(self.ip6, self.space.taken(6), z3.ULE)))
        return [conj(self.choice >= 0, self.choice <= self.external_slot + 1),
                conj(self.reserved >= 0, self.reserved < len(RESERVED_PEERS)),
                z3.Implies(self.is_kind(Kind.EXTERNAL), not_taken)]

    def match(self, sel: Selector, view: View) -> z3.BoolRef:
        """Selector.matches, decided in Python per endpoint; only the world family is symbolic.

        Built once per term, selector and view: a flow's terms live as long as its space (``new_flow``),
        and a selector matching pods of many namespaces is a disjunction as long as the inventory.
        """
        return self._once((sel, view), lambda: self._match(sel, view))

    def _match(self, sel: Selector, view: View) -> z3.BoolRef:
        if view is View.HOST:
            return z3.BoolVal(sel.matches(frozenset({reserved_label("host")})))

        eps = self.space.endpoints
        index = self.space.memo(("index", view), lambda: LabelIndex(
            [subject_labels(ep) if view is View.SUBJECT else ep.identity.labels for ep in eps]))
        chosen = self.space.memo(("picks", sel, view), lambda: runs(index.matching(sel)))
        hits = [one_of(self.choice, chosen)] if chosen else []
        if view is View.PEER:
            v4, v6 = sel.matches(world_labels(4)), sel.matches(world_labels(6))
            if v4 or v6:
                family = z3.BoolVal(True) if v4 and v6 else (self.v4 if v4 else z3.Not(self.v4))
                hits.append(conj(self.is_kind(Kind.EXTERNAL), family))
            names = [i for i, n in enumerate(RESERVED_PEERS) if sel.matches(frozenset({reserved_label(n)}))]
            if names:
                hits.append(conj(self.is_kind(Kind.RESERVED), disj([self.reserved == i for i in names])))
        return disj(hits) if hits else z3.BoolVal(False)

    def speaks(self, version: int) -> z3.BoolRef:
        """An inventory endpoint with addresses speaks only their families (one without any: either)."""
        mute = self.space.memo(("mute", version), lambda: runs(
            i for i, ep in enumerate(self.space.endpoints) if ep.ips and all(ip.version != version for ip in ep.ips)))
        ok = z3.Not(one_of(self.choice, mute)) if mute else z3.BoolVal(True)
        return conj(ok, super().speaks(version))

    def named_port(self, name: str, protocol, port) -> z3.BoolRef:
        """The chosen endpoint has port ``name`` = (port, protocol); endpoints grouped by that pair."""
        def holders():
            out: dict[tuple[int, int], list[int]] = {}
            for i, ep in enumerate(self.space.endpoints):
                for np in ep.ports:
                    if np.name == name:
                        out.setdefault((np.port, int(np.protocol)), []).append(i)
            return [(pair, runs(idx)) for pair, idx in out.items()]
        return disj([conj(one_of(self.choice, spans), port == num, protocol == proto)
                      for (num, proto), spans in self.space.memo(("port", name), holders)])


class Request:
    """An L7 request (HTTP method, path, host; DNS query name) plus one free bit per part of a filter
    policyc cannot read (evaluate.Request.assumed decides the same parts concretely)."""

    def __init__(self, name: str = "req"):
        self.method = z3.String(f"{name}.method")
        self.path = z3.String(f"{name}.path")
        self.host = z3.String(f"{name}.host")
        self.dns = z3.String(f"{name}.dns")
        self.name = name
        self.unsupported: list[str] = []
        self._opaque: dict[str, z3.BoolRef] = {}
        self._kinds: set[str] = set()  # http, dns: which fields some filter reads (the others decode empty)
        self.memo: dict = {}  # rule formulas over this request (Space.rule_matches): they live as long as it

    def typical(self) -> list:
        """What a witness preferably shows, for the fields some filter reads: a common method, a path from
        the root, a dotted name.  (Any string is a possible request: the gate must not miss odd ones.)"""
        methods = z3.Union(*[z3.Re(m) for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")])
        http = [z3.InRe(self.method, methods), z3.PrefixOf(z3.StringVal("/"), self.path)]
        return (http if "http" in self._kinds else []) + (
            [z3.InRe(self.dns, _TYPICAL_NAME)] if "dns" in self._kinds else [])

    def opaque(self, kind: str, value) -> z3.BoolRef:
        key = opaque_key(kind, value)
        if key not in self._opaque:
            self._opaque[key] = z3.Bool(f"{self.name}.opaque.{key}")
        return self._opaque[key]

    def _field(self, var, pattern: str | None) -> z3.BoolRef:
        if not pattern:
            return z3.BoolVal(True)
        try:
            return z3.InRe(var, regex.to_z3(pattern))
        except regex.UnsupportedRegex as exc:
            self.unsupported.append(str(exc))
            return self.opaque("regex", pattern)

    def http_rule(self, h) -> z3.BoolRef:
        """evaluate._http_admits: every given field matches, every header is present."""
        self._kinds.add("http")
        return conj(self._field(self.method, h.method), self._field(self.path, h.path),
                      self._field(self.host, h.host), *[self.opaque("header", x) for x in h.header_parts])

    def dns_rule(self, d) -> z3.BoolRef:
        self._kinds.add("dns")
        return self._field(self.dns, fqdn_regex(d.match_name, d.match_pattern))

    def allowed_by(self, l7: L7Rules | None) -> z3.BoolRef:
        """evaluate.l7_admits: which requests one port entry lets through; no L7 means every request (R9.3)."""
        if l7 is None:
            return z3.BoolVal(True)
        if l7.kind == "http":
            return disj([self.http_rule(h) for h in l7.http])
        if l7.kind == "dns":
            return disj([self.dns_rule(d) for d in l7.dns])
        return self.opaque("l7", l7)

    def admitted_by(self, pm: PortMatch) -> z3.BoolRef:
        """evaluate.port_admits: the entry's L7 filter and each of its TLS conditions."""
        return conj(self.allowed_by(pm.l7), *[self.opaque("tls", t) for t in pm.tls])

    def decode(self, model) -> ConcreteRequest:
        def text(var, kind: str) -> str:
            return model.eval(var, model_completion=True).as_string() if kind in self._kinds else ""
        return ConcreteRequest(text(self.method, "http"), text(self.path, "http"), text(self.host, "http"),
                               text(self.dns, "dns"),
                               tuple((k, z3.is_true(model.eval(v, model_completion=True)))
                                     for k, v in sorted(self._opaque.items())))


class SymbolicFlow:
    """src → dst on (protocol, port); ``local`` says a pod and a node are on the same node."""

    def __init__(self, space: "Space", tag: str = ""):
        self.space = space
        self.src = space.term(f"src{tag}")
        self.dst = space.term(f"dst{tag}")
        self.protocol = z3.Int(f"proto{tag}")
        self.port = z3.BitVec(f"port{tag}", 16)
        self.local = space.local(self.src, self.dst, tag)
        self.same = space.same(self.src, self.dst)
        self.authenticated = z3.Bool(f"auth{tag}") if space.unknowns else z3.BoolVal(True)
        self.memo: dict = {}  # rule formulas over this flow (Space.rule_matches)
        self.reads_auth = False  # some encoded rule wants mutual authentication (Space.authenticated)

    def cached(self, key: tuple, compute):
        """Built once per flow (Space.memo's rule, for the formulas a flow's questions ask again)."""
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = compute()
        return hit

    def wellformed(self) -> list:
        icmp = disj(self.protocol == int(Protocol.ICMP), self.protocol == int(Protocol.ICMPV6))
        family = [z3.Implies(self.protocol == int(p), conj(self.src.speaks(p.family), self.dst.speaks(p.family)))
                  for p in FLOW_PROTOCOLS if p.family]  # evaluate.possible
        return (self.src.wellformed() + self.dst.wellformed() + self.space.pair_constraints(self)
                + [disj([self.protocol == int(p) for p in FLOW_PROTOCOLS]),
                   z3.Implies(icmp, z3.ULE(self.port, 255)),  # for ICMP the port slot is the type (R8.6)
                   z3.Implies(self.protocol == int(Protocol.OTHER), self.port == 0)]  # no ports: slot unused
                + family)

    def fix(self, flow: Flow) -> list:
        """Constraints pinning this symbolic flow to a concrete one (for cross-checking the evaluator)."""
        return (self.space.pin(self.src, flow.src) + self.space.pin(self.dst, flow.dst)
                + [self.protocol == int(flow.protocol), self.port == flow.port]
                + self.space.pin_local(self, flow))

    def minimal_model(self, solver: z3.Solver, *assumptions, request: Request | None = None) -> z3.ModelRef:
        """A model of ``solver`` (under ``assumptions``) that reads like a person's example: TCP on
        443 or 80, addresses outside the cluster IPv4 from the documentation ranges, invented pods
        without the labels the question does not need; where some encoded rule reads them, a handshake that
        succeeds, an ordinary request and an ordinary DNS name (only then: string theory stays out
        of queries that need none). A preference stays only while the constraints still hold,
        one check each, so a witness is as plain as the question allows (never ``::``, nor a pod
        labelled ``k8s-app=kube-dns`` where any pod would do). The solver is left as it was."""
        scopes = 0

        def keep(constraint) -> bool:
            nonlocal scopes
            solver.push()
            solver.add(constraint)
            if solver.check(*assumptions) == z3.sat:
                scopes += 1
                return True
            solver.pop()
            return False

        try:
            keep(self.protocol == int(Protocol.TCP))
            keep(disj([self.port == p for p in PLAIN_PORTS]))  # one check: 443, not 256, where any port would do
            for term, v4, v6 in ((self.src, *DOC_ADDRESSES[0]), (self.dst, *DOC_ADDRESSES[1])):
                keep(term.v4)
                keep(term.ip4 == int(v4))
                keep(term.ip6 == int(v6))
                optional = [var == 0 for key, var in getattr(term, "labels", {}).items() if key not in _REQUIRED_KEYS]
                if optional and not keep(conj(optional)):  # all absent at once, else one key at a time
                    for constraint in optional[:MAX_LABEL_PREFERENCES]:
                        keep(constraint)
            if self.reads_auth:
                keep(self.authenticated)
            for wish in (request.typical() if request is not None else []) + [
                    z3.Implies(t.is_kind(Kind.EXTERNAL), z3.InRe(t.dns, _TYPICAL_NAME))
                    for t in (self.src, self.dst) if t.reads_dns]:
                keep(wish)
            if solver.check(*assumptions) != z3.sat:
                raise AssertionError("minimal_model: constraints unsatisfiable")
            return solver.model()
        finally:
            for _ in range(scopes):
                solver.pop()

    def decode(self, model, request: Request | None = None) -> Flow:
        src, dst = self.space.decode_pair(self, model)
        if self.space.unknowns:
            src, dst = (_named(t, ep, model) for t, ep in ((self.src, src), (self.dst, dst)))
        proto = Protocol(model.eval(self.protocol, model_completion=True).as_long())
        return Flow(src, dst, proto, model.eval(self.port, model_completion=True).as_long(),
                    request.decode(model) if request is not None else None,
                    not self.reads_auth or z3.is_true(model.eval(self.authenticated, model_completion=True)))


def _named(term: Term, ep: Endpoint, model) -> Endpoint:
    """An external address with the DNS name the model gave it, if any (toFQDNs peers match by name).

    A value no toFQDNs pattern can match (empty, or with characters names never have) is no name."""
    name = model.eval(term.dns, model_completion=True).as_string() if term.reads_dns else ""
    if ep.kind is not EndpointKind.EXTERNAL or not ep.ips or not _NAME_CHARS.fullmatch(name):
        return ep
    return replace(ep, dns_names=(name,))


class Space:
    """Common encoding of rules over whichever universe of endpoints a subclass provides."""

    unknowns = False  # the gate's model: DNS names and handshake outcomes are free (module docstring)

    def memo(self, key: tuple, compute):
        """Computed once per space: flows, the endpoints a kind, a selector or a port name picks, ..."""
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = compute()
        return hit

    def sides(self, flow: SymbolicFlow, direction: Direction):
        """(subject, peer) of a direction: egress is decided at the source, ingress at the destination."""
        return (flow.src, flow.dst) if direction is Direction.EGRESS else (flow.dst, flow.src)

    def selects(self, kind: SubjectKind, sel: Selector, subject) -> z3.BoolRef:
        """evaluate.selects"""
        want = Kind.POD if kind is SubjectKind.ENDPOINT else Kind.NODE
        return conj(subject.is_kind(want), subject.match(sel, View.SUBJECT))

    def peer_matches(self, peer: Peer, flow: SymbolicFlow, direction: Direction,
                     names: z3.BoolRef | None = None) -> z3.BoolRef:
        """evaluate.peer_matches with peer_labels: a pod sees its own node as reserved:host; ``names``
        (Space.sees_lookups) whether the subject's lookups are proxied, None for "assume they are"."""
        subject, other = self.sides(flow, direction)
        if isinstance(peer, (SelectorPeer, CIDRPeer)):  # the peer and the flow decide: built once per flow
            return flow.cached(("peer", peer, direction), lambda: self._address_peer(peer, flow, subject, other))
        assert isinstance(peer, FQDNPeer)  # evaluate.peer_matches: by the name an address was learned under
        if not self.unknowns:
            return z3.BoolVal(False)
        other.reads_dns = True
        return conj(other.is_kind(Kind.EXTERNAL), z3.Length(other.dns) > 0,  # "": no name was learned
                      z3.InRe(other.dns, regex.to_z3(fqdn_regex(peer.match_name, peer.match_pattern))),
                      z3.BoolVal(True) if names is None else names)

    def _address_peer(self, peer: SelectorPeer | CIDRPeer, flow: SymbolicFlow, subject, other) -> z3.BoolRef:
        """peer_matches for a selector or CIDR peer."""
        if isinstance(peer, SelectorPeer):
            host_view = conj(other.is_kind(Kind.NODE), subject.is_kind(Kind.POD), flow.local)
            return disj([z3.If(host_view, other.match(s, View.HOST), other.match(s, View.PEER))
                          for s in peer.selectors])
        inside = conj(other.in_network(peer.network), *[z3.Not(other.in_network(ex)) for ex in peer.excepts])
        return conj(other.is_kind(Kind.EXTERNAL), inside)

    def port_matches(self, pm: PortMatch, flow: SymbolicFlow) -> z3.BoolRef:
        """evaluate.port_matches; named ports resolve at the destination.  Built once per flow and port
        (rules share their ports: issue 15, a tenth of a check's time was building the same comparisons)."""
        return flow.cached(("port", pm.protocol, pm.first, pm.last, pm.name), lambda: self._port(pm, flow))

    @staticmethod
    def _port(pm: PortMatch, flow: SymbolicFlow) -> z3.BoolRef:
        proto = z3.BoolVal(True) if pm.protocol is Protocol.ANY else flow.protocol == int(pm.protocol)
        if pm.name is None:
            return conj(proto, z3.ULE(pm.first, flow.port), z3.ULE(flow.port, pm.last))
        return conj(proto, flow.dst.named_port(pm.name, flow.protocol, flow.port))

    def rule_matches(self, rule: Rule, flow: SymbolicFlow, request: Request | None = None,
                     ports: tuple[PortMatch, ...] | None = None, names: z3.BoolRef | None = None) -> z3.BoolRef:
        """The rule selects the subject, matches the peer and a port (and the request, if given).

        ``ports`` narrows the rule to some of its port entries (L7 checks look at one entry); ``names``
        is the policy set's Space.sees_lookups (toFQDNs peers match only when lookups are proxied).  Without
        L7 requests in play the formula depends only on the rule and the flow, which live as long as the
        space: it is built once (a check asks about the same neighbours again and again); with one, it is
        built once per request (the deletion proofs share one: issue 15, a third of their time was
        building the same filtered allows' formulas again).
        """
        entries = rule.ports if ports is None else ports
        where, fqdn = self._where(rule, flow)
        if fqdn and self.unknowns:  # a memoized formula still reads the peer's name in this query
            self.sides(flow, rule.direction)[1].reads_dns = True
        if fqdn and names is not None:  # this policy set's lookups decide: a formula of its own
            subject, _ = self.sides(flow, rule.direction)
            where = conj(self.selects(rule.subject_kind, rule.subject, subject),
                           disj([self.peer_matches(p, flow, rule.direction, names) for p in rule.peers]))
            return conj(where, self._ports_match(entries, flow, request))
        if request is not None and any(pm.filtered for pm in entries):  # a request's formulas are the request's
            kept_rule, kept_flow, expr = request.memo.get((id(rule), ports, id(flow)), (None, None, None))
            if kept_rule is not rule or kept_flow is not flow:
                expr = conj(where, self._ports_match(entries, flow, request))
                request.memo[(id(rule), ports, id(flow))] = (rule, flow, expr)
            return expr
        kept, expr = flow.memo.get((id(rule), ports), (None, None))
        if kept is not rule:  # the memo holds the rule, so its id is not reused while the entry lives
            expr = conj(where, self._ports_match(entries, flow, None))
            flow.memo[(id(rule), ports)] = (rule, expr)
        return expr

    def _where(self, rule: Rule, flow: SymbolicFlow) -> tuple[z3.BoolRef, bool]:
        """The rule selects the subject and matches the peer, whatever the port: shared by every
        subset of its port entries; and whether a toFQDNs peer of it reads the peer's name."""
        kept, where, fqdn = flow.memo.get(id(rule), (None, None, False))
        if kept is not rule:
            subject, _ = self.sides(flow, rule.direction)
            where = conj(self.selects(rule.subject_kind, rule.subject, subject),
                           disj([self.peer_matches(p, flow, rule.direction) for p in rule.peers]))
            fqdn = any(isinstance(p, FQDNPeer) for p in rule.peers)
            flow.memo[id(rule)] = (rule, where, fqdn)
        return where, fqdn

    def _ports_match(self, entries, flow: SymbolicFlow, request: Request | None) -> z3.BoolRef:
        return disj([conj(self.port_matches(pm, flow), request.admitted_by(pm) if request else True)
                      for pm in entries])

    def default_deny(self, dds, direction: Direction, subject) -> z3.BoolRef:
        return disj([self.selects(d.subject_kind, d.subject, subject) for d in dds if d.direction is direction])

    def enforced(self, direction: Direction, flow: SymbolicFlow) -> z3.BoolRef:
        """Evaluator.direction's early exits: only pods and nodes enforce; the local node reaches its pods."""
        subject, other = self.sides(flow, direction)
        enforcing = disj(subject.is_kind(Kind.POD), subject.is_kind(Kind.NODE))
        if direction is Direction.INGRESS:
            localhost = conj(subject.is_kind(Kind.POD), other.is_kind(Kind.NODE), flow.local)
            return conj(enforcing, z3.Not(localhost))
        return enforcing

    def sees_lookups(self, allows, flow: SymbolicFlow, direction: Direction) -> z3.BoolRef | None:
        """evaluate.sees_lookups over the subject: some allow rule with a DNS filter selects it. None
        (no condition) where no toFQDNs peer can be affected: concrete spaces match none anyway."""
        if not self.unknowns or not any(isinstance(p, FQDNPeer) for r in allows for p in r.peers):
            return None
        subject, _ = self.sides(flow, direction)
        return disj([self.selects(r.subject_kind, r.subject, subject) for r in allows if sees_lookups(r)])

    def authenticated(self, allows, flow: SymbolicFlow, names: z3.BoolRef | None = None) -> z3.BoolRef:
        """Evaluator.direction: when a matching allow rule wants mutual authentication, the handshake must succeed."""
        wanting = [r for r in allows if r.auth]
        if not wanting:
            return z3.BoolVal(True)
        flow.reads_auth = True
        failing = [r for r in wanting if r.auth == ALWAYS_FAIL]  # no handshake ever succeeds for these
        return conj(disj(flow.authenticated, z3.Not(disj([self.rule_matches(r, flow, names=names)
                                                             for r in wanting]))),
                      *[z3.Not(self.rule_matches(r, flow, names=names)) for r in failing])

    def direction_allows(self, policy: PolicySet, direction: Direction, flow: SymbolicFlow,
                         request: Request | None = None) -> z3.BoolRef:
        """Evaluator.direction: deny wins; not default-deny allows; else some allow rule must match
        (the request too, if given) and the handshake succeed where a matching rule wants one."""
        subject, _ = self.sides(flow, direction)
        rules = policy.rules_for(direction)
        allows = [r for r in rules if r.action is Action.ALLOW]
        deny = disj([self.rule_matches(r, flow) for r in rules if r.action is Action.DENY])
        names = self.sees_lookups(allows, flow, direction)
        matched = disj([self.rule_matches(r, flow, names=names) for r in allows])
        admitted = disj([self.rule_matches(r, flow, request, names=names) for r in allows])
        allow = conj(admitted, self.authenticated(allows, flow, names))
        unfiltered = disj(z3.Not(matched), admitted)  # R3.4c: without default deny the proxy still filters
        dd = self.default_deny(policy.default_deny, direction, subject)
        return disj(z3.Not(self.enforced(direction, flow)), conj(z3.Not(deny), z3.If(dd, allow, unfiltered)))

    def allows(self, policy: PolicySet, flow: SymbolicFlow, request: Request | None = None) -> z3.BoolRef:
        """Evaluator.evaluate: a flow to itself passes; otherwise both ends must allow."""
        return disj(flow.same, conj(self.direction_allows(policy, Direction.EGRESS, flow, request),
                                       self.direction_allows(policy, Direction.INGRESS, flow, request)))


def _external_or_reserved(term: Term, model, reserved) -> Endpoint | None:
    kind_external = z3.is_true(model.eval(term.is_kind(Kind.EXTERNAL), model_completion=True))
    if kind_external:
        return external(term.decode_ip(model))
    if z3.is_true(model.eval(term.is_kind(Kind.RESERVED), model_completion=True)):
        return reserved_peer(RESERVED_PEERS[model.eval(reserved, model_completion=True).as_long()])
    return None


class SymbolicSpace(Space):
    """Every possible endpoint; witnesses are invented pods and nodes."""

    def __init__(self, domain: Domain, port_names=()):
        self.domain = domain
        self.port_names = tuple(sorted(set(port_names)))
        self._memo: dict[tuple, object] = {}

    @classmethod
    def for_rules(cls, rules, dds=(), cluster: str = "default", selectors=()) -> "SymbolicSpace":
        names = {pm.name for r in rules for pm in r.ports if pm.name}
        return cls(Domain.of(selectors_of(rules, dds) + list(selectors), cluster), names)

    def term(self, name: str) -> SymbolicTerm:
        return SymbolicTerm(name, self.domain, self.port_names)

    def named_numbers(self, name: str, protocol: Protocol) -> None:
        """Invented pods may give a port name any number."""
        return None

    def local(self, src, dst, tag: str) -> z3.BoolRef:
        return z3.Bool(f"local{tag}")

    def same(self, src, dst) -> z3.BoolRef:
        return z3.BoolVal(False)  # invented endpoints get distinct names

    def pair_constraints(self, flow: SymbolicFlow) -> list:
        """Two pods in one namespace share its namespace labels."""
        a, b = flow.src, flow.dst
        out = []
        ns_keys = [k for k in self.domain.values if k.startswith(NAMESPACE_LABELS_PREFIX)]
        fresh = self.domain.fresh(NAMESPACE_KEY)
        same_ns = conj(a.is_kind(Kind.POD), b.is_kind(Kind.POD), a.labels[NAMESPACE_KEY] == b.labels[NAMESPACE_KEY],
                         a.labels[NAMESPACE_KEY] != fresh)
        for key in ns_keys:
            out.append(z3.Implies(same_ns, a.labels[key] == b.labels[key]))
        return out

    def pin(self, term: SymbolicTerm, ep: Endpoint) -> list:
        kind = {EndpointKind.POD: Kind.POD, EndpointKind.NODE: Kind.NODE}.get(ep.kind)
        if kind is None:
            reserved = [lab.key for lab in ep.identity.labels if lab.key in RESERVED_PEERS]
            if reserved:
                return [term.is_kind(Kind.RESERVED), term.reserved == RESERVED_PEERS.index(reserved[0])]
            ip = ep.ips[0]
            bits = term.ip4 if ip.version == 4 else term.ip6
            return [term.is_kind(Kind.EXTERNAL), term.v4 == (ip.version == 4), bits == int(ip)]
        out = [term.is_kind(kind)]
        labels = {lab.key: lab.value for lab in ep.identity.labels if lab.source != RESERVED}
        for key, var in term.labels.items():
            if key not in labels:
                out.append(var == 0)
            else:
                idx = self.domain.index(key, labels[key])
                out.append(var == (idx if idx is not None else self.domain.fresh(key)))
        for name, (present, num, proto) in term.ports.items():
            nps = [p for p in ep.ports if p.name == name]
            out.append(present == bool(nps))
            if nps:
                out += [num == nps[0].port, proto == int(nps[0].protocol)]
        return out

    def pin_local(self, flow: SymbolicFlow, concrete: Flow) -> list:
        s, d = concrete.src, concrete.dst
        pod, node = (s, d) if s.kind is EndpointKind.POD else (d, s)
        same_node = pod.kind is EndpointKind.POD and node.kind is EndpointKind.NODE and pod.node == node.name
        return [flow.local == same_node]

    def _labels(self, term: SymbolicTerm, model, names: dict) -> dict:
        out = {}
        for key, var in term.labels.items():
            idx = model.eval(var, model_completion=True).as_long()
            if idx == 0:
                continue
            if idx <= len(self.domain.values[key]):
                out[key] = self.domain.values[key][idx - 1]
            else:
                out[key] = names.setdefault((key, term.name), f"pc-{term.name}-{len(names)}")
        return out

    def decode_pair(self, flow: SymbolicFlow, model) -> tuple[Endpoint, Endpoint]:
        local = z3.is_true(model.eval(flow.local, model_completion=True))
        node_name = {t.name: f"node-{t.name}" for t in (flow.src, flow.dst)}
        nodes = [t for t in (flow.src, flow.dst) if z3.is_true(model.eval(t.is_kind(Kind.NODE), model_completion=True))]
        names: dict = {}
        out = []
        for term in (flow.src, flow.dst):
            ep = _external_or_reserved(term, model, term.reserved)
            if ep is None:
                ep = self._decode_labelled(term, model, names, nodes, local, node_name)
            out.append(ep)
        return out[0], out[1]

    def _decode_labelled(self, term: SymbolicTerm, model, names, nodes, local, node_name) -> Endpoint:
        labels = self._labels(term, model, names)
        if z3.is_true(model.eval(term.is_kind(Kind.NODE), model_completion=True)):
            lbls = frozenset(Label("node", k, v) for k, v in labels.items()) | {reserved_label("remote-node")}
            return Endpoint(EndpointKind.NODE, node_name[term.name], "", (), Identity(0, lbls))
        ns = labels[NAMESPACE_KEY]
        if _NS_NAME_KEY in labels:
            labels[_NS_NAME_KEY] = ns
        ports = tuple(NamedPort(n, model.eval(num, model_completion=True).as_long(),
                                Protocol(model.eval(proto, model_completion=True).as_long()))
                      for n, (present, num, proto) in term.ports.items()
                      if z3.is_true(model.eval(present, model_completion=True)))
        node = node_name[nodes[0].name] if nodes and local else "node-elsewhere"
        sa = labels.get(SERVICE_ACCOUNT_KEY, "default")
        labels.setdefault(SERVICE_ACCOUNT_KEY, sa)
        lbls = frozenset(Label("k8s", k, v) for k, v in labels.items())
        return Endpoint(EndpointKind.POD, f"pod-{term.name}", ns, (), Identity(0, lbls), ports, node, sa)


class InventorySpace(Space):
    """Exactly the inventory's endpoints, plus world addresses and reserved identities."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        self.endpoints = tuple(inventory.endpoints)
        self._memo: dict[tuple, object] = {}

    def term(self, name: str) -> InventoryTerm:
        return InventoryTerm(name, self)

    def taken(self, version: int) -> tuple[tuple[int, int], ...]:
        """Addresses no world address can be: the endpoints', and the Services' (a connection to one is a
        connection to a backend after kube-proxy's translation, R7.8, so it is never world)."""
        return self.memo(("taken", version), lambda: runs(
            int(ip) for ip in [*(ip for ep in self.endpoints for ip in ep.ips),
                               *(ip for svc in self.inventory.services for ip in svc.frontends)]
            if ip.version == version))

    def named_numbers(self, name: str, protocol: Protocol) -> tuple[int, ...]:
        """The numbers the inventory's endpoints give port ``name`` of ``protocol``."""
        return tuple(sorted({p.port for ep in self.endpoints for p in ep.ports
                             if p.name == name and p.protocol is protocol}))

    def local(self, src: InventoryTerm, dst: InventoryTerm, tag: str) -> z3.BoolRef:
        """A pod and the node it runs on, either way round: per node, its pods as runs of indices."""
        def pods_by_node():
            index = {ep.name: i for i, ep in enumerate(self.endpoints) if ep.kind is EndpointKind.NODE}
            out: dict[int, list[int]] = {}
            for i, ep in enumerate(self.endpoints):
                if ep.kind is EndpointKind.POD and ep.node in index:
                    out.setdefault(index[ep.node], []).append(i)
            return [(n, runs(pods)) for n, pods in out.items()]
        return disj([disj(conj(one_of(src.choice, pods), dst.choice == n),
                            conj(src.choice == n, one_of(dst.choice, pods)))
                      for n, pods in self.memo(("local",), pods_by_node)])

    def same(self, src: InventoryTerm, dst: InventoryTerm) -> z3.BoolRef:
        """Endpoint equality: the same inventory entry, reserved identity or world address."""
        ext = conj(src.is_kind(Kind.EXTERNAL), dst.is_kind(Kind.EXTERNAL), src.v4 == dst.v4,
                     z3.If(src.v4, src.ip4 == dst.ip4, src.ip6 == dst.ip6))
        rsv = conj(src.is_kind(Kind.RESERVED), dst.is_kind(Kind.RESERVED), src.reserved == dst.reserved)
        return disj(conj(src.choice == dst.choice, src.choice < len(self.endpoints)), ext, rsv)

    def pair_constraints(self, flow: SymbolicFlow) -> list:
        return []

    def pin(self, term: InventoryTerm, ep: Endpoint) -> list:
        if ep in self.endpoints:
            return [term.choice == self.endpoints.index(ep)]
        reserved = [lab.key for lab in ep.identity.labels if lab.key in RESERVED_PEERS]
        if reserved:
            return [term.is_kind(Kind.RESERVED), term.reserved == RESERVED_PEERS.index(reserved[0])]
        ip = ep.ips[0]
        return [term.is_kind(Kind.EXTERNAL), term.v4 == (ip.version == 4),
                (term.ip4 if ip.version == 4 else term.ip6) == int(ip)]

    def pin_local(self, flow: SymbolicFlow, concrete: Flow) -> list:
        return []

    def decode_pair(self, flow: SymbolicFlow, model) -> tuple[Endpoint, Endpoint]:
        out = []
        for term in (flow.src, flow.dst):
            ep = _external_or_reserved(term, model, term.reserved)
            out.append(ep or self.endpoints[model.eval(term.choice, model_completion=True).as_long()])
        return out[0], out[1]


def space_for(policy_rules, dds, cluster: str, inventory: Inventory | None = None, selectors=(),
              unknowns: bool = False) -> Space:
    """The universe a query ranges over: the inventory's, or every endpoint the rules could name."""
    space = InventorySpace(inventory) if inventory is not None else \
        SymbolicSpace.for_rules(policy_rules, dds, cluster, selectors)
    space.unknowns = unknowns
    return space


def fresh_flow(space: Space, tag: str = "") -> SymbolicFlow:
    """The symbolic flow over ``space`` for a new query.

    Built once per space and tag: a check asks thousands of queries over one inventory space, and the
    flow's variables and constraints are the same terms every time.  What the encoded rules read (a
    peer's DNS name, the handshake) is the query's own: it starts unread.
    """
    flow = space.memo(("flow", tag), lambda: SymbolicFlow(space, tag))
    flow.reads_auth = flow.src.reads_dns = flow.dst.reads_dns = False  # what this query's rules read
    return flow


def new_flow(space: Space, solver: z3.Solver, tag: str = "") -> SymbolicFlow:
    """``fresh_flow``, well-formed in ``solver``."""
    flow = fresh_flow(space, tag)
    solver.add(*space.memo(("wellformed", tag), flow.wellformed))
    return flow
