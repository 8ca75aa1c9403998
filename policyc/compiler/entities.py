"""Cilium's reserved identities and the entities that name them (R6.1–R6.9).

Entities are lowered to label selectors here once, so that every interpreter
matches them exactly like any other selector.
"""
from __future__ import annotations

import functools

from .ir import CLUSTER_KEY, Identity, Label, Op, Requirement, Selector

RESERVED = "reserved"

# R6.9: numeric reserved identities.
RESERVED_IDS: dict[str, int] = {
    "host": 1,
    "world": 2,
    "unmanaged": 3,
    "health": 4,
    "init": 5,
    "remote-node": 6,
    "kube-apiserver": 7,
    "ingress": 8,
    "world-ipv4": 9,
    "world-ipv6": 10,
}

# First identity number handed to label sets seen in the inventory (cluster-scoped range).
FIRST_CLUSTER_ID = 256
# CIDR identities are node-local with bit 24 set.
FIRST_CIDR_ID = 1 << 24

ENTITY_NAMES = ("all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init",
                "ingress", "unmanaged", "remote-node", "health", "none", "kube-apiserver")

_CLUSTER_RESERVED = ("host", "remote-node", "init", "ingress", "health", "unmanaged", "kube-apiserver")


def reserved_label(name: str) -> Label:
    return Label(RESERVED, name, "")


def reserved_identity(name: str) -> Identity:
    return Identity(RESERVED_IDS[name], frozenset({reserved_label(name)}))


@functools.lru_cache(maxsize=None)
def world_labels(version: int) -> frozenset:
    """Labels of an address outside the cluster: world plus its family (R6.1).

    One shared set per family: every CIDR identity carries it, and there may be 100,000 of them.
    """
    family = "world-ipv4" if version == 4 else "world-ipv6"
    return frozenset({reserved_label("world"), reserved_label(family)})


def _has_reserved(name: str) -> Selector:
    return Selector((Requirement(RESERVED, name, Op.EXISTS),))


def entity_selectors(name: str, cluster: str) -> tuple[Selector, ...]:
    """The selectors an entity stands for; ``cluster`` is the local cluster's name (R6.6)."""
    if name == "all":
        return (Selector(),)
    if name == "none":
        return ()
    if name == "world":
        return tuple(_has_reserved(n) for n in ("world", "world-ipv4", "world-ipv6"))
    if name == "cluster":
        pods = Selector((Requirement("k8s", CLUSTER_KEY, Op.IN, (cluster,)),))
        return tuple(_has_reserved(n) for n in _CLUSTER_RESERVED) + (pods,)
    if name in RESERVED_IDS:
        return (_has_reserved(name),)
    raise KeyError(name)

