"""Cluster inventory: Namespaces, Pods and Nodes → endpoints with Cilium identities; Services and
EndpointSlices → ``Service`` values.

Each pod's identity labels follow R2.3 (pod labels, namespace, namespace
labels, service account, cluster); equal label sets share one numeric identity
from 256 up, in a deterministic order so artifacts are reproducible.  Services and
EndpointSlices are read as ``kubectl get services,endpointslices -A -o yaml`` prints them;
what they translate to is services.py's job.

A ``hostNetwork: true`` pod is no Cilium endpoint: it shares its node's
network namespace and addresses, so its traffic carries the node's identity
(``host`` on that node, ``remote-node`` elsewhere) and no endpointSelector
selects it.  Such a pod becomes no endpoint; naming it finds its node.
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from .diagnostics import Diagnostic, PolicycError, Severity
from .entities import FIRST_CLUSTER_ID, RESERVED_IDS, reserved_label, world_labels
from .ir import (CLUSTER_KEY, DEFAULT_CLUSTER, NAMESPACE_KEY,
                 NAMESPACE_LABELS_PREFIX, SERVICE_ACCOUNT_KEY, Endpoint,
                 EndpointKind, EndpointSlice, Identity, IPAddress, Label, NamedPort, Protocol,
                 Service, ServicePort, SliceEndpoint, SlicePort, unmapped)
from .source import Document, kube_objects, load_documents


@dataclass(frozen=True)
class Inventory:
    endpoints: tuple[Endpoint, ...] = ()
    namespaces: dict = field(default_factory=dict)  # name -> labels
    cluster: str = DEFAULT_CLUSTER
    diagnostics: tuple[Diagnostic, ...] = ()  # what the dump leaves unknown or ambiguous (warnings, notes)
    host_network: dict = field(default_factory=dict)  # "ns/pod" of a hostNetwork pod -> its node's name
    host_labels: dict = field(default_factory=dict)  # "ns/pod" of a hostNetwork pod -> the labels it would carry
    services: tuple[Service, ...] = ()

    @property
    def pods(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.kind is EndpointKind.POD)

    @property
    def nodes(self) -> tuple[Endpoint, ...]:
        return tuple(e for e in self.endpoints if e.kind is EndpointKind.NODE)

    @property
    def identities(self) -> tuple[Identity, ...]:
        """Every identity an inventory endpoint carries, without repeats, by number."""
        return tuple(sorted({e.identity for e in self.endpoints}, key=lambda i: i.id))

    def select(self, selector) -> tuple[Endpoint, ...]:
        """The pods a label selector matches, a matching hostNetwork pod as its node (whose traffic
        its traffic is): a question about such pods is about their nodes, never about nothing."""
        pods = [ep for ep in self.pods if selector.matches(ep.identity.labels)]
        hosts = [self.find(ref) for ref, labels in self.host_labels.items() if selector.matches(labels)]
        return tuple(dict.fromkeys(pods + hosts))

    def holder(self, ip: IPAddress) -> Endpoint | None:
        """The pod or node that holds ``ip``, if any."""
        return next((ep for ep in self.endpoints if ip in ep.ips), None)

    def find(self, ref: str) -> Endpoint:
        """``ns/pod``, a node name, or an address (of a pod, a node, or outside the cluster).

        A hostNetwork pod is found as its node: that is whose identity its traffic carries.
        """
        for ep in self.endpoints:
            if ep.display == ref:
                return ep
        if ref in self.host_network:
            node = self.host_network[ref]
            found = [ep for ep in self.nodes if ep.name == node]
            if not found:
                raise PolicycError(Diagnostic.simple(
                    f"{ref!r} is a hostNetwork pod, so its traffic is its node's, but its node "
                    f"{node or '(spec.nodeName unset)'} is not in the inventory"))
            return found[0]
        if ref.removeprefix("reserved:") in RESERVED_PEERS and ref.startswith("reserved:"):
            return reserved_peer(ref.removeprefix("reserved:"))
        try:
            ip = unmapped(ipaddress.ip_address(ref))
        except ValueError:
            names = [e.display for e in self.endpoints]
            close = difflib.get_close_matches(ref, names, n=1, cutoff=0.6)
            known = ", ".join(names[:8])
            raise PolicycError(Diagnostic.simple(
                f"unknown endpoint {ref!r}: expected namespace/pod, a node name or an IP address"
                + (f"; did you mean {close[0]!r}?" if close else f" (known: {known}, ...)" if known else ""))
            ) from None
        return self.holder(ip) or external(ip)


RESERVED_PEERS = ("health", "init", "unmanaged", "kube-apiserver", "ingress")  # identities without an address we model


def reserved_peer(name: str) -> Endpoint:
    """A reserved identity as a flow's peer (``reserved:init``): the verifier's witnesses name these,
    so ``query`` takes them too and every witness replays."""
    return Endpoint(EndpointKind.EXTERNAL, f"reserved:{name}", "", (), Identity(0, frozenset({reserved_label(name)})))


def external(ip: IPAddress) -> Endpoint:
    """An address that no pod or node holds: a world identity (R6.1)."""
    ident = Identity(RESERVED_IDS["world-ipv4" if ip.version == 4 else "world-ipv6"], world_labels(ip.version))
    return Endpoint(EndpointKind.EXTERNAL, str(ip), "", (ip,), ident)


def pod_labels(pod_lbls: dict, namespace: str, ns_lbls: dict, service_account: str, cluster: str) -> frozenset:
    """R2.3: the k8s-sourced labels Cilium derives for a pod's security identity."""
    labels = {Label("k8s", k, str(v)) for k, v in pod_lbls.items()}
    labels.add(Label("k8s", NAMESPACE_KEY, namespace))
    labels |= {Label("k8s", NAMESPACE_LABELS_PREFIX + k, str(v)) for k, v in ns_lbls.items()}
    labels.add(Label("k8s", SERVICE_ACCOUNT_KEY, service_account))
    labels.add(Label("k8s", CLUSTER_KEY, cluster))
    return frozenset(labels)


