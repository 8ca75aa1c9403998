"""The one intermediate representation every interpreter reads.

The frontend turns CNP, CCNP and Kubernetes NetworkPolicy into these frozen
values; the concrete evaluator, the Z3 encoding and the datapath lowering read
nothing else.  After the frontend:

* every selector is cluster-absolute (namespace scoping already applied);
* entities, node selectors and endpoint selectors are all ``SelectorPeer``;
* ``protocol: ANY`` in toPorts is expanded to TCP, UDP and SCTP (R8.2), and an
  L3-only rule carries one ``PortMatch`` with ``Protocol.ANY`` (every IP
  protocol, every port: R5.2b);
* a rule whose ``peers`` or ``ports`` is empty matches nothing (R5.1, R5.6).

Rule numbers (R…) refer to docs/semantics.md.
"""
from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Union

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def unmapped(value):
    """An IPv4-mapped IPv6 address or prefix (``::ffff:a.b.c.d``) as the IPv4 one: a dual-stack socket
    connecting to ``::ffff:169.254.169.254`` sends IPv4 packets to 169.254.169.254, and policyc's datapath
    keeps IPv4 in that very range of its one trie, so an address asked about is answered as IPv4 (R7.7b)."""
    if isinstance(value, ipaddress.IPv6Address):
        return value.ipv4_mapped or value
    if isinstance(value, ipaddress.IPv6Network) and value.prefixlen >= 96 and value.subnet_of(IPV4_MAPPED):
        return ipaddress.ip_network(f"{value.network_address.ipv4_mapped}/{value.prefixlen - 96}")
    return value

ANY_SOURCE = "any"
NAMESPACE_KEY = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
SERVICE_ACCOUNT_KEY = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_KEY = "io.cilium.k8s.policy.cluster"
DEFAULT_CLUSTER = "default"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # the one namespace label its name alone gives
# A pod registered before its labels are known (the node agent) carries this marker: value "pod" when
# only its own labels and service account are unknown, "namespace" when its namespace's are too.
PENDING_SOURCE, PENDING_KEY = "policyc", "labels-pending"


class Direction(str, enum.Enum):
    INGRESS = "ingress"
    EGRESS = "egress"


class Action(str, enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


class SubjectKind(str, enum.Enum):
    """Pods are selected by endpointSelector, the host endpoint by nodeSelector (R2.7)."""

    ENDPOINT = "endpoint"
    NODE = "node"


class Protocol(enum.IntEnum):
    """IP protocol numbers; ANY stands for every IP protocol (L3-only rules) in a rule. OTHER stands, in a
    flow, for every IP protocol no rule can name (GRE, ESP, IPIP, OSPF, ...; 255 is IANA's reserved
    number): only L3-only rules match it, so the verifier must see it or a change that opens GRE passes."""

    ANY = 0
    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58
    SCTP = 132
    OTHER = 255

    @property
    def label(self) -> str:
        return "ICMPv6" if self is Protocol.ICMPV6 else self.name

    @property
    def family(self) -> int | None:
        """The one IP version ICMP and ICMPv6 travel on; None for protocols that use both."""
        return {Protocol.ICMP: 4, Protocol.ICMPV6: 6}.get(self)

    @classmethod
    def parse(cls, text: str) -> "Protocol":
        """Case-insensitive name to protocol; raises KeyError for unknown names."""
        return _PROTOCOL_NAMES[text.strip().upper()]


_PROTOCOL_NAMES = {p.label.upper(): p for p in Protocol}  # built once: the inventory parses every pod port


class Op(str, enum.Enum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True, order=True)
class Label:
    """One identity label ``source:key=value`` (R2.1)."""

    source: str
    key: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.source}:{self.key}={self.value}"


LabelSet = frozenset  # frozenset[Label]
PENDING_SCOPES = ("pod", "namespace")


def pending_label(scope: str) -> Label:
    return Label(PENDING_SOURCE, PENDING_KEY, scope)


_PENDING_LABELS = tuple((scope, Label(PENDING_SOURCE, PENDING_KEY, scope)) for scope in PENDING_SCOPES)


def pending_scope(labels: frozenset) -> str | None:
    """``pod`` or ``namespace`` for a pod whose labels are not known yet, else None."""
    for scope, label in _PENDING_LABELS:
        if label in labels:
            return scope
    return None


@functools.lru_cache(maxsize=1 << 18)
def label_values(labels: frozenset, source: str, key: str) -> frozenset[str]:
    """Values of ``key`` in ``labels``; source ``any`` matches every source (R2.2).

    Cached: lowering matches every selector against every identity, and a
    frozenset keeps its hash, so a hit costs less than one scan of the labels.
    """
    return frozenset(
        lab.value for lab in labels
        if lab.key == key and (source == ANY_SOURCE or lab.source == source)
    )


