"""Hypothesis strategies for hand-built IR: small label universes so that rules and endpoints meet often."""
from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from policyc.compiler.entities import entity_selectors, reserved_label
from policyc.compiler.inventory import Inventory, external, node_labels, pod_labels
from policyc.compiler.ir import (NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, Action, CIDRPeer, DefaultDeny, Direction,
                                 Endpoint, EndpointKind, Identity, L7Rules, HTTPRule, NamedPort, Op, Origin,
                                 Policy, PolicySet, PortMatch, Protocol, Requirement, Rule, Selector, SelectorPeer,
                                 SubjectKind)

KEYS = ("app", "tier")
VALUES = ("a", "b", "c")
NAMESPACES = ("x", "y")
ENTITIES = ("world", "host", "cluster", "all", "remote-node", "health", "world-ipv4")
PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.ICMP)
NETS = ("192.0.2.0/24", "192.0.2.0/28", "10.0.0.0/8", "0.0.0.0/0", "2001:db8::/32")


def origin(i: int) -> Origin:
    return Origin("gen.yaml", i + 1, 1, f"spec.ingress[{i}]", "CiliumNetworkPolicy", "x", f"p{i}")


@st.composite
def requirements(draw):
    key = draw(st.sampled_from(KEYS + (NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX + "team")))
    op = draw(st.sampled_from(list(Op)))
    pool = NAMESPACES if key == NAMESPACE_KEY else VALUES
    values = tuple(sorted(draw(st.sets(st.sampled_from(pool), min_size=1, max_size=2)))) \
        if op in (Op.IN, Op.NOT_IN) else ()
    source = "k8s" if key == NAMESPACE_KEY else draw(st.sampled_from(("k8s", "any", "node")))
    return Requirement(source, key, op, values)


selectors = st.builds(lambda reqs: Selector(tuple(sorted(set(reqs)))), st.lists(requirements(), max_size=3))


@st.composite
def peers(draw):
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return SelectorPeer(tuple(draw(st.lists(selectors, min_size=1, max_size=2))))
    if choice == 1:
        name = draw(st.sampled_from(ENTITIES))
        return SelectorPeer(entity_selectors(name, "default"), "entity", name)
    net = ipaddress.ip_network(draw(st.sampled_from(NETS)))
    excepts = ()
    if net.version == 4 and net.prefixlen < 28 and draw(st.booleans()):
        excepts = (ipaddress.ip_network("192.0.2.0/28"),) if net.overlaps(ipaddress.ip_network("192.0.2.0/28")) \
            else ()
    return CIDRPeer(net, excepts)


@st.composite
def ports(draw):
    proto = draw(st.sampled_from((Protocol.ANY,) + PROTOCOLS))
    if proto is Protocol.ANY:
        return PortMatch(Protocol.ANY)
    if proto is Protocol.TCP and draw(st.integers(0, 4)) == 0:
        return PortMatch(proto, name="http")
    first = draw(st.sampled_from((53, 80, 443, 8080)))
    last = draw(st.sampled_from((first, first + 10, 65535)))
    l7 = None
    if proto is Protocol.TCP and draw(st.integers(0, 3)) == 0:
        l7 = L7Rules("http", (HTTPRule(method=draw(st.sampled_from(("GET", "POST|PUT", None))),
                                       path=draw(st.sampled_from(("/api/.*", "/", None)))),))
    return PortMatch(proto, first, last, l7=l7)


@st.composite
def rules(draw, i: int):
    return Rule(f"r{i}", origin(i), draw(selectors),
                draw(st.sampled_from((SubjectKind.ENDPOINT,) * 4 + (SubjectKind.NODE,))),
                draw(st.sampled_from(list(Direction))), draw(st.sampled_from((Action.ALLOW,) * 3 + (Action.DENY,))),
                tuple(draw(st.lists(peers(), min_size=1, max_size=2))),
                tuple(draw(st.lists(ports(), min_size=1, max_size=2))))


@st.composite
def policy_sets(draw, max_rules: int = 5):
    n = draw(st.integers(1, max_rules))
    rs = tuple(draw(rules(i)) for i in range(n))
    dds = tuple(DefaultDeny(draw(selectors), draw(st.sampled_from((SubjectKind.ENDPOINT, SubjectKind.NODE))),
                            draw(st.sampled_from(list(Direction))), origin(100 + j))
                for j in range(draw(st.integers(0, 3))))
    policies = tuple(Policy("CiliumNetworkPolicy", "x", f"p{i}", origin(i)) for i in range(n))
    return PolicySet(rs, dds, policies)


