"""Services: what kube-proxy translates a connection to, and what ``toServices`` selects.

Policy never sees a Service address.  A connection to a ClusterIP (or an external or load-balancer
address, or a node's NodePort) is decided against the backend kube-proxy translates it to, on the
backend port (R7.8); a pod that reaches itself through its Service skips policy (R11.6).  A
``toServices`` peer selects the pods of the Service's selector in the Service's namespace, or, for
a Service without a selector, its EndpointSlice addresses as CIDRs, which never select pods (R10.6,
as current Cilium's pkg/policy/k8s/service.go translates it).

Backends are the EndpointSlices' ready endpoints (what kube-proxy reads); a Service with a selector
and no EndpointSlice in the inventory gets what the EndpointSlice controller would write: the pods
of its namespace that match, each with its named target port resolved among its own container
ports (a pod without that port is no backend for it).
"""
from __future__ import annotations

import difflib
import ipaddress
from dataclasses import dataclass, replace

from .diagnostics import Diagnostic, PolicycError
from .evaluate import DirectionVerdict, Evaluator, Flow, Reason, Verdict
from .inventory import Inventory, external
from .ir import (ANY_SOURCE, NAMESPACE_KEY, Action, CIDRPeer, Direction, Endpoint, EndpointKind, IPAddress,
                 Op, PolicySet, Protocol, Requirement, Rule, Selector, SelectorPeer, Service, ServicePort,
                 ServiceRef)

PREFIX = "svc:"


@dataclass(frozen=True)
class Backend:
    """Where kube-proxy may send one Service port: an endpoint and its port."""

    endpoint: Endpoint
    port: int
    protocol: Protocol
    node: str | None = None

    def __str__(self) -> str:
        return f"{self.endpoint.display} {self.port}/{self.protocol.label}"


@dataclass(frozen=True)
class Frontend:
    """One way into a Service: an address and port kube-proxy translates.

    ``node`` is set for the NodePort of a Service with ``externalTrafficPolicy: Local``, whose
    traffic only goes to backends on the node it arrived at; ``family`` for an address, whose
    traffic only goes to backends of its address family (one EndpointSlice per family).
    """

    service: Service
    port: ServicePort
    via: str
    node: str | None = None
    family: int | None = None

    @property
    def display(self) -> str:
        return PREFIX + self.service.display


def pod_selector(service: Service) -> Selector:
    """The pods a Service selects: its selector's keys of any source, in its own namespace.

    Cilium builds the same selector for a ``toServices`` peer (any-source keys, the namespace
    label added), so the peer and the backends can never disagree on which pods they mean.
    """
    reqs = [Requirement(ANY_SOURCE, k, Op.IN, (v,)) for k, v in service.selector or ()]
    return Selector(tuple(sorted(reqs))).with_requirements(Requirement("k8s", NAMESPACE_KEY, Op.IN,
                                                                       (service.namespace,)))


def ref_matches(ref: ServiceRef, service: Service) -> bool:
    """R10.7: no namespace means every namespace; by name, or by the Service's own labels."""
    if ref.namespace is not None and ref.namespace != service.namespace:
        return False
    if ref.selector is not None:
        return ref.selector.matches(service.labels)
    return bool(ref.name) and ref.name == service.name


def _pod_port(ep: Endpoint, port: ServicePort) -> int | None:
    """The backend port of ``port`` on pod ``ep``: the number, or the container port of that name and protocol."""
    if isinstance(port.target, int):
        return port.target
    return next((np.port for np in ep.ports if np.name == port.target and np.protocol is port.protocol), None)