def own_labels(labels: frozenset) -> dict[str, str]:
    """A pod's own labels back from its identity labels (``pod_labels`` without what it derives)."""
    derived = (NAMESPACE_KEY, SERVICE_ACCOUNT_KEY, CLUSTER_KEY)
    return {lab.key: lab.value for lab in labels if lab.source == "k8s" and lab.key not in derived
            and not lab.key.startswith(NAMESPACE_LABELS_PREFIX)}


def node_labels(lbls: dict) -> frozenset:
    """A remote node's identity: remote-node plus its node labels (R2.16, R6.3)."""
    return frozenset({Label("node", k, str(v)) for k, v in lbls.items()} | {reserved_label("remote-node")})


_TYPE_NAMES = {dict: "mapping", list: "list", str: "string"}


def _get(doc: Document, obj: dict, path: tuple, key: str, kind: type):
    """obj[key] checked to be a ``kind`` (dict, list or str); absent or null is the empty value."""
    value = obj.get(key)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise PolicycError(doc.diag(path + (key,), f"must be a {_TYPE_NAMES[kind]}, not {type(value).__name__}"))
    return value


def _labels(doc: Document, meta: dict, path: tuple) -> dict[str, str]:
    labels = _get(doc, meta, path, "labels", dict)
    for key, value in labels.items():
        if isinstance(value, (dict, list)):
            raise PolicycError(doc.diag(path + ("labels", key), "a label value must be a string"))
    return {k: "" if v is None else str(v) for k, v in labels.items()}


def _ips(doc: Document, path: tuple, status: dict) -> tuple[IPAddress, ...]:
    where = path + ("status",)
    raw = [(("podIP",), status.get("podIP"))] + [
        (("podIPs", i, "ip"), e.get("ip") if isinstance(e, dict) else e)
        for i, e in enumerate(_get(doc, status, where, "podIPs", list))]
    out: list[IPAddress] = []
    for sub, value in raw:
        if not value:
            continue
        try:
            ip = ipaddress.ip_address(value if isinstance(value, str) else "")
        except ValueError:
            raise PolicycError(doc.diag(where + sub, f"invalid pod IP {value!r}")) from None
        if ip in out:
            continue
        if any(o.version == ip.version for o in out):  # the datapath binds one address per family to a pod
            raise PolicycError(doc.diag(where + sub, f"pod IP {ip} is a second IPv{ip.version} address: "
                                                     "Kubernetes gives a pod at most one address per family"))
        out.append(ip)
    return tuple(out)


