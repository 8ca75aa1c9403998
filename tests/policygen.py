"""Hypothesis strategies for policy YAML (CNP, CCNP, KNP), pairs of policy sets, inventories and probes.

Policies are generated as the documents users write, so the frontend's meaning (which rules imply
default-deny, R3.2/R12.7) is part of what the properties check: deleting a rule means deleting it
from the YAML and parsing again.  Small label and port universes make rules and endpoints meet often.
"""
from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass

import yaml
from hypothesis import strategies as st

from policyc.compiler.evaluate import Flow, Request, possible
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.inventory import Inventory, external, node_labels, pod_labels
from policyc.compiler.ir import (Endpoint, EndpointKind, Identity, NamedPort, PolicySet, Protocol)
from policyc.compiler.source import parse_text

NAMESPACES = ("x", "y")
APPS = ("a", "b", "c")
NODES = ("n1", "n2")
ENTITIES = ("world", "host", "cluster", "all", "remote-node", "world-ipv6")
CIDRS = (("192.0.2.0/24", ("192.0.2.0/28",)), ("0.0.0.0/0", ("10.0.0.0/8",)), ("0.0.0.0/1", ()),
         ("128.0.0.0/1", ()), ("198.51.100.0/24", ()), ("2001:db8::/32", ("2001:db8::/64",)), ("::/0", ()))
NAMES = ("api.example.com", "x.example.org", "v6.example.com")
FQDNS = ({"matchName": "api.example.com"}, {"matchPattern": "*.example.com"}, {"matchPattern": "*"},
         {"matchPattern": "**.example.org"}, {"matchName": "x.example.org"})
PATHS = ("/public/.*", "/admin", "/public/[a-z-]+", ".*")
METHODS = ("GET", "POST", "GET|HEAD")
EXTERNALS = (("192.0.2.10", "api.example.com"), ("198.51.100.7", "x.example.org"), ("8.8.8.8", None),
             ("2001:db8::1", "v6.example.com"), ("2001:db8:1::5", None))


# ---------------------------------------------------------------- rules

def _labels(draw) -> dict:
    return {"app": draw(st.sampled_from(APPS))} if draw(st.booleans()) else {}


@st.composite
def _peer(draw, direction: str, allow: bool):
    kinds = ["endpoints", "entities", "cidr", "cidrset", "none"]
    if direction == "egress" and allow:
        kinds.append("fqdn")
    kind = draw(st.sampled_from(kinds))
    side = "from" if direction == "ingress" else "to"
    if kind == "endpoints":
        sel = {"matchLabels": _labels(draw)}
        if draw(st.integers(0, 3)) == 0:
            sel["matchLabels"]["k8s:io.kubernetes.pod.namespace"] = draw(st.sampled_from(NAMESPACES))
        return {f"{side}Endpoints": [sel]}
    if kind == "entities":
        return {f"{side}Entities": draw(st.lists(st.sampled_from(ENTITIES), min_size=1, max_size=2, unique=True))}
    if kind in ("cidr", "cidrset"):
        picks = draw(st.lists(st.sampled_from(CIDRS), min_size=1, max_size=2, unique=True))
        if kind == "cidr":
            return {f"{side}CIDR": [net for net, _ in picks]}
        return {f"{side}CIDRSet": [{"cidr": net, **({"except": list(ex)} if ex and draw(st.booleans()) else {})}
                                   for net, ex in picks]}
    if kind == "fqdn":
        return {"toFQDNs": draw(st.lists(st.sampled_from(FQDNS), min_size=1, max_size=2, unique_by=str))}
    return {}


