"""CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy rules → IR (§1–§11 of docs/semantics.md)."""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from ..entities import ENTITY_NAMES, RESERVED, entity_selectors
from ..ir import (L3_ONLY, Action, CIDRPeer, DefaultDeny, Direction, DNSRule, HTTPRule, L7Rules, Op, Origin, Peer,
                  PortMatch, Protocol, Requirement, Rule, Selector, SelectorPeer, SubjectKind)
from .goregex import go_regex_error
from .meta import CNP, Meta
from .reader import FieldReader, origin_at
from .selectors import parse_selector, scope_peer, scope_subject
from .values import (MAX_PORTS, parse_cidr_rule, parse_fqdn, parse_icmps, parse_port_number, parse_protocol,
                     policy_cidr, port_range)

def parse_l7(r: FieldReader, value, path: tuple, direction: Direction, protocols: set, numbers: list) -> L7Rules | None:
    """L7 rules of a PortRule (R1.12, R1.19–R1.22, R9.x)."""
    obj = r.mapping(value, path, ("http", "dns", "kafka", "l7proto", "l7"))
    families = [k for k in ("http", "dns", "kafka", "l7") if obj.get(k)]
    if obj.get("l7") and not obj.get("l7proto"):
        r.fail(path + ("l7",), "'l7' needs 'l7proto' (R1.22)")
    if "l7proto" in obj and "l7" not in families:
        families.append("l7")
    if not families:
        return None  # R5.8: `rules: {}` is no L7 rule
    if len(families) > 1:
        r.fail(path, f"only one L7 family per port rule, found {', '.join(families)} (R1.22)")
    family = families[0]
    if family == "dns" and direction is Direction.INGRESS:
        r.fail(path + ("dns",), "DNS rules are only allowed on egress (R1.12)")
    if family == "http" and protocols - {Protocol.TCP}:
        r.fail(path, "HTTP rules need every port of the port rule to have protocol TCP (R1.19)")
    if 0 in numbers:
        r.fail(path, "L7 rules cannot be combined with port 0 (R1.20)")
    if family == "http":
        rules = []
        for i, h in enumerate(r.sequence(obj, "http", path)):
            where = path + ("http", i)
            h = r.mapping(h, where, ("method", "path", "host", "headers", "headerMatches"))
            matches = tuple(json.dumps(x, sort_keys=True) for x in r.sequence(h, "headerMatches", where))
            if matches:
                r.warn(where + ("headerMatches",), "headerMatches is not enforced by policyc: concrete verdicts "
                                                   "treat it as matching every request, the verifier as an "
                                                   "unknown condition", "unsupported-field")
            for key in ("method", "path"):  # Cilium compiles both with Go's regexp and rejects the rule
                problem = go_regex_error(r.text(h[key], where + (key,))) if h.get(key) is not None else None
                if problem:
                    r.error(where + (key,), f"{key} {h[key]!r} is not a valid regular expression ({problem}); "
                                            "Cilium rejects the rule (R1.19b)", "invalid-regex")
            rules.append(HTTPRule(*(r.text(h[k], where + (k,)) if h.get(k) is not None else None
                                    for k in ("method", "path", "host")),
                                  tuple(r.text(x, where + ("headers", j))
                                        for j, x in enumerate(r.sequence(h, "headers", where))), matches))
        return L7Rules("http", http=tuple(rules))
    if family == "dns":
        rules = []
        for i, d in enumerate(r.sequence(obj, "dns", path)):
            peer = parse_fqdn(r, d, path + ("dns", i))
            rules.append(DNSRule(peer.match_name, peer.match_pattern))
        return L7Rules("dns", dns=tuple(rules))
    if family == "kafka":
        # Deprecated in 1.18, removed from main for 1.20 (cilium PRs 40967, 43557, 44610).
        r.warn(path + ("kafka",), "Kafka L7 rules are deprecated and removed in Cilium 1.20 (V2); modelled as an "
                                  "opaque L7 filter on an allowed port", "unsupported-field")
    opaque = tuple(json.dumps(x, sort_keys=True) for x in (obj.get(family) or [obj.get("l7proto")]))
    return L7Rules("kafka" if family == "kafka" else "generic", opaque=opaque)

TLS_KEYS = ("serverNames", "terminatingTLS", "originatingTLS", "listener")


