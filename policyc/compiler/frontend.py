"""CNP, CCNP and Kubernetes NetworkPolicy → IR.

All namespace scoping is resolved here (R2.5–R2.16, R12.1–R12.4), so every
selector leaving this module is cluster-absolute and no later pass knows which
kind of object a rule came from.  Every field of the semantics reference is
either modelled or reported; an object with an error is left out whole (R1.1).
"""
from __future__ import annotations

import difflib
import ipaddress
import json
import re
from dataclasses import dataclass, field

from .diagnostics import Diagnostic, PolicycError, Severity, format_path
from .entities import ENTITY_NAMES, RESERVED, entity_selectors
from .ir import (ANY_SOURCE, CLUSTER_KEY, DEFAULT_CLUSTER, L3_ONLY, NAMESPACE_KEY,
                 NAMESPACE_LABELS_PREFIX, SERVICE_ACCOUNT_KEY, Action, CIDRPeer, DefaultDeny,
                 Direction, DNSRule, FQDNPeer, HTTPRule, L7Rules, Op, Origin,
                 Peer, Policy, PolicySet, PortMatch, Protocol, Requirement,
                 Rule, Selector, SelectorPeer, SubjectKind)
from .source import Document, load_documents

CNP, CCNP, KNP = "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy"
API_VERSIONS = {CNP: ("cilium.io/v2",), CCNP: ("cilium.io/v2",), KNP: ("networking.k8s.io/v1",)}
IGNORE_ANNOTATION = "policyc.io/ignore"
MAX_PORTS = 40  # R1.5 PortRule.ports and R1.27 ICMP fields

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IANA_NAME = re.compile(r"^(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")
_DNS_NAME = re.compile(r"^[a-z0-9_.-]+\.?$")
_DNS_PATTERN = re.compile(r"^[a-z0-9_.*-]+\.?$")

# R1.27: ICMP type names per family.
ICMP_TYPES = {
    4: {"EchoReply": 0, "DestinationUnreachable": 3, "Redirect": 5, "Echo": 8, "EchoRequest": 8,
        "RouterAdvertisement": 9, "RouterSelection": 10, "TimeExceeded": 11, "ParameterProblem": 12,
        "Timestamp": 13, "TimestampReply": 14, "Photuris": 40, "ExtendedEchoRequest": 42,
        "ExtendedEchoReply": 43},
    6: {"DestinationUnreachable": 1, "PacketTooBig": 2, "TimeExceeded": 3, "ParameterProblem": 4,
        "EchoRequest": 128, "EchoReply": 129, "MulticastListenerQuery": 130, "MulticastListenerReport": 131,
        "MulticastListenerDone": 132, "RouterSolicitation": 133, "RouterAdvertisement": 134,
        "NeighborSolicitation": 135, "NeighborAdvertisement": 136, "RedirectMessage": 137,
        "RouterRenumbering": 138, "ICMPNodeInformationQuery": 139, "ICMPNodeInformationResponse": 140,
        "InverseNeighborDiscoverySolicitation": 141, "InverseNeighborDiscoveryAdvertisement": 142,
        "HomeAgentAddressDiscoveryRequest": 144, "HomeAgentAddressDiscoveryReply": 145,
        "MobilePrefixSolicitation": 146, "MobilePrefixAdvertisement": 147,
        "DuplicateAddressRequestCodeSuffix": 157, "DuplicateAddressConfirmationCodeSuffix": 158,
        "ExtendedEchoRequest": 160, "ExtendedEchoReply": 161},
}

# Fields that exist in Cilium but that policyc cannot model: using them would make verdicts wrong.
UNSUPPORTED = {
    "fromRequires": "fromRequires was removed in Cilium 1.19 (V1); rewrite it into each rule's fromEndpoints",
    "toRequires": "toRequires was removed in Cilium 1.19 (V1); rewrite it into each rule's toEndpoints",
    "fromGroups": "cloud-provider groups are resolved by the Cilium operator at run time (R10.9)",
    "toGroups": "cloud-provider groups are resolved by the Cilium operator at run time (R10.9)",
    "toServices": "toServices needs the cluster's Services and EndpointSlices (R10.6), which policyc does not read",
    "cidrGroupRef": "CiliumCIDRGroup objects (R7.9) are not read by policyc",
    "cidrGroupSelector": "CiliumCIDRGroup objects (R7.9) are not read by policyc",
}


