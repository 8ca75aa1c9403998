"""Cluster inventory: Namespaces, Pods and Nodes → endpoints with Cilium identities.

Each pod's identity labels follow R2.3 (pod labels, namespace, namespace
labels, service account, cluster); equal label sets share one numeric identity
from 256 up, in a deterministic order so artifacts are reproducible.
"""
from __future__ import annotations

import difflib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from .diagnostics import Diagnostic, PolicycError
from .entities import FIRST_CLUSTER_ID, RESERVED_IDS, reserved_label, world_labels
from .ir import (CLUSTER_KEY, DEFAULT_CLUSTER, NAMESPACE_KEY,
                 NAMESPACE_LABELS_PREFIX, SERVICE_ACCOUNT_KEY, Endpoint,
                 EndpointKind, Identity, IPAddress, Label, NamedPort, Protocol)
from .source import Document, load_documents


@dataclass(frozen=True)
class Inventory:
    endpoints: tuple[Endpoint, ...] = ()
    namespaces: dict = field(default_factory=dict)  # name -> labels
    cluster: str = DEFAULT_CLUSTER

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

    def find(self, ref: str) -> Endpoint:
        """``ns/pod``, a node name, or an address (of a pod, a node, or outside the cluster)."""
        for ep in self.endpoints:
            if ep.display == ref:
                return ep
        try:
            ip = ipaddress.ip_address(ref)
        except ValueError:
            names = [e.display for e in self.endpoints]
            close = difflib.get_close_matches(ref, names, n=1, cutoff=0.6)
            known = ", ".join(names[:8])
            raise PolicycError(Diagnostic.simple(
                f"unknown endpoint {ref!r}: expected namespace/pod, a node name or an IP address"
                + (f"; did you mean {close[0]!r}?" if close else f" (known: {known}, ...)" if known else ""))
            ) from None
        for ep in self.endpoints:
            if ip in ep.ips:
                return ep
        return external(ip)


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


def node_labels(lbls: dict) -> frozenset:
    """A remote node's identity: remote-node plus its node labels (R2.16, R6.3)."""
    return frozenset({Label("node", k, str(v)) for k, v in lbls.items()} | {reserved_label("remote-node")})


def _ips(doc: Document, path: tuple, status: dict) -> tuple[IPAddress, ...]:
    raw = [status.get("podIP")] + [e.get("ip") for e in status.get("podIPs") or [] if isinstance(e, dict)]
    out: list[IPAddress] = []
    for value in raw:
        if not value:
            continue
        try:
            ip = ipaddress.ip_address(str(value))
        except ValueError:
            raise PolicycError(doc.diag(path + ("status", "podIP"), f"invalid pod IP {value!r}")) from None
        if ip not in out:
            out.append(ip)
    return tuple(out)


def _named_ports(doc: Document, path: tuple, spec: dict) -> tuple[NamedPort, ...]:
    ports = []
    for ci, cont in enumerate(spec.get("containers") or []):
        for pi, port in enumerate((cont or {}).get("ports") or []):
            if not isinstance(port, dict) or not port.get("name"):
                continue
            where = path + ("spec", "containers", ci, "ports", pi)
            try:
                proto = Protocol.parse(str(port.get("protocol") or "TCP"))
                number = int(port["containerPort"])
            except (KeyError, ValueError, TypeError):
                raise PolicycError(doc.diag(where, "container port needs a numeric containerPort "
                                                   "and protocol TCP, UDP or SCTP")) from None
            ports.append(NamedPort(str(port["name"]).lower(), number, proto))
    return tuple(ports)


def _objects(docs: list[Document]):
    """(document, path, object) for every item, unfolding ``kind: List``."""
    for doc in docs:
        if not isinstance(doc.value, dict):
            continue
        if doc.value.get("kind") == "List" or str(doc.value.get("kind", "")).endswith("List"):
            for i, item in enumerate(doc.value.get("items") or []):
                if isinstance(item, dict):
                    yield doc, ("items", i), item
        else:
            yield doc, (), doc.value


def build_inventory(docs: list[Document], cluster: str = DEFAULT_CLUSTER) -> Inventory:
    namespaces: dict[str, dict] = {}
    pods, nodes = [], []
    for doc, path, obj in _objects(docs):
        kind = obj.get("kind")
        meta = obj.get("metadata") or {}
        if kind == "Namespace":
            namespaces[str(meta.get("name"))] = dict(meta.get("labels") or {})
        elif kind == "Pod":
            pods.append((doc, path, obj))
        elif kind == "Node":
            nodes.append((doc, path, obj))

    # Cilium numbers identities as it meets them; we sort label sets for reproducible numbers.
    raw_pods = []
    for doc, path, obj in pods:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        ns = str(meta.get("namespace") or "default")
        if not meta.get("name"):
            raise PolicycError(doc.diag(path + ("metadata",), "pod without metadata.name"))
        sa = str(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        labels = pod_labels(meta.get("labels") or {}, ns,
                            namespaces.get(ns, {"kubernetes.io/metadata.name": ns}), sa, cluster)
        raw_pods.append((str(meta["name"]), ns, labels, _ips(doc, path, obj.get("status") or {}),
                         _named_ports(doc, path, spec), spec.get("nodeName"), sa))
    ids = {lbls: FIRST_CLUSTER_ID + i for i, lbls in enumerate(sorted({p[2] for p in raw_pods}, key=sorted))}
    endpoints = [Endpoint(EndpointKind.POD, name, ns, ips, Identity(ids[lbls], lbls), ports, node, sa)
                 for name, ns, lbls, ips, ports, node, sa in raw_pods]

    for doc, path, obj in nodes:
        meta = obj.get("metadata") or {}
        addrs = []
        for ai, addr in enumerate((obj.get("status") or {}).get("addresses") or []):
            if isinstance(addr, dict) and addr.get("type") in ("InternalIP", "ExternalIP"):
                try:
                    addrs.append(ipaddress.ip_address(str(addr.get("address"))))
                except ValueError:
                    raise PolicycError(doc.diag(path + ("status", "addresses", ai, "address"),
                                                f"invalid node address {addr.get('address')!r}")) from None
        endpoints.append(Endpoint(EndpointKind.NODE, str(meta.get("name")), "", tuple(addrs),
                                  Identity(RESERVED_IDS["remote-node"], node_labels(meta.get("labels") or {}))))
    endpoints.sort(key=lambda e: (e.kind.value, e.namespace, e.name))
    return Inventory(tuple(endpoints), namespaces, cluster)


def load_inventory(paths: list[str | Path], cluster: str = DEFAULT_CLUSTER) -> Inventory:
    """Read manifests (files, directories, multi-document YAML, ``kind: List``)."""
    return build_inventory(load_documents(paths), cluster)