def parse_port_rules(r: FieldReader, items: list, path: tuple, direction: Direction, deny: bool) -> tuple[PortMatch, ...]:
    """toPorts of a CNP rule (R1.16–R1.23, R5.6, R8.2)."""
    allowed = ("ports",) if deny else ("ports", "rules") + TLS_KEYS
    out: list[PortMatch] = []
    for i, item in enumerate(items):
        where = path + (i,)
        if deny and isinstance(item, dict) and "rules" in item:
            r.fail(where + ("rules",), "L7 rules are not allowed in a deny rule: deny works on L3/L4 only (R4.3)")
        obj = r.mapping(item, where, allowed)
        ports = r.sequence(obj, "ports", where)
        if len(ports) > MAX_PORTS:
            r.fail(where + ("ports",), f"at most {MAX_PORTS} ports per port rule, found {len(ports)}")
        if not ports:
            r.warn(where, "a port rule without ports allows nothing (R5.6)", "empty-port-rule")
        for j, name in enumerate(r.sequence(obj, "serverNames", where)):
            if not r.text(name, where + ("serverNames", j), "server name"):
                r.fail(where + ("serverNames", j), "an empty server name is not allowed (R1.23)")
        tls = tuple(json.dumps({key: obj[key]}, sort_keys=True) for key in TLS_KEYS if obj.get(key))
        for key in TLS_KEYS:
            if obj.get(key):
                r.warn(where + (key,), f"{key} is not enforced by policyc: concrete verdicts and the datapath "
                                       "cover L3/L4 only, the verifier treats it as an unknown condition",
                       "unsupported-field")
        parsed = []
        for j, port in enumerate(ports):
            pwhere = where + ("ports", j)
            port = r.mapping(port, pwhere, ("port", "endPort", "protocol"))
            if port.get("port") in (None, ""):
                parse_protocol(r, port.get("protocol"), pwhere + ("protocol",), knp=False)  # VRRP: its own error
                r.fail(pwhere + ("port",), "port is required (R1.16)")
            if isinstance(port["port"], int) and not isinstance(port["port"], bool):  # the CRD types it string
                r.fail(pwhere + ("port",), f"port {port['port']} is a number: quote it (\"{port['port']}\"), the "
                                           "API server rejects a number here")
            number, name = parse_port_number(r, port["port"], pwhere + ("port",), allow_names=True)
            protos = parse_protocol(r, port.get("protocol"), pwhere + ("protocol",), knp=False)
            first, last = (0, 0) if name else port_range(r, port, pwhere, number)
            parsed.append((protos, first, last, name, number))
        l7 = None
        if obj.get("rules") is not None:
            l7 = parse_l7(r, obj["rules"], where + ("rules",), direction,
                          {p for protos, *_ in parsed for p in protos},
                          [n for *_, name, n in parsed if name is None])  # a named port is not port 0
            if l7 and l7.kind == "dns" and not parsed:
                r.fail(where + ("rules", "dns"), "DNS rules need a port in the same port rule (R1.21)")
            if l7 and l7.kind == "dns" and any(first != last for _, first, last, name, _ in parsed if not name):
                r.fail(where + ("ports",), "DNS rules cannot use a port range (R1.21)")
            if l7 and obj.get("serverNames") and not obj.get("terminatingTLS"):
                r.fail(where + ("serverNames",), "serverNames with L7 rules need terminatingTLS (R1.23)")
        for protos, first, last, name, _ in parsed:
            out.extend(PortMatch(p, first, last, name, l7, tls) for p in protos)
    return tuple(dict.fromkeys(out))

@dataclass(frozen=True)
class _Scope:
    """What a rule's translation needs to know about its object."""

    kind: str
    namespace: str | None  # None for CCNP
    name: str
    cluster: str
    subject: Selector
    subject_kind: SubjectKind

_PEER_FIELDS = {
    Direction.INGRESS: ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities", "fromNodes"),
    Direction.EGRESS: ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toNodes", "toFQDNs"),
}