@st.composite
def inventories(draw):
    eps = []
    nodes = ("n1", "n2")
    for ns in NAMESPACES:
        ns_labels = {"kubernetes.io/metadata.name": ns, "team": draw(st.sampled_from(VALUES))}
        for j in range(draw(st.integers(1, 3))):
            lbls = {k: draw(st.sampled_from(VALUES)) for k in KEYS if draw(st.booleans())}
            ports_ = (NamedPort("http", draw(st.sampled_from((80, 8080))), Protocol.TCP),) if draw(st.booleans()) else ()
            labels = pod_labels(lbls, ns, ns_labels, "default", "default")
            ip = ipaddress.ip_address(f"10.244.{NAMESPACES.index(ns) + 1}.{j + 1}")
            eps.append(Endpoint(EndpointKind.POD, f"p{j}", ns, (ip,), Identity(300 + len(eps), labels), ports_,
                                draw(st.sampled_from(nodes))))
    for k, name in enumerate(nodes):
        lbls = {"app": draw(st.sampled_from(VALUES))}
        eps.append(Endpoint(EndpointKind.NODE, name, "", (ipaddress.ip_address(f"172.18.0.{k + 2}"),),
                            Identity(6, node_labels(lbls))))
    return Inventory(tuple(eps), {ns: {} for ns in NAMESPACES})


EXTERNALS = tuple(external(ipaddress.ip_address(a)) for a in ("192.0.2.10", "192.0.2.200", "8.8.8.8",
                                                              "2001:db8::1"))
RESERVED = tuple(Endpoint(EndpointKind.EXTERNAL, f"reserved:{n}", "", (),
                          Identity(0, frozenset({reserved_label(n)})))
                 for n in ("health", "kube-apiserver"))


WIDE = ("all", "cluster", "world")  # entities naming most places: what makes a side uniform toward most peers


@st.composite
def broad_policy_sets(draw):
    """``policy_sets`` with rules that decide a side for nearly every peer: an allow to `all`, `cluster` or
    every pod, switched to default-deny or not, beside narrow deny (or allow) rules, as Cilium advises for
    deny policies (an allow-all beside the deny); in either direction, on some ports or all."""
    base = draw(policy_sets(max_rules=3))
    extra, dds = [], []
    for i in range(draw(st.integers(1, 3))):
        subject = draw(selectors)
        direction = draw(st.sampled_from(list(Direction)))
        name = draw(st.sampled_from(WIDE + ("pods",)))
        wide = SelectorPeer((Selector(),)) if name == "pods" else SelectorPeer(entity_selectors(name, "default"),
                                                                              "entity", name)
        any_port = (PortMatch(Protocol.ANY),)
        extra.append(Rule(f"b{i}", origin(50 + i), subject, SubjectKind.ENDPOINT, direction,
                          draw(st.sampled_from((Action.ALLOW,) * 3 + (Action.DENY,))), (wide,),
                          any_port if draw(st.booleans()) else tuple(draw(st.lists(ports(), min_size=1, max_size=2)))))
        for j in range(draw(st.integers(1, 2))):  # the exceptions: pods mostly, as a deny from a namespace
            narrow = SelectorPeer((draw(selectors),)) if draw(st.integers(0, 2)) else draw(peers())
            extra.append(Rule(f"b{i}n{j}", origin(60 + 2 * i + j), subject, SubjectKind.ENDPOINT, direction,
                              draw(st.sampled_from((Action.DENY,) * 2 + (Action.ALLOW,))), (narrow,),
                              tuple(draw(st.lists(ports(), min_size=1, max_size=2)))))
        if draw(st.booleans()):
            dds.append(DefaultDeny(subject, SubjectKind.ENDPOINT, direction, origin(120 + i)))
    policies = tuple(Policy("CiliumNetworkPolicy", "x", f"b{i}", origin(50 + i)) for i in range(len(extra)))
    return PolicySet(base.rules + tuple(extra), base.default_deny + tuple(dds), base.policies + policies)