@st.composite
def _l7(draw, direction: str, protocol: str, port: str):
    if protocol == "UDP" and port == "53" and direction == "egress":
        return {"dns": draw(st.lists(st.sampled_from(FQDNS), min_size=1, max_size=2, unique_by=str))}
    if protocol == "TCP":
        entries = draw(st.lists(st.builds(lambda m, p, h: {k: v for k, v in (("method", m), ("path", p),
                                                                             ("headerMatches", h)) if v},
                                          st.sampled_from(METHODS + (None,)), st.sampled_from(PATHS + (None,)),
                                          st.sampled_from((None, None, None, [HEADER_MATCH]))),
                                min_size=1, max_size=2))
        return {"http": entries}
    return None


@st.composite
def _ports(draw, direction: str, allow: bool, fqdn: bool):
    """toPorts or icmps of one rule, or nothing (an L3-only rule)."""
    choice = draw(st.integers(0, 5))
    if choice == 0 and not fqdn:
        return {}
    if choice == 1:
        family = draw(st.sampled_from(("IPv4", "IPv6")))
        return {"icmps": [{"fields": [{"type": draw(st.sampled_from((0, 8, 128) if family == "IPv6" else (0, 8))),
                                       "family": family}]}]}
    protocol = draw(st.sampled_from(("TCP", "UDP", "ANY")))
    port = draw(st.sampled_from(("53", "80", "8080", "http", "0")))
    entry: dict = {"port": port, "protocol": protocol}
    if port == "http":
        entry["protocol"] = "TCP"
    elif port != "0" and draw(st.booleans()):
        entry["endPort"] = int(port) + draw(st.sampled_from((1, 1000)))
    rule: dict = {"ports": [entry]}
    if allow and draw(st.integers(0, 2)) == 0 and entry["protocol"] != "ANY" and "endPort" not in entry \
            and port != "0":
        l7 = draw(_l7(direction, entry["protocol"], port))
        if l7:
            rule["rules"] = l7
    elif allow and entry["protocol"] == "TCP" and draw(st.integers(0, 5)) == 0:
        rule["serverNames"] = ["api.example.com"]  # opaque to policyc: no request proves the SNI
    return {"toPorts": [rule]}


@st.composite
def cilium_rule(draw, direction: str, allow: bool):
    peer = draw(_peer(direction, allow))
    body = {**peer, **draw(_ports(direction, allow, "toFQDNs" in peer))}
    if not peer and not body:  # an empty rule: allows nothing, implies default-deny (R5.1)
        return {}
    if allow and draw(st.integers(0, 5)) == 0 and "toFQDNs" not in peer:
        body["authentication"] = {"mode": draw(st.sampled_from(("required", "required", "test-always-fail")))}
    return body


SECTIONS = (("ingress", "ingress", True), ("ingressDeny", "ingress", False),
            ("egress", "egress", True), ("egressDeny", "egress", False))


@st.composite
def cilium_spec(draw, max_denies: int = 1):
    spec: dict = {"endpointSelector": {"matchLabels": _labels(draw)}}
    for section, direction, allow in SECTIONS:
        n = draw(st.integers(0, 2 if allow else max_denies))
        if n:
            spec[section] = [draw(cilium_rule(direction, allow)) for _ in range(n)]
    if not any(s in spec for s, _, _ in SECTIONS):
        spec["ingress"] = [draw(cilium_rule("ingress", True))]
    flags = {d: draw(st.booleans()) for d in ("ingress", "egress") if draw(st.integers(0, 3)) == 0}
    if flags:
        spec["enableDefaultDeny"] = flags
    return spec


@st.composite
def knp_spec(draw):
    spec: dict = {"podSelector": {"matchLabels": _labels(draw)}}
    types = draw(st.sampled_from(([], ["Ingress"], ["Egress"], ["Ingress", "Egress"])))
    if types:
        spec["policyTypes"] = types
    for section, key in (("ingress", "from"), ("egress", "to")):
        items = []
        for _ in range(draw(st.integers(0, 2))):
            item: dict = {}
            choice = draw(st.integers(0, 3))
            if choice == 1:
                item[key] = [{"podSelector": {"matchLabels": _labels(draw)}}]
            elif choice == 2:
                item[key] = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name":
                                                                    draw(st.sampled_from(NAMESPACES))}},
                              "podSelector": {"matchLabels": _labels(draw)}}]
            elif choice == 3:
                net, ex = draw(st.sampled_from(CIDRS))
                item[key] = [{"ipBlock": {"cidr": net, **({"except": list(ex)} if ex else {})}}]
            if draw(st.booleans()):
                port = draw(st.sampled_from((80, 53, "http")))
                item["ports"] = [{"port": port, "protocol": "UDP" if port == 53 else "TCP",
                                  **({"endPort": 8080} if port == 80 and draw(st.booleans()) else {})}]
            items.append(item)
        if items:
            spec[section] = items
    return spec