def _named_ports(doc: Document, path: tuple, spec: dict) -> tuple[NamedPort, ...]:
    """Every container port is checked (a typo is no port); the named ones are kept (R8.4)."""
    ports = []
    for ci, cont in enumerate(_get(doc, spec, path + ("spec",), "containers", list)):
        cpath = path + ("spec", "containers", ci)
        if not isinstance(cont, dict):
            raise PolicycError(doc.diag(cpath, "a container must be a mapping"))
        for pi, port in enumerate(_get(doc, cont, cpath, "ports", list)):
            where = cpath + ("ports", pi)
            if not isinstance(port, dict):
                raise PolicycError(doc.diag(where, "a container port must be a mapping"))
            number = port.get("containerPort")
            try:
                proto = Protocol.parse(str(port.get("protocol") or "TCP"))
            except KeyError:
                proto = None
            if proto not in (Protocol.TCP, Protocol.UDP, Protocol.SCTP) or isinstance(number, bool) \
                    or not isinstance(number, int) or not 1 <= number <= 65535:
                raise PolicycError(doc.diag(where, "container port needs a containerPort 1-65535 "
                                                   "and protocol TCP, UDP or SCTP"))
            if port.get("name"):
                ports.append(NamedPort(str(port["name"]).lower(), number, proto))
    return tuple(ports)


def _objects(docs: list[Document]):
    """(document, path, object) for every item, lists unfolded."""
    for doc in docs:
        for path, obj in kube_objects(doc):
            if isinstance(obj, dict):
                yield doc, path, obj


def _name(doc: Document, meta: dict, path: tuple, what: str) -> str:
    name = meta.get("name")
    if not name or not isinstance(name, str):
        raise PolicycError(doc.diag(path + ("metadata",), f"{what} without metadata.name"))
    return name


def _once(seen: dict, doc: Document, path: tuple, what: str) -> None:
    """Two objects with one name would make every answer about that name ambiguous."""
    if what in seen:
        first = seen[what]
        raise PolicycError(doc.diag(path + ("metadata", "name"), f"{what} is defined twice (first at {first})"))
    line, col = doc.position(path)
    seen[what] = f"{doc.file}:{line}:{col}"


# Node annotations where CNIs record a node's gateway or tunnel address (Cilium's cilium_host router address,
# Calico's IPIP/VXLAN tunnel and BGP addresses): a node reaches pods from them, so they are the node's too.
NODE_ADDRESS_ANNOTATIONS = (
    "network.cilium.io/ipv4-cilium-host", "network.cilium.io/ipv6-cilium-host",
    "io.cilium.network.ipv4-cilium-host", "io.cilium.network.ipv6-cilium-host",
    "projectcalico.org/IPv4Address", "projectcalico.org/IPv6Address", "projectcalico.org/IPv4IPIPTunnelAddr",
    "projectcalico.org/IPv4VXLANTunnelAddr", "projectcalico.org/IPv6VXLANTunnelAddr")


def _annotated_addresses(doc: Document, path: tuple, meta: dict) -> list[IPAddress]:
    """A node's addresses from NODE_ADDRESS_ANNOTATIONS (a value may carry a /prefix, as Calico writes it)."""
    notes = _get(doc, meta, path + ("metadata",), "annotations", dict)
    out = []
    for key in NODE_ADDRESS_ANNOTATIONS:
        if notes.get(key):
            try:
                out.append(ipaddress.ip_interface(str(notes[key]).strip()).ip)
            except ValueError:
                raise PolicycError(doc.diag(path + ("metadata", "annotations", key),
                                            f"invalid node address {notes[key]!r}")) from None
    return out


FINISHED = ("Succeeded", "Failed")  # a pod in these phases has no sandbox, so no endpoint and no identity


def _where(doc: Document, path: tuple) -> tuple[str, int, int]:
    line, col = doc.position(path)
    return doc.file, line, col


