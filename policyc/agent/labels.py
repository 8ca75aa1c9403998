"""What the agent knows about pods and namespaces: from the inventory it was given and a watched directory.

Both hold Namespaces and Pods as `kubectl get -o yaml` prints them, read with the inventory reader
the compiler uses.  Whatever refreshes the directory (a sidecar running `kubectl get --watch`, a
ConfigMap, a GitOps export) is outside policyc: no Kubernetes API server is needed here.  The
directory wins over the given files, pod by pod and namespace by namespace.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..compiler.inventory import load_inventory, own_labels
from ..compiler.ir import NamedPort
from . import watch

SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class PodFacts:
    labels: dict
    service_account: str
    ips: tuple[str, ...]
    node: str | None
    ports: tuple[NamedPort, ...] = ()  # its containers' named ports: rules naming a port resolve against them


@dataclass(frozen=True)
class Book:
    namespaces: dict = field(default_factory=dict)   # name -> labels
    pods: dict = field(default_factory=dict)         # ns/pod -> PodFacts

    def over(self, base: "Book") -> "Book":
        """This book's entries, and ``base``'s where this one has none."""
        return Book({**base.namespaces, **self.namespaces}, {**base.pods, **self.pods})


def read_book(paths: list[Path], cluster: str) -> Book:
    """Pods and namespaces of inventory files; a PolicycError (file:line:column) for a bad one."""
    if not paths:
        return Book()
    inv = load_inventory(paths, cluster)
    pods = {ep.display: PodFacts(own_labels(ep.identity.labels), ep.service_account,
                                 tuple(str(ip) for ip in ep.ips), ep.node, ep.ports) for ep in inv.pods}
    return Book(dict(inv.namespaces), pods)


def read_directory(directory: Path, cluster: str) -> Book:
    return read_book(watch.files(directory, SUFFIXES), cluster)
