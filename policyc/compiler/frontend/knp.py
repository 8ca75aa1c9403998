"""Kubernetes NetworkPolicy → IR, the way Cilium translates it (§12 of docs/semantics.md)."""
from __future__ import annotations

from ..ir import (L3_ONLY, NAMESPACE_KEY, NAMESPACE_LABELS_PREFIX, Action, DefaultDeny, Direction, Op, Peer,
                  PortMatch, Requirement, Rule, Selector, SelectorPeer, SubjectKind)
from .meta import KNP, Meta
from .reader import FieldReader, origin_at
from .selectors import namespace_requirement, parse_selector
from .values import parse_cidr_rule, parse_port_number, parse_protocol, port_range

def parse_knp_peer(r: FieldReader, value, path: tuple, namespace: str) -> Peer:
    """R12.3–R12.5."""
    obj = r.mapping(value, path, ("podSelector", "namespaceSelector", "ipBlock"))
    if "ipBlock" in obj:
        if "podSelector" in obj or "namespaceSelector" in obj:
            r.fail(path, "ipBlock cannot be combined with podSelector or namespaceSelector in one peer")
        return parse_cidr_rule(r, obj["ipBlock"], path + ("ipBlock",))
    if "podSelector" not in obj and "namespaceSelector" not in obj:
        r.fail(path, "a peer needs podSelector, namespaceSelector or ipBlock")
    pods = parse_selector(r, obj.get("podSelector"), path + ("podSelector",), "k8s")
    if "namespaceSelector" in obj:
        ns = parse_selector(r, obj["namespaceSelector"], path + ("namespaceSelector",), "k8s",
                            key_map=lambda k: NAMESPACE_LABELS_PREFIX + k)
        if ns.is_wildcard:
            ns = Selector((Requirement("k8s", NAMESPACE_KEY, Op.EXISTS),))
        sel = pods.with_requirements(*ns.requirements)
    else:
        sel = pods.with_requirements(namespace_requirement(namespace))
    return SelectorPeer((sel,), "endpoints")

def parse_knp_ports(r: FieldReader, items: list, path: tuple) -> tuple[PortMatch, ...]:
    """R12.8: TCP by default; port absent = every port of the protocol."""
    out = []
    for i, item in enumerate(items):
        where = path + (i,)
        obj = r.mapping(item, where, ("protocol", "port", "endPort"))
        (proto,) = parse_protocol(r, obj.get("protocol"), where + ("protocol",), knp=True)
        if obj.get("port") is None:
            if obj.get("endPort") is not None:
                r.fail(where + ("endPort",), "endPort needs a port")
            out.append(PortMatch(proto))
            continue
        if isinstance(obj["port"], str) and obj["port"].strip().isdigit():
            r.fail(where + ("port",), f"port {obj['port']!r} is a string: write the number unquoted, "
                                      "or use a port name")
        number, name = parse_port_number(r, obj["port"], where + ("port",), allow_names=True)
        if name and obj.get("endPort") is not None:
            r.fail(where + ("endPort",), "endPort cannot be used with a named port")
        if not name and number == 0:
            r.fail(where + ("port",), "port must be between 1 and 65535")
        first, last = (0, 0) if name else port_range(r, obj, where, number, knp=True)
        out.append(PortMatch(proto, first, last, name))
    return tuple(dict.fromkeys(out))

def parse_knp(r: FieldReader, spec, path: tuple, namespace: str, name: str) -> tuple[list[Rule], list[DefaultDeny]]:
    spec = r.mapping(spec, path, ("podSelector", "policyTypes", "ingress", "egress"))
    if "podSelector" not in spec:
        r.fail(path, "missing field 'podSelector' (use {} to select every pod of the namespace)")
    subject = parse_selector(r, spec["podSelector"], path + ("podSelector",), "k8s").with_requirements(
        namespace_requirement(namespace))  # R12.1
    types = r.sequence(spec, "policyTypes", path)
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            r.fail(path + ("policyTypes", i), f"policy type {t!r} is not Ingress or Egress")
    rules: list[Rule] = []
    dd: list[DefaultDeny] = []
    for direction, section, peer_key in ((Direction.INGRESS, "ingress", "from"), (Direction.EGRESS, "egress", "to")):
        items = r.sequence(spec, section, path)
        type_name = section.capitalize()
        if types and items and type_name not in types:  # R12.11
            r.warn(path + (section,), f"policyTypes omits {type_name}, but Cilium still enforces these "
                                      f"{section} rules (Kubernetes ignores them) (R12.11)", "policytypes-divergence")
        for i, item in enumerate(items):
            where = path + (section, i)
            obj = r.mapping(item, where, (peer_key, "ports"))
            peers_raw = r.sequence(obj, peer_key, where)
            peers = tuple(dict.fromkeys(parse_knp_peer(r, p, where + (peer_key, j), namespace)
                                        for j, p in enumerate(peers_raw)))
            if not peers:  # R12.2, R12.6: everything, world included
                peers = (SelectorPeer((Selector(),), "wildcard"),)
            port_items = r.sequence(obj, "ports", where)
            ports = parse_knp_ports(r, port_items, where + ("ports",)) if port_items else L3_ONLY
            origin = origin_at(r, where, KNP, namespace, name)
            rules.append(Rule(f"{KNP}/{namespace}/{name}/{origin.path}", origin, subject, SubjectKind.ENDPOINT,
                              direction, Action.ALLOW, peers, ports))
        typed = type_name in types if direction is Direction.EGRESS else (type_name in types or "Egress" not in types)
        if items or typed:  # R12.7, R12.9: without its policy type, only the section's rules imply it
            dd.append(DefaultDeny(subject, SubjectKind.ENDPOINT, direction,
                                  origin_at(r, path + (section,) if items else path, KNP, namespace, name),
                                  () if typed else tuple(x.id for x in rules if x.direction is direction)))
    return rules, dd


def parse_networkpolicy(r: FieldReader, obj: dict, base: tuple, meta: Meta) -> tuple[list[Rule], list[DefaultDeny]]:
    return parse_knp(r, obj.get("spec"), base + ("spec",), meta.namespace, meta.name)