class Invalid(Exception):
    """Raised inside one object once an error is recorded, to abandon it (R1.1)."""


@dataclass
class FieldReader:
    """Field access with positions: every complaint names file, line, column and field path."""

    doc: Document
    diagnostics: list = field(default_factory=list)
    errors: int = 0

    def error(self, path: tuple, message: str) -> None:
        self.diagnostics.append(self.doc.diag(path, message))
        self.errors += 1

    def warn(self, path: tuple, message: str, code: str = "") -> None:
        self.diagnostics.append(self.doc.diag(path, message, Severity.WARNING, code))

    def fail(self, path: tuple, message: str):
        self.error(path, message)
        raise Invalid

    def mapping(self, value, path: tuple, allowed: tuple[str, ...]) -> dict:
        """A mapping whose keys are all known (unknown ones are errors with a suggestion)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, not {kind_of(value)}")
        for key in value:
            if key in allowed:
                continue
            if key in UNSUPPORTED:
                self.error(path + (key,), f"unsupported field {key!r}: {UNSUPPORTED[key]}")
                continue
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.error(path + (key,), f"unknown field {key!r}{hint}")
        return value

    def sequence(self, obj: dict, key: str, path: tuple) -> list:
        value = obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path + (key,), f"must be a list, not {kind_of(value)}")
        return value

    def text(self, value, path: tuple, what: str = "value") -> str:
        if not isinstance(value, str):
            self.fail(path, f"{what} must be a string, not {kind_of(value)}")
        return value

    def boolean(self, value, path: tuple) -> bool:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {value!r}")
        return value


def kind_of(value) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a fractional number", type(None): "null"}.get(type(value), type(value).__name__)


# ---------------------------------------------------------------- selectors

_OPS = {op.value: op for op in Op}


def split_key(key: str, default_source: str) -> tuple[str, str]:
    """``k8s:app`` → (k8s, app); a bare key has the default source (R2.2, R12.3)."""
    if ":" in key:
        source, rest = key.split(":", 1)
        if source and rest:
            return source, rest
    return default_source, key


def check_dotted_source(r: FieldReader, key: str, where: tuple) -> None:
    """Warn about ``k8s.io.kubernetes.pod.namespace``: Cilium splits a source off only at ':'.

    Written with a dot, the key is read as a plain key of any source, which no identity carries,
    so the requirement silently selects nothing (In) or everything (NotIn, DoesNotExist).
    """
    source, dot, rest = key.partition(".")
    derived = (NAMESPACE_KEY, SERVICE_ACCOUNT_KEY, CLUSTER_KEY)
    if ":" not in key and dot and source in ("k8s", "any") and (
            rest in derived or rest.startswith(NAMESPACE_LABELS_PREFIX)):
        r.warn(where, f"no identity carries the label key {key!r}: a source prefix is separated by ':', "
                      f"not '.'; did you mean {source + ':' + rest!r}?")


def parse_selector(r: FieldReader, value, path: tuple, default_source: str = ANY_SOURCE,
                   key_map=lambda k: k) -> Selector:
    """A Kubernetes LabelSelector; ``key_map`` rewrites keys (KNP namespace selectors, R12.3)."""
    obj = r.mapping(value, path, ("matchLabels", "matchExpressions"))
    reqs: list[Requirement] = []
    labels = obj.get("matchLabels") or {}
    if not isinstance(labels, dict):
        r.fail(path + ("matchLabels",), f"must be a mapping of label keys to values, not {kind_of(labels)}")
    for key, val in labels.items():
        where = path + ("matchLabels", key)
        check_dotted_source(r, str(key), where)
        if val is None:
            val = ""
        if not isinstance(val, str):
            r.fail(where, f"label value must be a string, not {kind_of(val)} (quote it: \"{val}\")")
        label_value(r, val, where)
        source, k = split_key(key_map(key), default_source)
        reqs.append(Requirement(source, k, Op.IN, (val,)))
    for i, expr in enumerate(r.sequence(obj, "matchExpressions", path)):
        where = path + ("matchExpressions", i)
        expr = r.mapping(expr, where, ("key", "operator", "values"))
        key = r.text(expr.get("key"), where + ("key",), "key")
        check_dotted_source(r, key, where + ("key",))
        op_text = expr.get("operator")
        op = _OPS.get(op_text) if isinstance(op_text, str) else None
        if op is None:
            close = difflib.get_close_matches(str(op_text), list(_OPS), n=1, cutoff=0.5)
            if isinstance(op_text, str) and op_text.lower() in {o.lower() for o in _OPS}:
                close = [next(o for o in _OPS if o.lower() == op_text.lower())]
            hint = f"; did you mean {close[0]!r}? (operators are case-sensitive)" if close else ""
            r.fail(where + ("operator",), f"invalid operator {op_text!r}: expected In, NotIn, Exists "
                                           f"or DoesNotExist{hint}")
        values = r.sequence(expr, "values", where)
        for j, v in enumerate(values):
            label_value(r, r.text(v, where + ("values", j)), where + ("values", j))
        if op in (Op.IN, Op.NOT_IN) and not values:
            r.fail(where + ("values",), f"operator {op.value} needs at least one value")
        if op in (Op.EXISTS, Op.DOES_NOT_EXIST) and values:
            r.fail(where + ("values",), f"operator {op.value} takes no values")
        source, k = split_key(key_map(key), default_source)
        reqs.append(Requirement(source, k, op, tuple(sorted(set(values)))))
    return Selector(tuple(sorted(set(reqs))))


def label_value(r: FieldReader, value: str, path: tuple) -> None:
    """R1.6: selector values are Kubernetes label values (at most 63 characters, alphanumerics and -_. inside)."""
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        r.error(path, f"{value!r} is not a valid label value: at most 63 characters, letters, digits, '-', '_' "
                      "and '.', starting and ending with a letter or digit")


def _ns_req(namespace: str) -> Requirement:
    return Requirement("k8s", NAMESPACE_KEY, Op.IN, (namespace,))


def scope_peer(sel: Selector, namespace: str | None, subject: Selector) -> Selector:
    """Namespace scoping of a fromEndpoints/toEndpoints selector (R2.9–R2.13); None = clusterwide."""
    if sel.mentions_source(RESERVED) or sel.mentions(NAMESPACE_KEY):
        return sel
    if namespace is not None:
        if sel.mentions_prefix(NAMESPACE_LABELS_PREFIX):
            return sel
        return sel.with_requirements(_ns_req(namespace))
    if subject.mentions("init", (RESERVED,)):
        return sel
    return sel.with_requirements(Requirement("k8s", NAMESPACE_KEY, Op.EXISTS))


def scope_subject(r: FieldReader, sel: Selector, namespace: str, path: tuple) -> Selector:
    """R2.5: a CNP selects only its own namespace; a different namespace written in matchLabels is overwritten."""
    kept = []
    for req in sel.requirements:
        if req.source == "k8s" and req.key == NAMESPACE_KEY and req.op is Op.IN and len(req.values) == 1:
            if req.values[0] != namespace:
                r.warn(path, f"namespace {req.values[0]!r} in the endpointSelector is overwritten with the "
                             f"policy's namespace {namespace!r} (R2.5)")
            continue
        kept.append(req)
    return Selector(tuple(kept)).with_requirements(_ns_req(namespace))


# ---------------------------------------------------------------- peers

def parse_cidr(r: FieldReader, value, path: tuple, bare_ip_ok: bool):
    text = r.text(value, path, "CIDR")
    try:
        if "/" not in text:
            if not bare_ip_ok:
                r.fail(path, f"{text!r} is not in prefix notation (a.b.c.d/n or x::/n)")
            ip = ipaddress.ip_address(text)
            return ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        r.fail(path, f"invalid CIDR {text!r}")


def parse_cidr_rule(r: FieldReader, value, path: tuple, cidr_key: str = "cidr") -> CIDRPeer:
    """A CIDRRule (R1.25, R1.26) or a KNP ipBlock (R12.5)."""
    obj = r.mapping(value, path, (cidr_key, "except"))
    if cidr_key not in obj:
        if any(key in UNSUPPORTED for key in obj):
            raise Invalid  # a CIDR group instead of a cidr: already reported as unsupported
        r.fail(path, f"missing field {cidr_key!r}")
    net = parse_cidr(r, obj[cidr_key], path + (cidr_key,), bare_ip_ok=False)
    excepts = []
    for i, ex in enumerate(r.sequence(obj, "except", path)):
        where = path + ("except", i)
        sub = parse_cidr(r, ex, where, bare_ip_ok=False)
        if sub.version != net.version:
            r.fail(where, f"except {sub} is not the same address family as {net}")
        if not sub.subnet_of(net):
            r.fail(where, f"except {sub} is outside its CIDR {net}")
        excepts.append(sub)
    return CIDRPeer(net, tuple(sorted(set(excepts), key=lambda n: (n.network_address, n.prefixlen))))


def parse_fqdn(r: FieldReader, value, path: tuple) -> FQDNPeer:
    obj = r.mapping(value, path, ("matchName", "matchPattern"))
    if ("matchName" in obj) == ("matchPattern" in obj):
        r.fail(path, "needs exactly one of matchName or matchPattern")
    key = "matchName" if "matchName" in obj else "matchPattern"
    name = r.text(obj[key], path + (key,)).lower()
    pattern = _DNS_NAME if key == "matchName" else _DNS_PATTERN
    if not pattern.match(name):
        r.fail(path + (key,), f"{name!r} is not a valid DNS {'name' if key == 'matchName' else 'pattern'}")
    name = name.rstrip(".")
    return FQDNPeer(match_name=name) if key == "matchName" else FQDNPeer(match_pattern=name)


# ---------------------------------------------------------------- ports

def parse_port_number(r: FieldReader, value, path: tuple, allow_names: bool) -> tuple[int, str | None]:
    """(number, None) or (0, name) for a named port (R1.17); YAML may give ints or strings."""
    if isinstance(value, bool) or value is None:
        r.fail(path, f"port must be a number or a port name, not {kind_of(value)}")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        r.fail(path, f"port must be a number or a port name, not {kind_of(value)}")
    if re.fullmatch(r"-?[0-9]+", text):
        number = _go_port(r, text, path)
        if not 0 <= number <= 65535:
            r.fail(path, f"port {number} is out of range 0-65535")
        return number, None
    if allow_names and _IANA_NAME.match(text.lower()):
        return 0, text.lower()
    r.fail(path, f"port {value!r} is neither a number 0-65535 nor a valid port name "
                 "(letters, digits and single hyphens, at most 15 characters)")


def _go_port(r: FieldReader, text: str, path: tuple) -> int:
    """Cilium parses port strings with Go's ParseUint(s, 0, 16): a leading 0 means octal ("010" is 8)."""
    if len(text) < 2 or not text.startswith("0"):
        return int(text)
    if not re.fullmatch(r"0[0-7]+", text):
        r.fail(path, f"port {text!r} is not a valid octal number (Cilium reads a leading 0 as octal)")
    number = int(text, 8)
    if number != int(text):
        r.warn(path, f"port {text!r} is octal to Cilium: port {number}, not {int(text)}", "octal-port")
    return number