def parse_peers(r: FieldReader, obj: dict, path: tuple, scope: _Scope, direction: Direction) -> tuple[Peer, ...]:
    kinds = [k for k in _PEER_FIELDS[direction] if obj.get(k)]
    if len(kinds) > 1:  # R1.7, R1.13
        r.fail(path, f"combining {kinds[0]} and {kinds[1]} in one rule is not supported by Cilium; "
                     "write them as separate rules (R1.7)")
    peers: list[Peer] = []
    for kind in kinds:
        items = r.sequence(obj, kind, path)
        for i, item in enumerate(items):
            where = path + (kind, i)
            if kind.endswith("Endpoints"):
                sel = parse_selector(r, item, where)
                peers.append(SelectorPeer((scope_peer(sel, scope.namespace, scope.subject),), "endpoints"))
            elif kind.endswith("Nodes"):  # R2.16: only remote nodes
                sel = parse_selector(r, item, where).with_requirements(
                    Requirement(RESERVED, "remote-node", Op.EXISTS))
                peers.append(SelectorPeer((sel,), "nodes"))
            elif kind.endswith("Entities"):
                name = r.text(item, where, "entity")
                if name not in ENTITY_NAMES:
                    close = difflib.get_close_matches(name, ENTITY_NAMES, n=1)
                    r.fail(where, f"unknown entity {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
                peers.append(SelectorPeer(entity_selectors(name, scope.cluster), "entity", name))
            elif kind.endswith("CIDRSet"):
                peers.append(parse_cidr_rule(r, item, where))
            elif kind.endswith("CIDR"):
                peers.append(CIDRPeer(policy_cidr(r, item, where, bare_ip_ok=True)))  # R1.24, R7.4
            else:
                peers.append(parse_fqdn(r, item, where))
    return tuple(dict.fromkeys(peers))

def parse_rule(r: FieldReader, item, path: tuple, scope: _Scope, direction: Direction, action: Action,
               origin: Origin) -> Rule:
    deny = action is Action.DENY
    fields = _PEER_FIELDS[direction] + ("toPorts", "icmps")
    if deny:
        fields = tuple(f for f in fields if f != "toFQDNs")
        if isinstance(item, dict) and "toFQDNs" in item:
            r.fail(path + ("toFQDNs",), "toFQDNs is not allowed in a deny rule (R4.3)")
    else:
        fields += ("authentication",)
    obj = r.mapping(item, path, fields)
    peers = parse_peers(r, obj, path, scope, direction)
    to_ports = r.sequence(obj, "toPorts", path)
    icmps = r.sequence(obj, "icmps", path)
    if to_ports and icmps:
        r.fail(path, "icmps and toPorts cannot be combined in one rule (R1.8)")
    auth = None
    if obj.get("authentication") is not None:
        a = r.mapping(obj["authentication"], path + ("authentication",), ("mode",))
        auth = a.get("mode")
        if auth not in ("disabled", "required", "test-always-fail"):
            r.fail(path + ("authentication", "mode"), f"authentication mode {auth!r} is not one of disabled, "
                                                      "required, test-always-fail")
        if auth == "disabled":
            auth = None
        elif auth == "test-always-fail":
            r.warn(path + ("authentication",), "test-always-fail fails every handshake: the flows this rule "
                                               "alone allows are denied (auth-required)", "always-fail-auth")
        else:
            r.warn(path + ("authentication",), "mutual authentication is not modelled: verdicts assume it "
                                               "succeeds", "unsupported-field")
    if to_ports:
        ports = parse_port_rules(r, to_ports, path + ("toPorts",), direction, deny)
    elif icmps:
        ports = parse_icmps(r, icmps, path + ("icmps",))
    else:
        ports = L3_ONLY if peers else ()  # R5.2b / R5.1
    if not peers and (to_ports or icmps):
        peers = (SelectorPeer((Selector(),), "wildcard"),)  # R5.2
    rid = f"{origin.policy_kind}/{origin.policy}/{origin.path}"
    return Rule(rid, origin, scope.subject, scope.subject_kind, direction, action, peers, ports, auth)

_SECTIONS = (("ingress", Direction.INGRESS, Action.ALLOW), ("ingressDeny", Direction.INGRESS, Action.DENY),
             ("egress", Direction.EGRESS, Action.ALLOW), ("egressDeny", Direction.EGRESS, Action.DENY))

def parse_cilium_rule(r: FieldReader, value, path: tuple, kind: str, namespace: str | None, name: str,
                      cluster: str) -> tuple[list[Rule], list[DefaultDeny]]:
    """One CNP/CCNP rule (``spec`` or an element of ``specs``)."""
    obj = r.mapping(value, path, ("endpointSelector", "nodeSelector", "ingress", "ingressDeny", "egress",
                                  "egressDeny", "enableDefaultDeny", "labels", "description", "log"))
    has_ep, has_node = obj.get("endpointSelector") is not None, obj.get("nodeSelector") is not None
    if has_ep == has_node:  # R1.4
        r.fail(path, "needs exactly one of endpointSelector or nodeSelector, found "
                     + ("both" if has_ep else "neither"))
    if has_node and kind == CNP:
        r.fail(path + ("nodeSelector",), "nodeSelector is only allowed in a CiliumClusterwideNetworkPolicy (R1.1b)")
    if has_node:
        subject = parse_selector(r, obj["nodeSelector"], path + ("nodeSelector",))
        subject_kind = SubjectKind.NODE
    else:
        subject = parse_selector(r, obj["endpointSelector"], path + ("endpointSelector",))
        if kind == CNP:
            subject = scope_subject(r, subject, namespace, path + ("endpointSelector",))
        subject_kind = SubjectKind.ENDPOINT
    for section, _, _ in _SECTIONS:  # `egress: {}` is a section of the wrong type, not a missing one
        r.sequence(obj, section, path)
    if not any(obj.get(s) for s, _, _ in _SECTIONS):  # Rule.Validate and the CRD schema refuse it
        r.fail(path, "a rule needs at least one of ingress, ingressDeny, egress, egressDeny; Cilium rejects "
                     "it (R1.5). To deny all traffic in a direction write `ingress: [{}]`", "empty-rule")
    scope = _Scope(kind, namespace, name, cluster, subject, subject_kind)
    flags = r.mapping(obj.get("enableDefaultDeny"), path + ("enableDefaultDeny",), ("ingress", "egress"))
    rules: list[Rule] = []
    dd: list[DefaultDeny] = []
    for section, direction, action in _SECTIONS:
        for i, item in enumerate(r.sequence(obj, section, path)):
            where = path + (section, i)
            rules.append(parse_rule(r, item, where, scope, direction, action,
                                    origin_at(r, where, kind, namespace, name)))
    for direction in Direction:
        present = [s for s, d, _ in _SECTIONS if d is direction and r.sequence(obj, s, path)]
        flag = flags.get(direction.value)
        wants = r.boolean(flag, path + ("enableDefaultDeny", direction.value)) if flag is not None else bool(present)
        if present and wants:  # R3.2, R3.4: the sections' rules imply it, even with the flag set
            dd.append(DefaultDeny(subject, subject_kind, direction,
                                  origin_at(r, path + (present[0],), kind, namespace, name),
                                  tuple(x.id for x in rules if x.direction is direction)))
        elif flag and not present:
            r.warn(path + ("enableDefaultDeny", direction.value),
                   f"enableDefaultDeny.{direction.value} without an {direction.value} section does nothing (R3.4)")
    for rule in rules:
        if subject_kind is SubjectKind.NODE and any(pm.l7 for pm in rule.ports):
            if rule.direction is Direction.INGRESS or any(pm.l7.kind != "dns" for pm in rule.ports if pm.l7):
                r.fail(path, "host policies (nodeSelector) support no L7 rules except DNS on egress (R9.8)")
    for direction in Direction:
        if flags.get(direction.value) is False and any(pm.l7 for rule in rules if rule.direction is direction
                                                       for pm in rule.ports):
            r.warn(path + ("enableDefaultDeny", direction.value),
                   f"L7 rules with enableDefaultDeny.{direction.value}: false: Cilium still sends those ports to the "
                   "proxy and filters requests there, although the endpoint is otherwise default-allow; policyc "
                   "reports such flows as allowed without L7 filtering (R3.4c)", "l7-without-default-deny")
    return rules, dd


def parse_cilium(r: FieldReader, obj: dict, base: tuple, meta: Meta) -> tuple[list[Rule], list[DefaultDeny]]:
    """A CNP or CCNP: its ``spec`` and every element of ``specs``; neither is an error (R1.1)."""
    specs = []
    if obj.get("spec") is not None:
        specs.append((base + ("spec",), obj["spec"]))
    specs.extend((base + ("specs", i), s) for i, s in enumerate(r.sequence(obj, "specs", base)))
    if not specs:
        r.fail(base, "policy has neither spec nor specs (R1.1)")
    rules: list[Rule] = []
    dd: list[DefaultDeny] = []
    for path, spec in specs:
        got_rules, got_dd = parse_cilium_rule(r, spec, path, meta.kind, meta.namespace, meta.name, meta.cluster)
        rules += got_rules
        dd += got_dd
    return rules, dd