@dataclass(frozen=True, order=True)
class Requirement:
    """A Kubernetes label-selector requirement on a source-qualified key."""

    source: str
    key: str
    op: Op
    values: tuple[str, ...] = ()

    def matches(self, labels: frozenset) -> bool:
        """Kubernetes semantics: NotIn and DoesNotExist hold for identities lacking the key (R2.17)."""
        present = label_values(labels, self.source, self.key)
        if self.op is Op.EXISTS:
            return bool(present)
        if self.op is Op.DOES_NOT_EXIST:
            return not present
        hit = bool(present & frozenset(self.values))
        return hit if self.op is Op.IN else not hit

    def known_when_pending(self, scope: str) -> bool:
        """Whether a pending pod's labels already decide this requirement: its namespace, cluster and
        (scope ``pod``) namespace labels are known; its own labels and service account are not."""
        if self.source not in ("k8s", ANY_SOURCE) or self.key in (NAMESPACE_KEY, CLUSTER_KEY):
            return True  # pods carry k8s labels only, and these two keys come from where the pod runs
        if self.key.startswith(NAMESPACE_LABELS_PREFIX):
            return scope == "pod" or self.key == NAMESPACE_LABELS_PREFIX + NAMESPACE_NAME_LABEL
        return False

    def __str__(self) -> str:
        key = f"{self.source}:{self.key}"
        if self.op is Op.EXISTS:
            return key
        if self.op is Op.DOES_NOT_EXIST:
            return f"!{key}"
        if self.op is Op.IN and len(self.values) == 1:
            return f"{key}={self.values[0]}"
        word = "in" if self.op is Op.IN else "notin"
        return f"{key} {word} ({','.join(self.values)})"