def port_range(r: FieldReader, obj: dict, path: tuple, number: int, knp: bool = False) -> tuple[int, int]:
    """[port, endPort]; an endPort below port is the single port in Cilium, an error in Kubernetes (R8.3)."""
    if number == 0:
        return 0, 65535  # R5.7, R8.7: port 0 means every port
    end = obj.get("endPort")
    if end is None:
        return number, number
    if isinstance(end, bool) or not isinstance(end, int):
        r.fail(path + ("endPort",), f"endPort must be a number, not {kind_of(end)}")
    if not 0 <= end <= 65535:
        r.fail(path + ("endPort",), f"endPort {end} is out of range 0-65535")
    if end and end < number:
        if knp:  # the API server's NetworkPolicy validation rejects it
            r.fail(path + ("endPort",), f"endPort {end} is less than port {number}")
        r.warn(path + ("endPort",), f"endPort {end} is less than port {number}: Cilium accepts this and "
                                    f"matches the single port {number} (R8.3)", "endport-below-port")
    return number, max(end, number)


def parse_protocol(r: FieldReader, value, path: tuple, knp: bool) -> tuple[Protocol, ...]:
    """CNP: TCP/UDP/SCTP/ANY case-insensitively, ANY = TCP+UDP+SCTP (R1.18, R8.2); KNP: TCP/UDP/SCTP, default TCP."""
    if value is None or value == "":
        return (Protocol.TCP,) if knp else (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
    text = r.text(value, path, "protocol")
    choices = ("TCP", "UDP", "SCTP") if knp else ("TCP", "UDP", "SCTP", "ANY")
    upper = text.upper() if not knp else text
    if upper not in choices:
        r.fail(path, f"unknown protocol {text!r}: expected one of {', '.join(choices)}")
    if upper == "ANY":
        return (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
    return (Protocol[upper],)


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
            if h.get("headerMatches"):
                r.warn(where + ("headerMatches",), "headerMatches is not modelled: verdicts treat it as "
                                                   "matching every request", "unsupported-field")
            rules.append(HTTPRule(*(r.text(h[k], where + (k,)) if h.get(k) is not None else None
                                    for k in ("method", "path", "host")),
                                  tuple(r.text(x, where + ("headers", j))
                                        for j, x in enumerate(r.sequence(h, "headers", where)))))
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


def parse_port_rules(r: FieldReader, items: list, path: tuple, direction: Direction, deny: bool) -> tuple[PortMatch, ...]:
    """toPorts of a CNP rule (R1.16–R1.23, R5.6, R8.2)."""
    allowed = ("ports",) if deny else ("ports", "rules", "terminatingTLS", "originatingTLS",
                                        "serverNames", "listener")
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
        for key in ("terminatingTLS", "originatingTLS", "serverNames", "listener"):
            if obj.get(key):
                r.warn(where + (key,), f"{key} is not modelled: verdicts cover L3/L4 only", "unsupported-field")
        parsed = []
        for j, port in enumerate(ports):
            pwhere = where + ("ports", j)
            port = r.mapping(port, pwhere, ("port", "endPort", "protocol"))
            if port.get("port") in (None, ""):
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
            out.extend(PortMatch(p, first, last, name, l7) for p in protos)
    return tuple(dict.fromkeys(out))


def parse_icmps(r: FieldReader, items: list, path: tuple) -> tuple[PortMatch, ...]:
    out = []
    for i, item in enumerate(items):
        where = path + (i,)
        obj = r.mapping(item, where, ("fields",))
        fields = r.sequence(obj, "fields", where)
        if len(fields) > MAX_PORTS:
            r.fail(where + ("fields",), f"at most {MAX_PORTS} ICMP fields, found {len(fields)}")
        for j, f in enumerate(fields):
            fwhere = where + ("fields", j)
            f = r.mapping(f, fwhere, ("family", "type"))
            family = f.get("family") or "IPv4"
            if family not in ("IPv4", "IPv6"):
                r.fail(fwhere + ("family",), f"family must be IPv4 or IPv6, not {family!r}")
            version = 4 if family == "IPv4" else 6
            t = f.get("type")
            if isinstance(t, str) and t in ICMP_TYPES[version]:
                number = ICMP_TYPES[version][t]
            elif isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= 255:
                number = t
            elif isinstance(t, str) and t.isdigit() and int(t) <= 255:
                number = int(t)
            else:
                close = difflib.get_close_matches(str(t), ICMP_TYPES[version], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                r.fail(fwhere + ("type",), f"invalid {family} ICMP type {t!r}: a number 0-255 or a "
                                           f"{family} type name{hint}")
            out.append(PortMatch(Protocol.ICMP if version == 4 else Protocol.ICMPV6, number, number))
    return tuple(dict.fromkeys(out))


# ---------------------------------------------------------------- rules

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
                peers.append(CIDRPeer(parse_cidr(r, item, where, bare_ip_ok=True)))  # R1.24, R7.4
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


def _origin(r: FieldReader, path: tuple, kind: str, namespace: str | None, name: str) -> Origin:
    line, col = r.doc.position(path)
    return Origin(r.doc.file, line, col, format_path(path), kind, namespace or "", name)


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
    if not any(obj.get(s) for s, _, _ in _SECTIONS):
        r.warn(path, "rule has none of ingress, ingressDeny, egress, egressDeny: it has no effect "
                     "(newer Cilium rejects it, R1.5)", "empty-rule")
    scope = _Scope(kind, namespace, name, cluster, subject, subject_kind)
    flags = r.mapping(obj.get("enableDefaultDeny"), path + ("enableDefaultDeny",), ("ingress", "egress"))
    rules: list[Rule] = []
    dd: list[DefaultDeny] = []
    for section, direction, action in _SECTIONS:
        for i, item in enumerate(r.sequence(obj, section, path)):
            where = path + (section, i)
            rules.append(parse_rule(r, item, where, scope, direction, action,
                                    _origin(r, where, kind, namespace, name)))
    for direction in Direction:
        present = [s for s, d, _ in _SECTIONS if d is direction and r.sequence(obj, s, path)]
        flag = flags.get(direction.value)
        wants = r.boolean(flag, path + ("enableDefaultDeny", direction.value)) if flag is not None else bool(present)
        if present and wants:  # R3.2, R3.4: the sections' rules imply it, even with the flag set
            dd.append(DefaultDeny(subject, subject_kind, direction,
                                  _origin(r, path + (present[0],), kind, namespace, name),
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


# ---------------------------------------------------------------- Kubernetes NetworkPolicy

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
        sel = pods.with_requirements(_ns_req(namespace))
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
        _ns_req(namespace))  # R12.1
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
            origin = _origin(r, where, KNP, namespace, name)
            rules.append(Rule(f"{KNP}/{namespace}/{name}/{origin.path}", origin, subject, SubjectKind.ENDPOINT,
                              direction, Action.ALLOW, peers, ports))
        typed = type_name in types if direction is Direction.EGRESS else (type_name in types or "Egress" not in types)
        if items or typed:  # R12.7, R12.9: without its policy type, only the section's rules imply it
            dd.append(DefaultDeny(subject, SubjectKind.ENDPOINT, direction,
                                  _origin(r, path + (section,) if items else path, KNP, namespace, name),
                                  () if typed else tuple(x.id for x in rules if x.direction is direction)))
    return rules, dd


# ---------------------------------------------------------------- objects

@dataclass
class FrontendResult:
    policy: PolicySet
    diagnostics: list[Diagnostic]
    skipped: list[str]  # "file:line: kind name" of objects that are not policies


def _objects(doc: Document):
    value = doc.value
    if isinstance(value, dict) and value.get("kind") == "List" and isinstance(value.get("items"), list):
        for i, item in enumerate(value["items"]):
            yield ("items", i), item
    else:
        yield (), value


def parse_object(r: FieldReader, obj, base: tuple, cluster: str):
    """One top-level object → (rules, default-deny entries, Policy) or None when it is not a policy."""
    if not isinstance(obj, dict):
        r.fail(base, f"a document must be a mapping (a Kubernetes object), not {kind_of(obj)}")
    kind, api = obj.get("kind"), obj.get("apiVersion")
    if kind is None or api is None:
        r.fail(base, f"not a Kubernetes object: missing {'kind' if kind is None else 'apiVersion'}")
    for key, value in (("apiVersion", api), ("kind", kind)):
        r.text(value, base + (key,), key)
    if kind not in API_VERSIONS:
        if isinstance(api, str) and api.split("/")[0] in ("cilium.io", "networking.k8s.io") and \
                kind not in ("CiliumCIDRGroup", "CiliumEndpoint", "CiliumNode", "CiliumIdentity", "Ingress",
                             "IngressClass", "CiliumLoadBalancerIPPool", "CiliumEgressGatewayPolicy"):
            close = difflib.get_close_matches(str(kind), list(API_VERSIONS), n=1)
            r.fail(base + ("kind",), f"unknown policy kind {kind!r} for {api}"
                   + (f"; did you mean {close[0]!r}?" if close else ""))
        return None
    if api not in API_VERSIONS[kind]:
        r.fail(base + ("apiVersion",), f"unknown apiVersion {api!r} for {kind}: expected {API_VERSIONS[kind][0]}")
    top = ("apiVersion", "kind", "metadata", "status") + (("spec",) if kind == KNP else ("spec", "specs"))
    for key in obj:
        if key not in top:  # the API server prunes these; the meaning of the policy is unchanged
            close = difflib.get_close_matches(key, top, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else (
                "; description belongs in the rule (spec.description)" if key == "description" else "")
            r.warn(base + (key,), f"unknown top-level field {key!r} is dropped by the API server{hint}",
                   "unknown-field")
    meta = obj.get("metadata") or {}
    meta = r.mapping(meta, base + ("metadata",), tuple(meta) if isinstance(meta, dict) else ())
    name = meta.get("name")
    if not name:
        r.fail(base + ("metadata",), "missing metadata.name")
    r.text(name, base + ("metadata", "name"), "metadata.name")
    namespace = meta.get("namespace")
    if namespace is not None:
        r.text(namespace, base + ("metadata", "namespace"), "metadata.namespace")
    if kind == CCNP:
        if namespace:
            r.warn(base + ("metadata", "namespace"), "a clusterwide policy has no namespace: ignored (R1.2)")
        namespace = None
    else:
        namespace = str(namespace or "default")
    annotations = r.mapping(meta.get("annotations"), base + ("metadata", "annotations"),
                            tuple(meta.get("annotations") or ()))
    ignore = tuple(x.strip() for x in str(annotations.get(IGNORE_ANNOTATION, "")).split(",") if x.strip())
    origin = _origin(r, base, kind, namespace, name)
    if kind == KNP:
        rules, dd = parse_knp(r, obj.get("spec"), base + ("spec",), namespace, name)
    else:
        specs = []
        if obj.get("spec") is not None:
            specs.append((base + ("spec",), obj["spec"]))
        specs.extend((base + ("specs", i), s) for i, s in enumerate(r.sequence(obj, "specs", base)))
        if not specs:
            r.fail(base, "policy has neither spec nor specs (R1.1)")
        rules, dd = [], []
        for path, spec in specs:
            got_rules, got_dd = parse_cilium_rule(r, spec, path, kind, namespace, name, cluster)
            rules += got_rules
            dd += got_dd
    return rules, dd, Policy(kind, namespace or "", name, origin, ignore)


MAX_ERRORS = 200  # enough to fix a file; a megabyte of wrong items should not print a million lines


def build_policy_set(docs: list[Document], cluster: str = DEFAULT_CLUSTER) -> FrontendResult:
    rules: list[Rule] = []
    dd: list[DefaultDeny] = []
    policies: list[Policy] = []
    diagnostics: list[Diagnostic] = []
    skipped: list[str] = []
    seen: dict[tuple, Origin] = {}
    error_count = 0
    for doc, base, obj in ((d, b, o) for d in docs for b, o in _objects(d)):
        if error_count >= MAX_ERRORS:
            diagnostics.append(doc.diag(base, f"stopping after {MAX_ERRORS} errors; fix these and run again",
                                        code="too-many-errors"))
            break
        r = FieldReader(doc)
        try:
            got = parse_object(r, obj, base, cluster)
        except Invalid:
            got = None
        diagnostics.extend(r.diagnostics)
        error_count += r.errors
        if r.errors:
            continue
        if got is None:
            line, _ = doc.position(base)
            meta = obj.get("metadata")
            name = meta.get("name", "") if isinstance(meta, dict) else ""
            skipped.append(f"{doc.file}:{line}: {obj.get('kind')} {name}")
            continue
        got_rules, got_dd, policy = got
        key = (policy.kind, policy.namespace, policy.name)
        if key in seen:
            diagnostics.append(doc.diag(base + ("metadata", "name"),
                                        f"{policy.kind} {policy.namespace + '/' if policy.namespace else ''}"
                                        f"{policy.name} is defined twice (first at {seen[key]}); both are "
                                        "kept, as separate files would be", Severity.WARNING, "duplicate-name"))
        seen.setdefault(key, policy.origin)
        rules.extend(got_rules)
        dd.extend(got_dd)
        policies.append(policy)
    return FrontendResult(PolicySet(tuple(rules), tuple(dd), tuple(policies), cluster), diagnostics, skipped)


def load_policies(paths, cluster: str = DEFAULT_CLUSTER) -> tuple[PolicySet, list[Diagnostic]]:
    """Parse and translate; raises PolicycError when any input has an error."""
    result = build_policy_set(load_documents(paths), cluster)
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    if errors:
        raise PolicycError(*result.diagnostics)
    return result.policy, result.diagnostics