def _gaps(pods: list, namespaces: dict, node_names: set) -> list[Diagnostic]:
    """What a partial dump (`kubectl get pods -A` alone) leaves unknown, said once per kind of gap."""
    out = []
    missing_ns = sorted({ns for ns, _, _ in pods if ns not in namespaces})
    if missing_ns:
        file, line, col = next(w for ns, _, w in pods if ns == missing_ns[0])
        out.append(Diagnostic(Severity.WARNING, f"pods are in namespace(s) {', '.join(missing_ns)} but the inventory "
                              "holds no Namespace object for them: their namespace labels are unknown, so "
                              "namespaceSelector peers that ask for labels other than kubernetes.io/metadata.name "
                              "do not match them; add `kubectl get namespaces -o yaml`", file, line, col,
                              code="missing-namespaces"))
    missing_nodes = sorted({node for _, node, _ in pods if node and node not in node_names})
    if missing_nodes:
        file, line, col = next(w for _, node, w in pods if node == missing_nodes[0])
        out.append(Diagnostic(Severity.WARNING, f"pods run on node(s) {', '.join(missing_nodes)} that the inventory "
                              "holds no Node object for: those nodes cannot be named, and their addresses answer "
                              "as the world; add `kubectl get nodes -o yaml`", file, line, col, code="missing-nodes"))
    return out


def _shared_addresses(endpoints: list[Endpoint], where: dict) -> list[Diagnostic]:
    """Two endpoints with one address: an address on the command line names only the first (find)."""
    owner: dict = {}
    out = []
    for ep in endpoints:
        for ip in ep.ips:
            if ip in owner:
                file, line, col = where[ep.display]
                out.append(Diagnostic(Severity.WARNING, f"{ep.display} has the address {ip} of {owner[ip].display}: "
                                      f"an address on the command line names {owner[ip].display}", file, line, col,
                                      code="duplicate-address"))
            else:
                owner[ip] = ep
    return out


