"""`policyc verify --spec`: the invariants file, read into frozen values.

The file is YAML (or JSON) read by ``source.py``, so every complaint names
file:line:column and the field path exactly as policy errors do; selectors
use the command-line grammar (``cliselector``) so that a spec reads like the
``policyc query`` commands its author already types.  docs/spec.md is the
user's reference; this module is the one place that decides what is valid.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Union

from ..cliselector import looks_like_selector, parse_cli_selector
from ..diagnostics import Diagnostic, PolicycError, Severity, format_path
from ..frontend import FieldReader, Invalid, kind_of, parse_cidr
from ..ir import NAMESPACE_KEY, Direction, IPNetwork, Op, Protocol, Requirement, Selector, unmapped
from ..source import Document, load_documents
from .findings import Location

API_VERSION = "policyc.io/v1alpha1"
KIND = "VerificationSpec"
KINDS = ("mustAllow", "mustDeny", "isolation", "defaultDeny", "worldOnly", "noPath", "maxBlastRadius")
WORLD = {"world": (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")),
         "world-ipv4": (ipaddress.ip_network("0.0.0.0/0"),),
         "world-ipv6": (ipaddress.ip_network("::/0"),)}
_PORT = re.compile(r"^(\*|[0-9]+(?:-[0-9]+)?)(?:/([A-Za-z0-9]+))?$")
_L4 = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)  # what ANY means in a port, as in toPorts (R8.2)


# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class Pods:
    """Every pod (any possible one, or the inventory's) whose labels match ``selector``."""

    selector: Selector
    text: str

    def __str__(self) -> str:
        return f"pods({self.text})"


@dataclass(frozen=True)
class NamedPod:
    """One inventory pod, ``namespace/name``: needs --inventory, so it keeps its place in the spec."""

    ref: str
    location: Location = field(compare=False, default=None)

    def __str__(self) -> str:
        return f"pod {self.ref}"


@dataclass(frozen=True)
class Addresses:
    """Addresses outside the cluster inside any of ``networks`` (CIDR peers never cover pods, R7.1)."""

    networks: tuple[IPNetwork, ...]
    text: str

    def __str__(self) -> str:
        return self.text


Peer = Union[Pods, NamedPod, Addresses]


@dataclass(frozen=True)
class PortRange:
    """Destination ports ``first``..``last`` of one protocol (for ICMP: the type)."""

    protocol: Protocol
    first: int
    last: int

    def __str__(self) -> str:
        where = "*" if (self.first, self.last) == (0, 65535) else \
            str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{where}/{self.protocol.label}"


@dataclass(frozen=True)
class MustAllow:
    """Every flow src → dst on ``ports`` (empty: every protocol and port) is allowed."""

    name: str
    location: Location
    src: Peer
    dst: Peer
    ports: tuple[PortRange, ...] = ()
    kind = "mustAllow"


@dataclass(frozen=True)
class MustDeny:
    """No flow src → dst on ``ports`` (empty: any) is allowed."""

    name: str
    location: Location
    src: Peer
    dst: Peer
    ports: tuple[PortRange, ...] = ()
    kind = "mustDeny"


@dataclass(frozen=True)
class Isolation:
    """No flow in either direction between ``a`` and ``b``, on any protocol and port."""

    name: str
    location: Location
    a: Peer
    b: Peer
    kind = "isolation"


@dataclass(frozen=True)
class DefaultDenyIn:
    """Every pod of ``namespaces`` is default-deny in each of ``directions``."""

    name: str
    location: Location
    namespaces: tuple[str, ...]
    directions: tuple[Direction, ...]
    kind = "defaultDeny"


@dataclass(frozen=True)
class WorldOnly:
    """From outside the cluster, pods matching ``dst`` are reachable only on ``ports``."""

    name: str
    location: Location
    dst: Peer
    ports: tuple[PortRange, ...]
    kind = "worldOnly"


@dataclass(frozen=True)
class NoPath:
    """No chain of allowed connections leads from ``src`` to ``dst`` in at most ``max_hops`` hops (None:
    any number), each hop on one of ``ports`` (empty: any); ``trust_nodes``: no chain passes a node."""

    name: str
    location: Location
    src: Peer
    dst: Peer
    max_hops: int | None = None
    ports: tuple[PortRange, ...] = ()
    trust_nodes: bool = False
    kind = "noPath"


@dataclass(frozen=True)
class MaxBlastRadius:
    """No pod of ``src`` reaches more than ``pods`` other pods by such chains."""

    name: str
    location: Location
    src: Peer
    pods: int
    max_hops: int | None = None
    ports: tuple[PortRange, ...] = ()
    trust_nodes: bool = False
    kind = "maxBlastRadius"


MULTI_HOP = (NoPath, MaxBlastRadius)  # questions about chains: they need the inventory's pods

Invariant = Union[MustAllow, MustDeny, Isolation, DefaultDenyIn, WorldOnly, NoPath, MaxBlastRadius]


@dataclass(frozen=True)
class Spec:
    invariants: tuple[Invariant, ...]


# ---------------------------------------------------------------- parsing

def _location(r: FieldReader, path: tuple) -> Location:
    line, column = r.doc.position(path)
    return Location(r.doc.file, line, column, format_path(path))


def _selector(r: FieldReader, value, path: tuple) -> Selector:
    text = r.text(value, path, "selector")
    if text.strip() == "*":
        return Selector()  # every pod: the command-line grammar has no empty selector
    try:
        return parse_cli_selector(text, "selector")
    except PolicycError as exc:
        r.fail(path, exc.diagnostics[0].message.removeprefix("selector: "))


_POD_REF = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")


def parse_peer(r: FieldReader, value, path: tuple) -> Peer:
    """A selector string, a bare ``namespace/name`` (one pod, as on the command line), or a mapping
    with one of pods, pod, cidr, entity."""
    if isinstance(value, str):
        if not looks_like_selector(value) and _POD_REF.match(value.strip()):
            return NamedPod(value.strip(), _location(r, path))
        return Pods(_selector(r, value, path), value)
    obj = r.mapping(value, path, ("pods", "pod", "cidr", "entity"))
    if len(obj) != 1:
        r.fail(path, "needs exactly one of pods, pod, cidr or entity")
    (key, val), = obj.items()
    where = path + (key,)
    if key == "pods":
        return Pods(_selector(r, val, where), r.text(val, where))
    if key == "pod":
        ref = r.text(val, where, "pod")
        if ref.count("/") != 1 or not all(ref.split("/")):
            r.fail(where, f"{ref!r} is not namespace/name")
        return NamedPod(ref, _location(r, where))
    if key == "cidr":
        net = unmapped(parse_cidr(r, val, where, bare_ip_ok=True))  # as query reads ::ffff:a.b.c.d
        return Addresses((net,), f"cidr:{net}")
    name = r.text(val, where, "entity")
    if name not in WORLD:
        r.fail(where, f"entity {name!r}: expected one of {', '.join(WORLD)} (pods are written as selectors)")
    return Addresses(WORLD[name], f"entity:{name}")


def parse_port(r: FieldReader, value, path: tuple) -> tuple[PortRange, ...]:
    """``443``, ``443/TCP``, ``8000-8100/UDP``, ``*/TCP``, ``8/ICMP`` (type), ``53/ANY`` (TCP, UDP and SCTP)."""
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    match = _PORT.match(text or "")
    if match is None:
        r.fail(path, f"invalid port {value!r}: expected PORT[-PORT][/PROTOCOL] such as 443/TCP, 8000-8100/UDP, "
                     "*/TCP or 8/ICMP")
    span, proto = match.groups()
    try:
        protocol = Protocol.parse(proto or "TCP")
    except KeyError:
        r.fail(path, f"unknown protocol {proto!r}: expected TCP, UDP, SCTP, ICMP, ICMPv6 or ANY")
    if span == "*":
        first, last = 0, 65535
    else:
        first, _, end = span.partition("-")
        first, last = int(first), int(end or first)
    if not 0 <= first <= last <= 65535:
        r.fail(path, f"invalid port range {span!r}: ports are 0-65535, first <= last")
    if protocol in (Protocol.ICMP, Protocol.ICMPV6) and last > 255 and span != "*":
        r.fail(path, f"invalid {protocol.label} type {span!r}: ICMP types are 0-255, as in a policy's icmps")
    protocols = _L4 if protocol is Protocol.ANY else (protocol,)
    return tuple(PortRange(p, first, last) for p in protocols)


def _ports(r: FieldReader, obj: dict, path: tuple, required: bool) -> tuple[PortRange, ...]:
    if required and "ports" not in obj:
        r.fail(path, "missing field 'ports'")
    items = r.sequence(obj, "ports", path)
    if required and not items:
        r.fail(path + ("ports",), "needs at least one port")
    return tuple(p for i, item in enumerate(items) for p in parse_port(r, item, path + ("ports", i)))


def _need(r: FieldReader, obj: dict, key: str, path: tuple):
    if key not in obj:
        r.fail(path, f"missing field {key!r}")
    return obj[key]


def _mapping(r: FieldReader, value, path: tuple, allowed: tuple[str, ...]) -> dict:
    """r.mapping, but a key that looks like a selector means YAML split an unquoted one at its commas."""
    split = tuple(k for k in value if isinstance(k, str) and "=" in k) if isinstance(value, dict) else ()
    for key in split:
        r.error(path + (key,), f"{key!r} looks like part of a selector: inside {{...}}, quote selectors that "
                               "contain commas (from: 'namespace=a,app=b')")
    return r.mapping(value, path, allowed + split)


def _flow(r: FieldReader, cls, name: str, loc: Location, body, path: tuple):
    obj = _mapping(r, body, path, ("from", "to", "ports"))
    src = parse_peer(r, _need(r, obj, "from", path), path + ("from",))
    dst = parse_peer(r, _need(r, obj, "to", path), path + ("to",))
    return cls(name, loc, src, dst, _ports(r, obj, path, required=False))


def _isolation(r: FieldReader, name: str, loc: Location, body, path: tuple) -> Isolation:
    obj = _mapping(r, body, path, ("between",))
    pair = _need(r, obj, "between", path)
    if not isinstance(pair, list) or len(pair) != 2:
        r.fail(path + ("between",), f"must be a list of two peers, not {kind_of(pair)}"
               + (f" of {len(pair)}" if isinstance(pair, list) else ""))
    a, b = (parse_peer(r, v, path + ("between", i)) for i, v in enumerate(pair))
    return Isolation(name, loc, a, b)


_DIRECTIONS = {"both": (Direction.INGRESS, Direction.EGRESS), "ingress": (Direction.INGRESS,),
               "egress": (Direction.EGRESS,)}


def _default_deny(r: FieldReader, name: str, loc: Location, body, path: tuple) -> DefaultDenyIn:
    obj = r.mapping(body, path, ("namespaces", "direction"))
    _need(r, obj, "namespaces", path)
    names = r.sequence(obj, "namespaces", path)
    if not names:
        r.fail(path + ("namespaces",), "needs at least one namespace")
    namespaces = tuple(r.text(n, path + ("namespaces", i), "namespace") for i, n in enumerate(names))
    direction = obj.get("direction", "both")
    if not isinstance(direction, str) or direction not in _DIRECTIONS:
        r.fail(path + ("direction",), f"direction {direction!r}: expected both, ingress or egress")
    return DefaultDenyIn(name, loc, namespaces, _DIRECTIONS[direction])


def _world_only(r: FieldReader, name: str, loc: Location, body, path: tuple) -> WorldOnly:
    obj = _mapping(r, body, path, ("to", "ports"))
    dst = parse_peer(r, obj["to"], path + ("to",)) if "to" in obj else Pods(Selector(), "*")
    if isinstance(dst, Addresses):
        r.fail(path + ("to",), "worldOnly protects pods: `to` must be a selector or a pod")
    return WorldOnly(name, loc, dst, _ports(r, obj, path, required=True))


def _count(r: FieldReader, obj: dict, key: str, path: tuple, least: int) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        r.fail(path + (key,), f"{key} must be a whole number, at least {least}, not {value!r}")
    return value


def _chain_limits(r: FieldReader, obj: dict, path: tuple) -> tuple:
    """maxHops, ports and trustNodes: how far, over which ports, and whether chains may cross nodes."""
    max_hops = _count(r, obj, "maxHops", path, 1) if "maxHops" in obj else None
    trust = r.boolean(obj["trustNodes"], path + ("trustNodes",)) if "trustNodes" in obj else False
    return max_hops, _ports(r, obj, path, required=False), trust


_CHAIN_KEYS = ("maxHops", "ports", "trustNodes")


def _no_path(r: FieldReader, name: str, loc: Location, body, path: tuple) -> NoPath:
    obj = _mapping(r, body, path, ("from", "to") + _CHAIN_KEYS)
    src = parse_peer(r, _need(r, obj, "from", path), path + ("from",))
    dst = parse_peer(r, _need(r, obj, "to", path), path + ("to",))
    return NoPath(name, loc, src, dst, *_chain_limits(r, obj, path))


def _max_blast_radius(r: FieldReader, name: str, loc: Location, body, path: tuple) -> MaxBlastRadius:
    obj = _mapping(r, body, path, ("from", "pods") + _CHAIN_KEYS)
    src = parse_peer(r, _need(r, obj, "from", path), path + ("from",))
    if isinstance(src, Addresses):
        r.fail(path + ("from",), "maxBlastRadius measures what a pod reaches: `from` must be a selector or a pod")
    _need(r, obj, "pods", path)
    return MaxBlastRadius(name, loc, src, _count(r, obj, "pods", path, 0), *_chain_limits(r, obj, path))


_PARSERS = {"mustAllow": lambda r, n, loc, body, path: _flow(r, MustAllow, n, loc, body, path),
            "mustDeny": lambda r, n, loc, body, path: _flow(r, MustDeny, n, loc, body, path),
            "isolation": _isolation, "defaultDeny": _default_deny, "worldOnly": _world_only,
            "noPath": _no_path, "maxBlastRadius": _max_blast_radius}


def parse_invariant(r: FieldReader, value, path: tuple, prefix: str = "") -> Invariant:
    """One invariant; an unnamed one is called ``kind[index]``, after its file (``prefix``) when a run
    reads several, so that names stay unique test-case names."""
    obj = r.mapping(value, path, ("name",) + KINDS)
    kinds = [k for k in KINDS if k in obj]
    if len(kinds) != 1:
        r.fail(path, f"needs exactly one of {', '.join(KINDS)}" + (f" (found {', '.join(kinds)})" if kinds else ""))
    kind = kinds[0]
    name = r.text(obj["name"], path + ("name",), "name") if "name" in obj else f"{prefix}{kind}[{path[-1]}]"
    return _PARSERS[kind](r, name, _location(r, path), obj[kind], path + (kind,))


def _document(r: FieldReader, prefix: str = "") -> list[Invariant]:
    top = r.mapping(r.doc.value, (), ("apiVersion", "kind", "invariants"))
    for key, want in (("apiVersion", API_VERSION), ("kind", KIND)):
        if key in top and top[key] != want:
            r.error((key,), f"{key} {top[key]!r}: expected {want!r}")
    if "invariants" not in top:
        r.fail((), "missing field 'invariants'")
    out = []
    for i, item in enumerate(r.sequence(top, "invariants", ())):
        try:
            out.append(parse_invariant(r, item, ("invariants", i), prefix))
        except Invalid:
            pass  # recorded; go on so that one run reports every bad invariant
    return out


def parse_spec(docs: list[Document], name: str = "") -> Spec:
    """Every invariant of every document; any error raises PolicycError with all of them."""
    invariants, diagnostics = [], []
    several = len({doc.file for doc in docs}) > 1
    for doc in docs:
        r = FieldReader(doc)
        try:
            invariants += _document(r, f"{doc.file}:" if several else "")
        except Invalid:
            pass
        diagnostics += r.diagnostics
    seen: dict[str, Location] = {}
    for inv in invariants:
        if inv.name in seen:
            loc = inv.location
            diagnostics.append(Diagnostic(Severity.ERROR, f"invariant name {inv.name!r} is used twice (first at "
                                                          f"{seen[inv.name]}); names identify JUnit test cases",
                                          loc.file, loc.line, loc.column, loc.field + ".name"))
        seen.setdefault(inv.name, inv.location)
    if diagnostics:
        raise PolicycError(*diagnostics)
    if not invariants:
        raise PolicycError(Diagnostic(Severity.ERROR, "the spec has no invariants", name))
    return Spec(tuple(invariants))


def load_spec(paths: str | list[str]) -> Spec:
    """One spec file, or several read as one (``verify --spec a --spec b``: every invariant of each)."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    return parse_spec(load_documents(paths), ", ".join(paths))


def namespace_pods(namespace: str) -> Selector:
    """The pods of one namespace, as a subject selector."""
    return Selector((Requirement("k8s", NAMESPACE_KEY, Op.IN, (namespace,)),))