class ServiceMap:
    """An inventory's Services with the indexes every question about them needs, built once."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        self.services = inventory.services
        self._by_name = {s.display: s for s in self.services}
        self._by_address: dict[IPAddress, Service] = {ip: s for s in self.services for ip in s.frontends}
        self._endpoint_at = {ip: ep for ep in inventory.endpoints for ip in ep.ips}
        self._node_ports = {(p.node_port, p.protocol): (s, p) for s in self.services for p in s.ports
                            if p.node_port is not None}

    def endpoint_at(self, ip: IPAddress) -> Endpoint:
        return self._endpoint_at.get(ip) or external(ip)

    def service_at(self, ip: IPAddress) -> Service | None:
        return self._by_address.get(ip)

    def named(self, ref: str) -> Service:
        """``svc:NS/NAME`` or ``NS/NAME``; an unknown name is an error that suggests a close one."""
        name = ref.removeprefix(PREFIX)
        if name in self._by_name:
            return self._by_name[name]
        close = difflib.get_close_matches(name, list(self._by_name), n=1, cutoff=0.6)
        known = ", ".join(list(self._by_name)[:8])
        raise PolicycError(Diagnostic.simple(
            f"unknown service {ref!r}: expected svc:NAMESPACE/NAME of a Service in the inventory"
            + (f"; did you mean {PREFIX + close[0]!r}?" if close else f" (known: {known})" if known
               else " (the inventory has no Service: `kubectl get services,endpointslices -A -o yaml`)")))

    def backends(self, service: Service, port: ServicePort, node: str | None = None,
                 family: int | None = None) -> tuple[Backend, ...]:
        """Where kube-proxy sends ``port`` of ``service``; with ``node`` only backends on that node, with
        ``family`` only those with an address of that family."""
        if service.slices:
            out = [Backend(self.endpoint_at(ip), sp.port, sp.protocol, e.node or self.endpoint_at(ip).node)
                   for sl in service.slices for sp in sl.ports
                   if sp.name == port.name and sp.protocol is port.protocol
                   for e in sl.endpoints if e.ready for ip in e.addresses if family in (None, ip.version)]
        elif service.selector:
            sel = pod_selector(service)
            out = [Backend(ep, number, port.protocol, ep.name if ep.kind is EndpointKind.NODE else ep.node)
                   for ep in self.inventory.select(sel)  # a hostNetwork pod is reached at its node
                   if any(family in (None, ip.version) for ip in ep.ips)
                   for number in [_pod_port(ep, port)] if number is not None]
        else:
            out = []
        return tuple(b for b in dict.fromkeys(out) if node is None or b.node == node)

    def frontend(self, ref: str, port: int, protocol: Protocol) -> Frontend | None:
        """The Service a ``--to`` reference reaches on ``port``, or None for a plain endpoint.

        ``svc:NS/NAME``, a Service address (ClusterIP, external or load-balancer IP), or a node
        (name or address) with one of the Services' NodePorts.
        """
        if ref.startswith(PREFIX):
            service = self.named(ref)
            return Frontend(service, self._port(service, port, protocol),
                            ", ".join(str(ip) for ip in service.cluster_ips) or "no ClusterIP")
        try:
            ip = ipaddress.ip_address(ref)
        except ValueError:
            ip = None
        service = self.service_at(ip) if ip is not None else None
        if service is not None:
            return Frontend(service, self._port(service, port, protocol), str(ip), family=ip.version)
        hit = self._node_ports.get((port, protocol))
        if hit is None:
            return None
        node = next((ep for ep in self.inventory.nodes if ep.name == ref or ip in ep.ips), None)
        if node is None:
            return None
        service, sport = hit
        return Frontend(service, sport, f"NodePort {node.name}:{port}",
                        node.name if service.external_traffic_policy == "Local" else None,
                        ip.version if ip is not None else None)

    def stands_for(self, ref: str) -> tuple[Service, tuple[Endpoint, ...]] | None:
        """The Service ``svc:NS/NAME`` or a Service address names, with its backends on every port (where a
        connection to it ends, R7.8); None when ``ref`` names no Service."""
        try:
            service = self.named(ref) if ref.startswith(PREFIX) else self.service_at(ipaddress.ip_address(ref))
        except ValueError:
            return None
        if service is None:
            return None
        return service, tuple(dict.fromkeys(b.endpoint for sp in service.ports for b in self.backends(service, sp)))

    @staticmethod
    def _port(service: Service, port: int, protocol: Protocol) -> ServicePort:
        for sp in service.ports:
            if (sp.port, sp.protocol) == (port, protocol):
                return sp
        have = ", ".join(f"{sp}{' ' + sp.name if sp.name else ''} -> {sp.target}" for sp in service.ports) or "none"
        raise PolicycError(Diagnostic.simple(f"service {service.display} has no port {port}/{protocol.label} "
                                             f"(its ports: {have})"))


# ---- decisions ----

@dataclass(frozen=True)
class ServiceVerdict:
    """One source's connection to a Service port: the verdict for every backend it may reach."""

    src: Endpoint
    frontend: Frontend
    backends: tuple[tuple[Backend, Verdict], ...]

    @property
    def allowed(self) -> int:
        return sum(v.allowed for _, v in self.backends)

    @property
    def verdict(self) -> str:
        """allow (every backend), deny (none, or no backend at all: kube-proxy refuses), or partial."""
        n = self.allowed
        if n and n == len(self.backends):
            return "allow"
        return "partial" if n else "deny"


def hairpin(src: Endpoint, backend: Backend) -> Verdict:
    """R11.6: a pod reaching itself through its Service meets no policy in either direction."""
    ok = lambda d: DirectionVerdict(d, src, Action.ALLOW, Reason.HAIRPIN)  # noqa: E731
    return Verdict(Flow(src, src, backend.protocol, backend.port), ok(Direction.EGRESS), ok(Direction.INGRESS))