def build_inventory(docs: list[Document], cluster: str = DEFAULT_CLUSTER) -> Inventory:
    namespaces: dict[str, dict] = {}
    pods, nodes, services, slices = [], [], [], []
    seen: dict[str, str] = {}
    for doc, path, obj in _objects(docs):
        kind = obj.get("kind")
        if kind not in ("Namespace", "Pod", "Node", "Service", "EndpointSlice"):
            continue
        meta = _get(doc, obj, path, "metadata", dict)
        if kind == "Namespace":
            name = _name(doc, meta, path, "namespace")
            _once(seen, doc, path, f"namespace {name}")
            namespaces[name] = _labels(doc, meta, path + ("metadata",))
        else:
            {"Pod": pods, "Node": nodes, "Service": services, "EndpointSlice": slices}[kind].append(
                (doc, path, obj, meta))

    # Cilium numbers identities as it meets them; we sort label sets for reproducible numbers.
    raw_pods = []
    diagnostics: list[Diagnostic] = []
    where: dict[str, tuple] = {}
    host_network: dict[str, str | None] = {}
    host_labels: dict[str, frozenset] = {}
    for doc, path, obj, meta in pods:
        name = _name(doc, meta, path, "pod")
        ns = meta.get("namespace")
        if not ns or not isinstance(ns, str):  # its namespace decides every verdict: never guess it
            raise PolicycError(doc.diag(path + ("metadata",), f"pod {name!r} without metadata.namespace "
                                        "(`kubectl get pods -A -o yaml` prints it)"))
        _once(seen, doc, path, f"pod {ns}/{name}")
        status = _get(doc, obj, path, "status", dict)
        if status.get("phase") in FINISHED:
            diagnostics.append(Diagnostic(Severity.INFO, f"pod {ns}/{name} is {status['phase']}: it has no "
                                          "endpoint and is left out", *_where(doc, path), code="finished-pod"))
            continue
        spec = _get(doc, obj, path, "spec", dict)
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        labels = pod_labels(_labels(doc, meta, path + ("metadata",)), ns,
                            namespaces.get(ns, {"kubernetes.io/metadata.name": ns}), str(sa), cluster)
        if spec.get("hostNetwork") is True:  # the node's identity and addresses, no endpoint of its own
            host_network[f"{ns}/{name}"] = str(spec["nodeName"]) if spec.get("nodeName") else None
            host_labels[f"{ns}/{name}"] = labels
            continue
        node = spec.get("nodeName")
        where[f"{ns}/{name}"] = _where(doc, path)
        raw_pods.append((name, ns, labels, _ips(doc, path, status),
                         _named_ports(doc, path, spec), str(node) if node else None, str(sa)))
    ids = {lbls: FIRST_CLUSTER_ID + i for i, lbls in enumerate(sorted({p[2] for p in raw_pods}, key=sorted))}
    endpoints = [Endpoint(EndpointKind.POD, name, ns, ips, Identity(ids[lbls], lbls), ports, node, sa)
                 for name, ns, lbls, ips, ports, node, sa in raw_pods]

    for doc, path, obj, meta in nodes:
        name = _name(doc, meta, path, "node")
        _once(seen, doc, path, f"node {name}")
        where[name] = _where(doc, path)
        status = _get(doc, obj, path, "status", dict)
        addrs = []
        for ai, addr in enumerate(_get(doc, status, path + ("status",), "addresses", list)):
            if isinstance(addr, dict) and addr.get("type") in ("InternalIP", "ExternalIP"):
                try:
                    addrs.append(ipaddress.ip_address(str(addr.get("address"))))
                except ValueError:
                    raise PolicycError(doc.diag(path + ("status", "addresses", ai, "address"),
                                                f"invalid node address {addr.get('address')!r}")) from None
        addrs += [ip for ip in _annotated_addresses(doc, path, meta) if ip not in addrs]
        endpoints.append(Endpoint(EndpointKind.NODE, name, "", tuple(addrs),
                                  Identity(RESERVED_IDS["remote-node"],
                                           node_labels(_labels(doc, meta, path + ("metadata",))))))
    diagnostics += _gaps([(ep.namespace, ep.node, where[ep.display]) for ep in endpoints
                          if ep.kind is EndpointKind.POD], namespaces,
                         {ep.name for ep in endpoints if ep.kind is EndpointKind.NODE})
    endpoints.sort(key=lambda e: (e.kind.value, e.namespace, e.name))
    diagnostics += _shared_addresses(endpoints, where)  # in find()'s order
    return Inventory(tuple(endpoints), namespaces, cluster, tuple(diagnostics), host_network,
                     host_labels, _services(services, slices, seen))


# ---- Services and EndpointSlices ----

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
_PORT_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")  # IANA_SVC_NAME


def _namespace(doc: Document, meta: dict, path: tuple, what: str) -> str:
    ns = meta.get("namespace")
    if not ns or not isinstance(ns, str):
        raise PolicycError(doc.diag(path + ("metadata",), f"{what} without metadata.namespace "
                                    "(`kubectl get services,endpointslices -A -o yaml` prints it)"))
    return ns