@dataclass(frozen=True)
class Selector:
    """A conjunction of requirements; no requirement selects every identity (R2.4)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: frozenset) -> bool:
        return all(req.matches(labels) for req in self.requirements)

    def bounds(self, labels: frozenset, scope: str) -> tuple[bool, bool]:
        """(matches whatever the unknown labels turn out to be, may match) for a pending pod's ``labels``.

        A requirement on an unknown label could go either way; treating contradictory ones as possible
        only makes "may match" larger, which is the safe side (denies and default-deny use it).
        """
        certain = True
        for req in self.requirements:
            if req.known_when_pending(scope):
                if not req.matches(labels):
                    return False, False
            else:
                certain = False
        return certain, True

    @property
    def is_wildcard(self) -> bool:
        return not self.requirements

    @property
    def namespace(self) -> str | None:
        """The one namespace this selector requires, if it requires one (pods elsewhere never match)."""
        for req in self.requirements:
            if req.key == NAMESPACE_KEY and req.source in ("k8s", ANY_SOURCE) and req.op is Op.IN \
                    and len(req.values) == 1:
                return req.values[0]
        return None

    def mentions(self, key: str, sources: tuple[str, ...] = ("k8s", ANY_SOURCE)) -> bool:
        return any(r.key == key and r.source in sources for r in self.requirements)

    def mentions_prefix(self, prefix: str, sources: tuple[str, ...] = ("k8s", ANY_SOURCE)) -> bool:
        return any(r.key.startswith(prefix) and r.source in sources for r in self.requirements)

    def mentions_source(self, source: str) -> bool:
        return any(r.source == source for r in self.requirements)

    def with_requirements(self, *extra: Requirement) -> "Selector":
        return Selector(tuple(sorted(set(self.requirements) | set(extra))))

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements) or "{}"


@dataclass(frozen=True)
class ServiceRef:
    """One ``toServices`` entry: a Service by name, or Services by their own labels (R10.6).

    ``namespace`` None matches Services of every namespace (R10.7); ``selector`` is over the
    Service's labels, not its pods'.
    """

    namespace: str | None
    name: str | None = None
    selector: Selector | None = None

    def __str__(self) -> str:
        what = self.name if self.selector is None else "{" + str(self.selector) + "}"
        return f"{self.namespace or '*'}/{what}"


@dataclass(frozen=True)
class SelectorPeer:
    """Identities matching any of ``selectors``.

    ``kind`` says where it came from (endpoints, entity, nodes, service) so that checks
    can talk about it; ``name`` holds the entity name for entities.  A ``toServices`` entry is
    a ``service`` peer carrying its ``ServiceRef``: it has no selectors (matches nothing, as in
    Cilium while no Service matches) until ``services.bind`` gives it those of its Services.
    """

    selectors: tuple[Selector, ...]
    kind: str = "endpoints"
    name: str = ""
    service: ServiceRef | None = None

    def __str__(self) -> str:
        if self.kind == "entity":
            return f"entity:{self.name}"
        if self.service is not None:
            return f"service:{self.service}"
        return " | ".join(f"{self.kind}({s})" for s in self.selectors)


@dataclass(frozen=True)
class CIDRPeer:
    """Addresses in ``network`` but in none of ``excepts``; never pods or nodes (R7.1)."""

    network: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, ip: IPAddress) -> bool:
        if ip.version != self.network.version or ip not in self.network:
            return False
        return not any(ip in ex for ex in self.excepts)

    def __str__(self) -> str:
        if not self.excepts:
            return f"cidr:{self.network}"
        return f"cidr:{self.network} except {','.join(map(str, self.excepts))}"


@dataclass(frozen=True)
class FQDNPeer:
    """Addresses learned from DNS answers for matching names (R10.1, R10.2).

    Which address a name resolves to is unknown statically: a concrete endpoint
    matches only through the DNS names it carries (``Endpoint.dns_names``, which
    inventories never fill), so concrete answers treat these peers as matching
    nothing (R10.2c) while the merge gate treats every name as possible (R10.5).
    """

    match_name: str | None = None
    match_pattern: str | None = None

    def __str__(self) -> str:
        return f"fqdn:{self.match_name or self.match_pattern}"


Peer = Union[SelectorPeer, CIDRPeer, FQDNPeer]


@dataclass(frozen=True)
class HTTPRule:
    """One HTTP entry. ``header_matches`` keeps each ``headerMatches`` item as canonical JSON: policyc
    cannot read secrets or mismatch actions, but two entries that differ in them must not compare
    equal, and each item is an opaque condition on the request, as a ``headers`` item is."""

    method: str | None = None
    path: str | None = None
    host: str | None = None
    headers: tuple[str, ...] = ()
    header_matches: tuple[str, ...] = ()

    @property
    def header_parts(self) -> tuple[str, ...]:
        """Every header condition, each an opaque part of the filter (evaluate.opaque_key)."""
        return self.headers + self.header_matches


@dataclass(frozen=True)
class DNSRule:
    match_name: str | None = None
    match_pattern: str | None = None


@dataclass(frozen=True)
class L7Rules:
    """Request-level filters; the L4 part is allowed and the flow goes to a proxy (R9.1).

    ``opaque`` keeps rules policyc does not interpret (kafka, l7proto) as
    canonical JSON strings, so they still take part in equality.
    """

    kind: str  # http | dns | kafka | generic
    http: tuple[HTTPRule, ...] = ()
    dns: tuple[DNSRule, ...] = ()
    opaque: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortMatch:
    """One protocol and destination-port range, or a named port resolved at the destination (R8.4).

    For ICMP and ICMPv6 the port slot holds the ICMP type (R8.6). ``tls`` keeps ``serverNames``,
    ``terminatingTLS``, ``originatingTLS`` and ``listener`` as canonical JSON: the datapath and
    concrete answers ignore them (L3/L4 only), the verifier treats each as an opaque condition on
    the connection's requests, so a change to them is never "no change".
    """

    protocol: Protocol
    first: int = 0
    last: int = 65535
    name: str | None = None
    l7: L7Rules | None = None
    tls: tuple[str, ...] = ()

    @property
    def filtered(self) -> bool:
        """Whether something beyond L3/L4 (an L7 rule, TLS or a listener) decides requests here."""
        return self.l7 is not None or bool(self.tls)

    @property
    def is_l3_only(self) -> bool:
        return self.protocol is Protocol.ANY

    def __str__(self) -> str:
        proto = "any" if self.protocol is Protocol.ANY else self.protocol.label
        if self.name:
            where = self.name
        elif (self.first, self.last) == (0, 65535):
            where = "*"
        elif self.first == self.last:
            where = str(self.first)
        else:
            where = f"{self.first}-{self.last}"
        return f"{where}/{proto}" + (f" +{self.l7.kind}" if self.l7 else "")


L3_ONLY = (PortMatch(Protocol.ANY),)


@dataclass(frozen=True)
class Origin:
    """Where a rule was written: enough to point a user (or SARIF) at it."""

    file: str
    line: int
    column: int
    path: str
    policy_kind: str
    namespace: str
    name: str

    @property
    def policy(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class Rule:
    """One allow or deny rule of one subject in one direction.

    Matches a flow when the peer matches any of ``peers`` and the flow's
    protocol and destination port match any of ``ports``.
    """

    id: str
    origin: Origin
    subject: Selector
    subject_kind: SubjectKind
    direction: Direction
    action: Action
    peers: tuple[Peer, ...]
    ports: tuple[PortMatch, ...]
    auth: str | None = None

    @property
    def is_empty(self) -> bool:
        return not self.peers or not self.ports


@dataclass(frozen=True)
class DefaultDeny:
    """Endpoints matching ``subject`` are default-deny in ``direction`` (R3.4).

    ``implied_by`` lists the rules whose presence alone creates the entry (the
    section's rules, R3.2/R3.6; a KNP section without policyTypes, R12.7):
    deleting all of them deletes the entry too, so a rule that looks redundant
    may still be the only thing switching its subject to default-deny.  Empty
    when the entry stands on its own (a KNP policyType).
    """

    subject: Selector
    subject_kind: SubjectKind
    direction: Direction
    origin: Origin
    implied_by: tuple[str, ...] = ()

    def goes_with(self, gone) -> bool:
        """Deleting the rules ``gone`` (a collection of rule ids) deletes this entry: it stood only on
        rules, and every one of them is gone; one left keeps it (several deleted at once: R3.6)."""
        return bool(self.implied_by) and all(i in gone for i in self.implied_by)


@dataclass(frozen=True)
class Policy:
    """One source object, kept for policy-level checks (duplicates, suppressions)."""

    kind: str
    namespace: str
    name: str
    origin: Origin
    ignore: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicySet:
    rules: tuple[Rule, ...] = ()
    default_deny: tuple[DefaultDeny, ...] = ()
    policies: tuple[Policy, ...] = ()
    cluster: str = DEFAULT_CLUSTER

    def rules_for(self, direction: Direction, action: Action | None = None) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules
                     if r.direction is direction and (action is None or r.action is action))

    def without(self, rule_ids) -> "PolicySet":
        """The policy set with these rules deleted from their sources: a default-deny entry that only
        they implied goes with them (R3.6)."""
        gone = frozenset(rule_ids)
        return PolicySet(tuple(r for r in self.rules if r.id not in gone),
                         tuple(d for d in self.default_deny if not d.goes_with(gone)), self.policies, self.cluster)


# ---- endpoints and identities (read by every interpreter, built by inventory.py) ----

class EndpointKind(str, enum.Enum):
    POD = "pod"
    NODE = "node"
    EXTERNAL = "external"


@dataclass(frozen=True)
class NamedPort:
    name: str
    port: int
    protocol: Protocol


@dataclass(frozen=True)
class Identity:
    """A numeric security identity and its label set (R2.1, R6.9)."""

    id: int
    labels: frozenset = field(default_factory=frozenset)


@dataclass(frozen=True)
class Endpoint:
    """A pod, a node or an address outside the cluster."""

    kind: EndpointKind
    name: str
    namespace: str
    ips: tuple[IPAddress, ...]
    identity: Identity
    ports: tuple[NamedPort, ...] = ()
    node: str | None = None
    service_account: str = "default"
    dns_names: tuple[str, ...] = ()  # names an external address was learned under (toFQDNs, R10.1)

    @property
    def display(self) -> str:
        if self.kind is EndpointKind.POD:
            return f"{self.namespace}/{self.name}"
        if self.dns_names:
            return f"{self.name} ({', '.join(self.dns_names)})"
        return self.name


# ---- Services (built by inventory.py from Service and EndpointSlice objects, read by services.py) ----

@dataclass(frozen=True)
class ServicePort:
    """One port of a Service: ``target`` is a number or a container-port name resolved per backend pod."""

    name: str
    protocol: Protocol
    port: int
    target: int | str
    node_port: int | None = None

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol.label}"


@dataclass(frozen=True)
class SliceEndpoint:
    """One endpoint of an EndpointSlice; ``ready`` False is never a backend (kube-proxy skips it)."""

    addresses: tuple[IPAddress, ...]
    ready: bool = True
    node: str | None = None


@dataclass(frozen=True)
class SlicePort:
    """A backend port of an EndpointSlice, named after the Service port it serves."""

    name: str
    protocol: Protocol
    port: int


@dataclass(frozen=True)
class EndpointSlice:
    namespace: str
    name: str
    service: str
    ports: tuple[SlicePort, ...]
    endpoints: tuple[SliceEndpoint, ...]


@dataclass(frozen=True)
class Service:
    """A Service and the EndpointSlices that name it.

    ``selector`` is None for a selector-less Service (its backends are its EndpointSlices' addresses);
    ``cluster_ips`` is empty for a headless or ExternalName Service; ``labels`` are the Service's own
    (``k8sServiceSelector`` matches them), as ``k8s`` labels.
    """

    namespace: str
    name: str
    labels: frozenset
    selector: tuple[tuple[str, str], ...] | None
    type: str
    cluster_ips: tuple[IPAddress, ...]
    ports: tuple[ServicePort, ...]
    external_traffic_policy: str = "Cluster"
    external_ips: tuple[IPAddress, ...] = ()
    slices: tuple[EndpointSlice, ...] = ()
    origin: str = ""

    @property
    def display(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def frontends(self) -> tuple[IPAddress, ...]:
        """Addresses kube-proxy translates for this Service: ClusterIPs, then external and LB addresses."""
        return self.cluster_ips + self.external_ips