def decide(evaluator: Evaluator, smap: ServiceMap, src: Endpoint, frontend: Frontend) -> ServiceVerdict:
    """Each backend's verdict for ``src``: the flow as policy sees it, after translation (R7.8)."""
    out = []
    for b in smap.backends(frontend.service, frontend.port, frontend.node, frontend.family):
        v = hairpin(src, b) if b.endpoint == src else evaluator.evaluate(Flow(src, b.endpoint, b.protocol, b.port))
        out.append((b, v))
    return ServiceVerdict(src, frontend, tuple(out))


@dataclass(frozen=True)
class Cell:
    """One matrix cell from a source to a Service port: each backend and whether it is reached."""

    port: int
    protocol: Protocol
    src: int
    frontend: Frontend
    backends: tuple[tuple[Backend, bool], ...]

    @property
    def verdict(self) -> str:
        """As ``ServiceVerdict.verdict``."""
        n = sum(ok for _, ok in self.backends)
        return "allow" if n and n == len(self.backends) else "partial" if n else "deny"


def cells(policy: PolicySet, smap: ServiceMap, endpoints: list[Endpoint], services: list[Service],
          ports: list[tuple[int, Protocol]]):
    """``Cell``s for every source of ``endpoints`` and every port of ``services`` among ``ports``.

    The verdicts come from reachability's class tables on the backend ports (the evaluator's pair
    verdict as set algebra), so a Service column costs one table per distinct backend port; a node,
    as a source or as a backend (``default/kubernetes``), is asked of the evaluator, since a node's
    identity depends on who looks at it (R3.9).
    """
    from .reachability import tables

    evaluator = Evaluator(policy)
    fronts = [(port, proto, Frontend(s, sp, ", ".join(map(str, s.cluster_ips)) or "no ClusterIP"))
              for port, proto in ports for s in services for sp in s.ports if (sp.port, sp.protocol) == (port, proto)]
    backs = {id(f): smap.backends(f.service, f.port) for _, _, f in fronts}
    peers = [ep for ep in dict.fromkeys([*endpoints, *(b.endpoint for bs in backs.values() for b in bs)])
             if ep.kind is not EndpointKind.NODE]
    index = {ep: i for i, ep in enumerate(peers)}
    wanted = sorted({(b.port, b.protocol) for bs in backs.values() for b in bs})
    reach = {(port, proto): (cls, allowed) for port, proto, cls, allowed in tables(policy, peers, wanted)}

    def reached(src: Endpoint, b: Backend) -> bool:
        if src == b.endpoint:
            return True  # hairpin (R11.6)
        if src not in index or b.endpoint not in index:
            return evaluator.evaluate(Flow(src, b.endpoint, b.protocol, b.port)).allowed
        cls, allowed = reach[(b.port, b.protocol)]
        return cls[index[b.endpoint]] in allowed[cls[index[src]]]

    for port, proto, front in fronts:
        for i, src in enumerate(endpoints):
            yield Cell(port, proto, i, front, tuple((b, reached(src, b)) for b in backs[id(front)]))


# ---- toServices ----

def is_service_peer(peer) -> bool:
    return isinstance(peer, SelectorPeer) and peer.service is not None


def matching(ref: ServiceRef, services: tuple[Service, ...]) -> list[Service]:
    return [s for s in services if ref_matches(ref, s)]


def bound_peers(peer: SelectorPeer, services: tuple[Service, ...]) -> tuple:
    """A ``toServices`` peer as the peers its Services stand for (R10.6)."""
    found = matching(peer.service, services)
    selectors = tuple(pod_selector(s) for s in found if s.selector)
    cidrs = [CIDRPeer(ipaddress.ip_network(ip)) for s in found if not s.selector
             for sl in s.slices for e in sl.endpoints if e.ready for ip in e.addresses]
    return (replace(peer, selectors=selectors), *dict.fromkeys(cidrs))


def bind(policy: PolicySet, services: tuple[Service, ...]) -> PolicySet:
    """Every ``toServices`` peer resolved against ``services``; the policy itself when it has none.

    Deny rules keep theirs unresolved: Cilium translates ``toServices`` in ``egress`` only, so in
    ``egressDeny`` it denies nothing (the frontend warns).
    """
    def bound(rule: Rule) -> Rule:
        if rule.action is Action.DENY or not any(map(is_service_peer, rule.peers)):
            return rule
        peers = [q for p in rule.peers for q in (bound_peers(p, services) if is_service_peer(p) else (p,))]
        return replace(rule, peers=tuple(dict.fromkeys(peers)))

    if not any(is_service_peer(p) for r in policy.rules for p in r.peers):
        return policy
    return replace(policy, rules=tuple(bound(r) for r in policy.rules))


def unmatched(policy: PolicySet, services: tuple[Service, ...]) -> list[tuple[Rule, SelectorPeer]]:
    """``toServices`` peers of allow rules that no Service matches: they allow nothing."""
    return [(r, p) for r in policy.rules if r.action is Action.ALLOW for p in r.peers
            if is_service_peer(p) and not matching(p.service, services)]