def _port(doc: Document, where: tuple, value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise PolicycError(doc.diag(where, f"{what} must be a number 1-65535, not {value!r}"))
    return value


def _l4(doc: Document, where: tuple, value) -> Protocol:
    """The protocol of a Service or EndpointSlice port: TCP (the default), UDP or SCTP, as the API spells them."""
    if value is None:
        return Protocol.TCP
    if value not in ("TCP", "UDP", "SCTP"):
        raise PolicycError(doc.diag(where, f"protocol must be TCP, UDP or SCTP (upper case), not {value!r}"))
    return Protocol.parse(value)


def _address(doc: Document, where: tuple, value, what: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        raise PolicycError(doc.diag(where, f"invalid {what} {value!r}")) from None


def _target(doc: Document, where: tuple, value, default: int) -> int | str:
    """targetPort: a number, or a container port name (IANA_SVC_NAME) looked up in each backend pod."""
    if value is None:
        return default
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, str):
        if not _PORT_NAME.match(value):
            raise PolicycError(doc.diag(where, f"targetPort {value!r} is neither a number nor a port name "
                                               "(at most 15 lower-case letters, digits and single '-')"))
        return value
    return _port(doc, where, value, "targetPort")


def _service_ports(doc: Document, spath: tuple, spec: dict, node_ports: bool) -> tuple[ServicePort, ...]:
    out: list[ServicePort] = []
    items = _get(doc, spec, spath, "ports", list)
    for i, item in enumerate(items):
        where = spath + ("ports", i)
        if not isinstance(item, dict):
            raise PolicycError(doc.diag(where, "a Service port must be a mapping"))
        number = _port(doc, where + ("port",), item.get("port"), "port")
        name = item.get("name") or ""
        if not isinstance(name, str) or (len(items) > 1 and not name):
            raise PolicycError(doc.diag(where, "a Service with several ports names each of them (EndpointSlice "
                                               "ports are matched by name)"))
        node_port = item.get("nodePort")
        if node_port is not None:
            if not node_ports:
                raise PolicycError(doc.diag(where + ("nodePort",), "nodePort needs type NodePort or LoadBalancer"))
            node_port = _port(doc, where + ("nodePort",), node_port, "nodePort")
        port = ServicePort(name, _l4(doc, where + ("protocol",), item.get("protocol")), number,
                           _target(doc, where + ("targetPort",), item.get("targetPort"), number), node_port)
        for other in out:
            if other.name == port.name or (other.port, other.protocol) == (port.port, port.protocol):
                raise PolicycError(doc.diag(where, f"port {port.name or port} is listed twice"))
        out.append(port)
    return tuple(out)


def _cluster_ips(doc: Document, spath: tuple, spec: dict) -> tuple[IPAddress, ...]:
    """spec.clusterIPs (dual stack), else spec.clusterIP; ``None`` (headless) and "" are no address."""
    single = spec.get("clusterIP")
    many = _get(doc, spec, spath, "clusterIPs", list)
    if single in (None, "", "None") and many in ([], ["None"]):
        return ()
    out = [_address(doc, spath + ("clusterIPs", i), ip, "clusterIP") for i, ip in enumerate(many)]
    if single not in (None, ""):
        first = _address(doc, spath + ("clusterIP",), single, "clusterIP")
        if out and out[0] != first:
            raise PolicycError(doc.diag(spath + ("clusterIPs", 0), f"clusterIPs[0] {out[0]} differs from "
                                                                   f"clusterIP {first}"))
        out = out or [first]
    if len({ip.version for ip in out}) != len(out):
        raise PolicycError(doc.diag(spath + ("clusterIPs",), "at most one clusterIP per address family"))
    return tuple(out)


def _service(doc: Document, path: tuple, obj: dict, meta: dict) -> Service:
    name = _name(doc, meta, path, "service")
    ns = _namespace(doc, meta, path, f"service {name!r}")
    spath = path + ("spec",)
    spec = _get(doc, obj, path, "spec", dict)
    kind = spec.get("type") or "ClusterIP"
    if kind not in SERVICE_TYPES:
        raise PolicycError(doc.diag(spath + ("type",), f"type must be one of {', '.join(SERVICE_TYPES)}, "
                                                       f"not {kind!r}"))
    selector = _get(doc, spec, spath, "selector", dict)
    for key, value in selector.items():
        if not isinstance(value, str):
            raise PolicycError(doc.diag(spath + ("selector", key), "a selector value must be a string"))
    policy = spec.get("externalTrafficPolicy") or "Cluster"
    if policy not in ("Cluster", "Local"):
        raise PolicycError(doc.diag(spath + ("externalTrafficPolicy",), f"externalTrafficPolicy must be Cluster "
                                                                         f"or Local, not {policy!r}"))
    status = _get(doc, obj, path, "status", dict)
    balancer = _get(doc, status, path + ("status",), "loadBalancer", dict)
    lb_path = path + ("status", "loadBalancer", "ingress")
    external = [_address(doc, spath + ("externalIPs", i), ip, "external IP")
                for i, ip in enumerate(_get(doc, spec, spath, "externalIPs", list))]
    external += [_address(doc, lb_path + (i, "ip"), e.get("ip"), "load-balancer IP")
                 for i, e in enumerate(_get(doc, balancer, path + ("status", "loadBalancer"), "ingress", list))
                 if isinstance(e, dict) and e.get("ip")]
    line, _ = doc.position(path)
    return Service(ns, name, frozenset(Label("k8s", k, v) for k, v in _labels(doc, meta, path + ("metadata",)).items()),
                   tuple(sorted(selector.items())) or None, kind,
                   () if kind == "ExternalName" else _cluster_ips(doc, spath, spec),
                   _service_ports(doc, spath, spec, kind in ("NodePort", "LoadBalancer")), policy,
                   tuple(dict.fromkeys(external)), (), f"{doc.file}:{line}")


def _slice(doc: Document, path: tuple, obj: dict, meta: dict) -> EndpointSlice | None:
    """An EndpointSlice of a Service; None for one no Service owns, or of FQDNs (kube-proxy ignores both)."""
    name = _name(doc, meta, path, "endpointslice")
    ns = _namespace(doc, meta, path, f"endpointslice {name!r}")
    family = obj.get("addressType")
    if family not in ("IPv4", "IPv6", "FQDN"):
        raise PolicycError(doc.diag(path + ("addressType",), f"addressType must be IPv4, IPv6 or FQDN, not {family!r}"))
    service = _labels(doc, meta, path + ("metadata",)).get(SERVICE_NAME_LABEL)
    if not service or family == "FQDN":
        return None
    version = 4 if family == "IPv4" else 6
    endpoints = []
    for i, item in enumerate(_get(doc, obj, path, "endpoints", list)):
        where = path + ("endpoints", i)
        if not isinstance(item, dict):
            raise PolicycError(doc.diag(where, "an endpoint must be a mapping"))
        addrs = [_address(doc, where + ("addresses", j), a, "endpoint address")
                 for j, a in enumerate(_get(doc, item, where, "addresses", list))]
        if not addrs or any(a.version != version for a in addrs):
            raise PolicycError(doc.diag(where + ("addresses",), f"an endpoint needs one or more {family} addresses"))
        ready = _get(doc, item, where, "conditions", dict).get("ready")
        if ready is not None and not isinstance(ready, bool):
            raise PolicycError(doc.diag(where + ("conditions", "ready"), "ready must be true or false"))
        node = item.get("nodeName")
        endpoints.append(SliceEndpoint(tuple(addrs), ready is not False, str(node) if node else None))
    ports = []
    for i, item in enumerate(_get(doc, obj, path, "ports", list)):
        where = path + ("ports", i)
        if not isinstance(item, dict):
            raise PolicycError(doc.diag(where, "an EndpointSlice port must be a mapping"))
        port_name = item.get("name") or ""
        if not isinstance(port_name, str):
            raise PolicycError(doc.diag(where + ("name",), "a port name must be a string"))
        ports.append(SlicePort(port_name, _l4(doc, where + ("protocol",), item.get("protocol")),
                               _port(doc, where + ("port",), item.get("port"), "port")))
    return EndpointSlice(ns, name, service, tuple(ports), tuple(endpoints))


def _services(services: list, slices: list, seen: dict) -> tuple[Service, ...]:
    """Services by namespace and name, each with the EndpointSlices labelled with its name."""
    parsed = []
    for doc, path, obj, meta in services:
        svc = _service(doc, path, obj, meta)
        _once(seen, doc, path, f"service {svc.display}")
        parsed.append(svc)
    owned: dict[tuple[str, str], list[EndpointSlice]] = {}
    for doc, path, obj, meta in slices:
        got = _slice(doc, path, obj, meta)
        if got is not None:
            _once(seen, doc, path, f"endpointslice {got.namespace}/{got.name}")
            owned.setdefault((got.namespace, got.service), []).append(got)
    out = [replace(s, slices=tuple(sorted(owned.get((s.namespace, s.name), ()), key=lambda e: e.name)))
           for s in parsed]
    return tuple(sorted(out, key=lambda s: (s.namespace, s.name)))


def load_inventory(paths: list[str | Path], cluster: str = DEFAULT_CLUSTER) -> Inventory:
    """Read manifests (files, directories, multi-document YAML, ``kind: List``)."""
    return build_inventory(load_documents(paths), cluster)
