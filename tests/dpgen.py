"""Hand-built IR and inventories for the datapath tests, plus hypothesis strategies for small policy sets."""
from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from policyc.compiler.entities import FIRST_CLUSTER_ID, RESERVED_IDS, entity_selectors
from policyc.compiler.inventory import Inventory, node_labels, pod_labels
from policyc.compiler.ir import (NAMESPACE_KEY, Action, CIDRPeer, DefaultDeny, Direction, Endpoint,
                                 EndpointKind, Identity, L3_ONLY, L7Rules, NamedPort, Op, Origin,
                                 PolicySet, PortMatch, Protocol, Requirement, Rule, Selector,
                                 SelectorPeer, SubjectKind)

ORIGIN = Origin("gen.yaml", 1, 1, "spec", "CiliumNetworkPolicy", "x", "gen")
STANDARD_PORTS = (NamedPort("serve-80-tcp", 80, Protocol.TCP), NamedPort("serve-81-tcp", 81, Protocol.TCP),
                  NamedPort("serve-80-udp", 80, Protocol.UDP), NamedPort("serve-81-udp", 81, Protocol.UDP))


def selector(ns: str | None = None, pod: str | None = None) -> Selector:
    reqs = []
    if ns:
        reqs.append(Requirement("k8s", NAMESPACE_KEY, Op.IN, (ns,)))
    if pod:
        reqs.append(Requirement("k8s", "pod", Op.IN, (pod,)))
    return Selector(tuple(sorted(reqs)))


def inventory(specs: list[tuple[str, str, tuple[str, ...], tuple[NamedPort, ...]]]) -> Inventory:
    """Pods from (namespace, name, ips, named ports), identities numbered as the inventory does."""
    raw = [(ns, name, tuple(map(ipaddress.ip_address, ips)), ports,
            pod_labels({"pod": name}, ns, {"kubernetes.io/metadata.name": ns}, "default", "default"))
           for ns, name, ips, ports in specs]
    ids = {lbls: FIRST_CLUSTER_ID + i for i, lbls in enumerate(sorted({r[4] for r in raw}, key=sorted))}
    eps = [Endpoint(EndpointKind.POD, name, ns, ips, Identity(ids[lbls], lbls), ports)
           for ns, name, ips, ports, lbls in raw]
    return Inventory(tuple(sorted(eps, key=lambda e: (e.namespace, e.name))))


def standard_inventory(v6: bool = False, node: bool = False) -> Inventory:
    """Namespaces x, y × pods a, b; pod IPs 10.244.<ns>.<pod> (and fd00::<ns>:<pod> with ``v6``).

    ``node`` adds a remote node n1 (172.18.0.2, label role=worker) that runs none of the pods.
    """
    specs = []
    for n, ns in enumerate(("x", "y"), 1):
        for m, name in enumerate(("a", "b"), 1):
            ips = (f"10.244.{n}.{m}",) + ((f"fd00::{n}:{m}",) if v6 else ())
            specs.append((ns, name, ips, STANDARD_PORTS))
    inv = inventory(specs)
    if not node:
        return inv
    n1 = Endpoint(EndpointKind.NODE, "n1", "", (ipaddress.ip_address("172.18.0.2"),),
                  Identity(RESERVED_IDS["remote-node"], node_labels({"role": "worker"})))
    return Inventory(inv.endpoints + (n1,))


def make_rule(n: int, subject: Selector, direction: Direction, action: Action, peers, ports) -> Rule:
    return Rule(f"r{n}", ORIGIN, subject, SubjectKind.ENDPOINT, direction, action, tuple(peers), tuple(ports))


def policy_set(rules: list[Rule], extra_default_deny: tuple[DefaultDeny, ...] = ()) -> PolicySet:
    """Allow rules switch their subject to default-deny in their direction, as the frontend does (R3.4)."""
    dd = [DefaultDeny(r.subject, r.subject_kind, r.direction, ORIGIN) for r in rules if r.action is Action.ALLOW]
    return PolicySet(tuple(rules), tuple(dict.fromkeys(dd + list(extra_default_deny))))


# ---- hypothesis ----

SELECTORS = st.sampled_from([selector(), selector("x"), selector("y"), selector(pod="a"), selector("x", "b")])
PEERS = st.sampled_from([
    SelectorPeer((selector("x"),)), SelectorPeer((selector(pod="b"),)), SelectorPeer((Selector(),)),
    SelectorPeer(entity_selectors("world", "default"), "entity", "world"),
    SelectorPeer(entity_selectors("cluster", "default"), "entity", "cluster"),
    SelectorPeer(entity_selectors("remote-node", "default"), "entity", "remote-node"),
    SelectorPeer((Selector((Requirement("node", "role", Op.IN, ("worker",)),)),), "nodes"),
    CIDRPeer(ipaddress.ip_network("192.0.2.0/24"), (ipaddress.ip_network("192.0.2.0/28"),)),
    CIDRPeer(ipaddress.ip_network("0.0.0.0/0"), (ipaddress.ip_network("10.0.0.0/8"),)),
    CIDRPeer(ipaddress.ip_network("198.51.100.0/24")),
    CIDRPeer(ipaddress.ip_network("192.0.2.0/28")),
])
PORTS = st.sampled_from([
    L3_ONLY[0], PortMatch(Protocol.TCP, 80, 80), PortMatch(Protocol.UDP, 80, 81), PortMatch(Protocol.TCP, 70, 90),
    PortMatch(Protocol.TCP, 1000, 2000), PortMatch(Protocol.TCP, name="serve-81-tcp"),
    PortMatch(Protocol.ANY, name="serve-80-udp"), PortMatch(Protocol.TCP, 0, 65535),
    PortMatch(Protocol.TCP, 80, 80, l7=L7Rules("http")), PortMatch(Protocol.ICMP, 8, 8),
])


@st.composite
def rules(draw, n: int) -> Rule:
    return make_rule(n, draw(SELECTORS), draw(st.sampled_from(list(Direction))),
                     draw(st.sampled_from([Action.ALLOW, Action.ALLOW, Action.DENY])),
                     draw(st.lists(PEERS, min_size=1, max_size=2, unique=True)),
                     draw(st.lists(PORTS, min_size=1, max_size=3, unique=True)))


@st.composite
def policy_sets(draw) -> PolicySet:
    count = draw(st.integers(1, 4))
    extra = draw(st.lists(st.tuples(SELECTORS, st.sampled_from(list(Direction))), max_size=1))
    return policy_set([draw(rules(i)) for i in range(count)],
                      tuple(DefaultDeny(s, SubjectKind.ENDPOINT, d, ORIGIN) for s, d in extra))