@st.composite
def policy_doc(draw, i: int, max_denies: int = 1):
    kind = draw(st.sampled_from(("CiliumNetworkPolicy",) * 3 + ("CiliumClusterwideNetworkPolicy", "NetworkPolicy")))
    meta = {"name": f"p{i}"}
    if kind != "CiliumClusterwideNetworkPolicy":
        meta["namespace"] = draw(st.sampled_from(NAMESPACES))
    if kind == "NetworkPolicy":
        return {"apiVersion": "networking.k8s.io/v1", "kind": kind, "metadata": meta, "spec": draw(knp_spec())}
    return {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": meta, "spec": draw(cilium_spec(max_denies))}


@st.composite
def policy_docs(draw, max_docs: int = 3, max_denies: int = 1):
    """Up to ``max_docs`` documents; a Cilium section of deny rules holds up to ``max_denies`` of them
    (two deny rules of one section imply its default-deny together: what joint deletions must keep)."""
    return [draw(policy_doc(i, max_denies)) for i in range(draw(st.integers(1, max_docs)))]


# ---------------------------------------------------------------- pairs

def _rules_of(doc: dict):
    """(section list, index) of every rule item of a document."""
    for section in ("ingress", "ingressDeny", "egress", "egressDeny"):
        items = doc["spec"].get(section) or []
        for i in range(len(items)):
            yield items, i


@st.composite
def changed(draw, docs: list):
    """``docs`` after a few edits of the kinds a pull request makes, widening and narrowing."""
    new = copy.deepcopy(docs)
    for _ in range(draw(st.integers(1, 3))):
        doc = draw(st.sampled_from(new))
        spec = doc["spec"]
        rules = list(_rules_of(doc))
        op = draw(st.sampled_from(("add", "delete", "replace", "widen", "flag", "doc")))
        if op == "doc":
            new.append(draw(policy_doc(len(new) + 10)))
        elif op == "flag" and doc["kind"] != "NetworkPolicy":
            direction = draw(st.sampled_from(("ingress", "egress")))
            spec.setdefault("enableDefaultDeny", {})[direction] = draw(st.booleans())
        elif op == "add" or not rules:
            if doc["kind"] == "NetworkPolicy":
                spec.setdefault("ingress", []).append({})
            else:
                section, direction, allow = draw(st.sampled_from(SECTIONS))
                spec.setdefault(section, []).append(draw(cilium_rule(direction, allow)))
        else:
            items, i = draw(st.sampled_from(rules))
            if op == "delete":
                del items[i]
            elif op == "replace" and doc["kind"] != "NetworkPolicy":
                section = next(s for s, d, a in SECTIONS if doc["spec"].get(s) is items)
                _, direction, allow = next(x for x in SECTIONS if x[0] == section)
                items[i] = draw(cilium_rule(direction, allow))
            else:
                items[i] = _widen(draw, items[i])
        for section in ("ingress", "ingressDeny", "egress", "egressDeny"):
            if section in spec and not spec[section]:
                del spec[section]
        if doc["kind"] != "NetworkPolicy" and not any(s in spec for s, _, _ in SECTIONS):
            spec["ingress"] = [{}]
    return new


HEADER_MATCH = {"name": "X-Token", "value": "s3cret"}  # opaque to policyc: a request never proves it


def _widen(draw, rule: dict) -> dict:
    """One edit that lets more through: ports, L7, authentication, a name pattern or an except go."""
    rule = copy.deepcopy(rule)
    options = []
    for key in ("toPorts", "ports", "icmps", "authentication"):
        if key in rule:
            options.append(lambda k=key: rule.pop(k))
    for tp in rule.get("toPorts", []):
        if "rules" in tp:
            options.append(lambda tp=tp: tp.pop("rules"))
            if "http" in tp["rules"]:
                options.append(lambda tp=tp: tp["rules"].update(http=[{}]))
                options.append(lambda tp=tp: [h.pop("headerMatches", None) for h in tp["rules"]["http"]])
        if "serverNames" in tp:
            options.append(lambda tp=tp: tp.pop("serverNames"))
    if "toFQDNs" in rule:
        options.append(lambda: rule.update(toFQDNs=[{"matchPattern": "*"}]))
    for key in ("fromCIDRSet", "toCIDRSet"):
        for entry in rule.get(key, []):
            if "except" in entry:
                options.append(lambda e=entry: e.pop("except"))
    if options:
        draw(st.sampled_from(options))()
    return rule


# ---------------------------------------------------------------- parsing

def parse(docs: list) -> PolicySet:
    """The policy set of the documents, each in its own file ``gen<i>.yaml`` so rules find their document."""
    parsed = [d for i, doc in enumerate(docs) for d in parse_text(yaml.safe_dump(doc, sort_keys=False), f"gen{i}.yaml")]
    result = build_policy_set(parsed)
    errors = [d for d in result.diagnostics if d.severity.value == "error"]
    assert not errors, (errors, docs)
    return result.policy


def without_rule(docs: list, origin) -> list:
    """The documents with the rule at ``origin`` deleted from its YAML (``without``)."""
    return without(docs, rules=[origin])


def without_l7_entry(docs: list, origin, kind: str, index: int, entries) -> list:
    """The documents with one HTTP entry or DNS pattern deleted from the L7 list it sits in."""
    return without(docs, entries=[(origin, kind, index, entries)])


def _path(origin) -> list:
    return [int(p) if p.isdigit() else p for p in origin.path.replace("]", "").replace("[", ".").split(".")]


def without(docs: list, rules=(), entries=(), policies=()) -> list:
    """The documents with all of these deleted at once, as a user acting on every finding would: the rules
    at the origins ``rules``, the L7 entries ``entries`` ((origin, kind, index, the parsed list)), and the
    documents named ``policies`` (``metadata.name``).  An emptied section goes too, and a Cilium policy
    left without any section goes as a whole (Cilium rejects it, R1.5).  Each place is found in the
    documents as given, then the items go from the highest index down, so none moves another."""
    new = copy.deepcopy(docs)
    marks: dict = {}  # (id of the list, index) -> (list, index, the owner of a section list and its name)
    for origin in rules:
        *parts, section, index = _path(origin)
        owner = new[int(origin.file[3:-5])]
        for part in parts:
            owner = owner[part]
        marks[id(owner[section]), index] = (owner[section], index, (owner, section))
    for origin, kind, index, parsed in entries:
        rule = new[int(origin.file[3:-5])]
        for part in _path(origin):
            rule = rule[part]
        for tp in rule.get("toPorts", []):
            listed = (tp.get("rules") or {}).get(kind)
            if listed is not None and _same_entries(listed, parsed, kind):
                marks[id(listed), index] = (listed, index, None)
    for listed, index, _ in sorted(marks.values(), key=lambda m: -m[1]):
        del listed[index]
    for owner, section in [m[2] for m in marks.values() if m[2]]:
        if section in owner and not owner[section]:
            del owner[section]
    return [d for d in new if d["metadata"]["name"] not in policies
            and (d["kind"] == "NetworkPolicy" or any(s in d["spec"] for s, _, _ in SECTIONS))]


def _same_entries(listed: list, entries, kind: str) -> bool:
    if len(listed) != len(entries):
        return False
    if kind == "dns":
        return all((d.get("matchName"), d.get("matchPattern")) == (e.match_name, e.match_pattern)
                   for d, e in zip(listed, entries))
    return all((d.get("method"), d.get("path")) == (e.method, e.path) for d, e in zip(listed, entries))


# ---------------------------------------------------------------- inventory and probes

@st.composite
def inventories(draw) -> Inventory:
    eps = []
    for k, ns in enumerate(NAMESPACES):
        ns_labels = {"kubernetes.io/metadata.name": ns}
        for j in range(draw(st.integers(1, 2))):
            lbls = {"app": draw(st.sampled_from(APPS))} if draw(st.integers(0, 4)) else {}
            family = draw(st.sampled_from(("4", "4", "46", "6")))
            ips = tuple(ipaddress.ip_address(a) for a, f in ((f"10.244.{k}.{j + 1}", "4"),
                                                               (f"fd00:{k}::{j + 1}", "6")) if f in family)
            ports = (NamedPort("http", draw(st.sampled_from((80, 8080))), Protocol.TCP),) if draw(st.booleans()) else ()
            labels = pod_labels(lbls, ns, ns_labels, "default", "default")
            eps.append(Endpoint(EndpointKind.POD, f"p{j}", ns, ips, Identity(300 + len(eps), labels), ports,
                                draw(st.sampled_from(NODES))))
    for k, name in enumerate(NODES):
        eps.append(Endpoint(EndpointKind.NODE, name, "", (ipaddress.ip_address(f"172.18.0.{k + 2}"),),
                            Identity(6, node_labels({"app": draw(st.sampled_from(APPS))}))))
    return Inventory(tuple(eps), {ns: {"kubernetes.io/metadata.name": ns} for ns in NAMESPACES})


def externals() -> tuple[Endpoint, ...]:
    """Addresses outside the cluster, some with the DNS name they were learned under."""
    out = []
    for addr, name in EXTERNALS:
        ep = external(ipaddress.ip_address(addr))
        out.append(Endpoint(ep.kind, ep.name, "", ep.ips, ep.identity, dns_names=(name,) if name else ()))
    return tuple(out)


@dataclass(frozen=True)
class Probe:
    protocol: Protocol
    port: int
    requests: tuple = (None,)


PROBES = (Probe(Protocol.TCP, 80, (None, Request("GET", "/public/a"), Request("POST", "/admin"))),
          Probe(Protocol.TCP, 8080, (None, Request("GET", "/public/a-b"))),
          Probe(Protocol.TCP, 443), Probe(Protocol.TCP, 1000),
          Probe(Protocol.UDP, 53, (None, Request(dns="api.example.com"), Request(dns="z.other.net"))),
          Probe(Protocol.UDP, 80), Probe(Protocol.SCTP, 8080),
          Probe(Protocol.ICMP, 8), Probe(Protocol.ICMPV6, 128), Probe(Protocol.OTHER, 0))


def flows(inventory: Inventory, *policies: PolicySet):
    """Every probe between every two endpoints (pods, nodes, named and unnamed addresses), with requests
    and failed handshakes where some rule of ``policies`` could tell them apart: the judge's universe.
    ICMP only where its IP version can carry it."""
    rules = [r for p in policies for r in p.rules]
    l7 = any(pm.filtered for r in rules for pm in r.ports)
    handshakes = (True, False) if any(r.auth for r in rules) else (True,)
    peers = inventory.endpoints + externals()
    for src in peers:
        for dst in peers:
            if src == dst or (src.kind is EndpointKind.EXTERNAL and dst.kind is EndpointKind.EXTERNAL):
                continue
            for probe in PROBES:
                for request in probe.requests if l7 else (None,):
                    for authenticated in handshakes:
                        flow = Flow(src, dst, probe.protocol, probe.port, request, authenticated)
                        if possible(flow):
                            yield flow
