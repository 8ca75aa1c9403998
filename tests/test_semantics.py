"""One test (or a few) per rule of docs/semantics.md.

Every test names its rule (R1.1, R2.12, ...) and holds the evaluator's verdicts
(policyc.compiler.evaluate) or the frontend's diagnostics to what the reference
says Cilium does.  Rules that depend on agent options policyc does not model, or
that are reported as unsupported, assert the diagnostic instead.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import textwrap

import pytest

from policyc.compiler.diagnostics import Severity
from policyc.compiler.entities import ENTITY_NAMES, RESERVED_IDS
from policyc.compiler.evaluate import Evaluator, Flow, Reason
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.inventory import build_inventory
from policyc.compiler.ir import Action, Protocol
from policyc.compiler.source import parse_text

INVENTORY = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: x, labels: {ns: x, team: red}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: y, labels: {ns: y}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: a, namespace: x, labels: {app: a}}
  spec:
    nodeName: n1
    containers:
    - name: c
      ports: [{name: HTTP, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]
  status: {podIP: 10.0.0.1}
- apiVersion: v1
  kind: Pod
  metadata: {name: b, namespace: x, labels: {app: b}}
  spec: {nodeName: n1, serviceAccountName: sb}
  status: {podIP: 10.0.0.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: c, namespace: y, labels: {app: c}}
  spec: {nodeName: n2}
  status: {podIPs: [{ip: 10.0.1.3}, {ip: "fd00::3"}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: d, namespace: y, labels: {app: a}}
  spec: {nodeName: n2}
  status: {podIP: 10.0.1.4}
- apiVersion: v1
  kind: Node
  metadata: {name: n1, labels: {role: worker}}
  status: {addresses: [{type: InternalIP, address: 192.168.0.1}]}
- apiVersion: v1
  kind: Node
  metadata: {name: n2, labels: {role: control}}
  status: {addresses: [{type: InternalIP, address: 192.168.0.2}]}
"""
INV = build_inventory(parse_text(INVENTORY, "inventory.yaml"))
WORLD4, WORLD6 = "8.8.8.8", "2001:db8::1"


def _body(spec: str) -> str:
    return textwrap.indent(textwrap.dedent(spec).rstrip("\n") + "\n", "  ")


def cnp(spec: str, ns: str = "x", name: str = "p") -> str:
    return (f"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n{_body(spec)}")


def ccnp(spec: str, name: str = "c") -> str:
    return f"apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n{_body(spec)}"


def knp(spec: str, ns: str = "x", name: str = "k") -> str:
    return (f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec:\n{_body(spec)}")


def load(*docs: str):
    return build_policy_set(parse_text("---\n".join(docs), "policy.yaml"))


def messages(*docs: str, severity: Severity = Severity.ERROR) -> list[str]:
    return [f"{d.field}: {d.message}" for d in load(*docs).diagnostics if d.severity is severity]


def warnings(*docs: str) -> list[str]:
    return messages(*docs, severity=Severity.WARNING)


def evaluator(*docs: str) -> Evaluator:
    result = load(*docs)
    assert not [d for d in result.diagnostics if d.severity is Severity.ERROR], result.diagnostics
    return Evaluator(result.policy)


def verdict(docs, src: str, dst: str, port: int = 80, proto: str = "TCP"):
    ev = docs if isinstance(docs, Evaluator) else evaluator(*([docs] if isinstance(docs, str) else docs))
    return ev.evaluate(Flow(INV.find(src), INV.find(dst), Protocol.parse(proto), port))


def allowed(docs, src: str, dst: str, port: int = 80, proto: str = "TCP") -> bool:
    return verdict(docs, src, dst, port, proto).allowed


def allowed_v6(ev: Evaluator, src: str, dst: str, icmp_type: int) -> bool:
    """An ICMPv6 verdict between two pods given an IPv6 address each: IPv4-only pods send none at all."""
    def dual(name: str, n: int):
        ep = INV.find(name)
        return dataclasses.replace(ep, ips=ep.ips + (ipaddress.ip_address(f"fd00::1:{n}"),))
    return ev.evaluate(Flow(dual(src, 1), dual(dst, 2), Protocol.ICMPV6, icmp_type)).allowed


def table(docs, pairs, port: int = 80, proto: str = "TCP") -> dict:
    ev = evaluator(*([docs] if isinstance(docs, str) else docs))
    return {(s, d): allowed(ev, s, d, port, proto) for s, d in pairs}


def assert_error(docs, fragment: str) -> None:
    errs = messages(*([docs] if isinstance(docs, str) else docs))
    assert any(fragment in e for e in errs), errs


# ---------------------------------------------------------------- 1. schema

def test_r1_1_spec_and_specs_are_all_rules():
    """R1.1: `spec` and `specs` both contribute rules; both absent is an error."""
    doc = cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{matchLabels: {app: b}}]}]")
    doc += "specs:\n- endpointSelector: {matchLabels: {app: b}}\n  ingress: [{}]\n"
    assert len(load(doc).policy.rules) == 2
    assert_error("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\n",
                 "policy has neither spec nor specs (R1.1)")


def test_r1_1_one_invalid_rule_drops_the_whole_object():
    """R1.1: one invalid rule makes the whole object fail to import: no rule of it is enforced."""
    doc = ("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\nspecs:\n"
           "- endpointSelector: {}\n  ingress: [{}]\n"
           "- endpointSelector: {}\n  egress: [{toEntities: [wrld]}]\n")
    result = load(doc)
    assert any("unknown entity 'wrld'" in d.message for d in result.diagnostics)
    assert result.policy.rules == () and result.policy.policies == ()


def test_r1_1b_node_selector_only_in_ccnp():
    """R1.1b: a namespaced CNP with nodeSelector is rejected."""
    assert_error(cnp("nodeSelector: {}\ningress: [{}]"), "nodeSelector is only allowed in a "
                                                        "CiliumClusterwideNetworkPolicy (R1.1b)")
    assert messages(ccnp("nodeSelector: {}\ningress: [{}]")) == []


def test_r1_1c_authentication_mode_enum():
    """R1.1c: authentication.mode is one of disabled, required, test-always-fail."""
    assert_error(cnp("endpointSelector: {}\ningress: [{fromEntities: [all], authentication: {mode: strict}}]"),
                 "authentication mode 'strict' is not one of disabled, required, test-always-fail")


def test_r1_2_ccnp_namespace_is_ignored():
    """R1.2: a CCNP has no namespace: a metadata.namespace is ignored (warned) and scoping is clusterwide."""
    doc = ccnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{}]}]").replace(
        "metadata: {name: c}", "metadata: {name: c, namespace: x}")
    assert any("a clusterwide policy has no namespace: ignored (R1.2)" in w for w in warnings(doc))
    assert allowed(doc, "y/c", "x/a") and allowed(doc, "x/b", "y/d")


def test_r1_3_rule_labels_are_bookkeeping_only():
    """R1.3: rule `labels` (and `description`, `log`) never affect matching."""
    plain = cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{matchLabels: {app: b}}]}]")
    labelled = plain + "  labels: [{key: team, value: red}]\n  description: d\n  log: {value: x}\n"
    pairs = [("x/b", "x/a"), ("y/c", "x/a"), (WORLD4, "x/a")]
    assert table(labelled, pairs) == table(plain, pairs) == {pairs[0]: True, pairs[1]: False, pairs[2]: False}


def test_r1_4_exactly_one_subject_selector():
    """R1.4: both or neither of endpointSelector/nodeSelector is rejected."""
    assert_error(ccnp("endpointSelector: {}\nnodeSelector: {}\ningress: [{}]"), "found both")
    assert_error(ccnp("ingress: [{}]"), "found neither")


def test_r1_5_rule_without_sections_is_rejected():
    """R1.5: no ingress/ingressDeny/egress/egressDeny: current Cilium's Rule.Validate (and the CRD schema)
    reject the rule, so policyc does; `ingress: [{}]` is one (empty) rule and is fine."""
    assert_error(cnp("endpointSelector: {}"), "a rule needs at least one of ingress, ingressDeny, egress")
    assert_error(ccnp("endpointSelector: {}\negress: []"), "a rule needs at least one of ingress")
    assert not warnings(cnp("endpointSelector: {}\ningress: [{}]"))


@pytest.mark.parametrize("expr,fragment", [
    ("{key: app, operator: In}", "operator In needs at least one value"),
    ("{key: app, operator: NotIn, values: []}", "operator NotIn needs at least one value"),
    ("{key: app, operator: Exists, values: [a]}", "operator Exists takes no values"),
    ("{key: app, operator: DoesNotExist, values: [a]}", "operator DoesNotExist takes no values"),
    ("{key: app, operator: in, values: [a]}", "did you mean 'In'? (operators are case-sensitive)"),
    ("{key: app, operator: notin, values: [a]}", "did you mean 'NotIn'?"),
])
def test_r1_6_selector_validation(expr, fragment):
    """R1.6: k8s label selector rules. Operators are case-sensitive: LabelSelectorAsSelector switches on the
    exact constants In/NotIn/Exists/DoesNotExist and the CRD enum lists them so."""
    assert_error(cnp(f"endpointSelector: {{matchExpressions: [{expr}]}}\ningress: [{{}}]"), fragment)


@pytest.mark.parametrize("a,b", [("fromEndpoints: [{}]", "fromCIDR: [10.0.0.0/8]"),
                                 ("fromCIDR: [10.0.0.0/8]", "fromCIDRSet: [{cidr: 10.0.0.0/8}]"),
                                 ("fromEntities: [world]", "fromNodes: [{}]")])
def test_r1_7_one_peer_kind_per_ingress_rule(a, b):
    """R1.7: at most one L3 peer kind per rule; fromCIDR and fromCIDRSet count as different kinds."""
    assert_error(cnp(f"endpointSelector: {{}}\ningress:\n- {a}\n  {b}"), "in one rule is not supported by Cilium")


def test_r1_8_icmps_with_to_ports():
    """R1.8: icmps and toPorts in one rule are rejected."""
    assert_error(cnp("endpointSelector: {}\negress: [{toPorts: [{ports: [{port: '80'}]}], "
                     "icmps: [{fields: [{type: 8}]}]}]"), "icmps and toPorts cannot be combined in one rule (R1.8)")


def test_r1_11_unknown_entity():
    """R1.11: an unknown entity name is rejected."""
    assert_error(cnp("endpointSelector: {}\ningress: [{fromEntities: [galaxy]}]"), "unknown entity 'galaxy'")


def test_r1_12_ingress_l7():
    """R1.12: HTTP on ingress is fine; DNS on ingress and any L7 on a host ingress rule are rejected."""
    http = "toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{method: GET}]}}]"
    dns = "toPorts: [{ports: [{port: '53', protocol: UDP}], rules: {dns: [{matchName: a.com}]}}]"
    assert messages(cnp(f"endpointSelector: {{}}\ningress: [{{{http}}}]")) == []
    assert_error(cnp(f"endpointSelector: {{}}\ningress: [{{{dns}}}]"), "DNS rules are only allowed on egress (R1.12)")
    assert_error(ccnp(f"nodeSelector: {{}}\ningress: [{{{http}}}]"), "host policies (nodeSelector) support no L7")


def test_r1_13_one_peer_kind_per_egress_rule():
    """R1.13: toFQDNs counts as a peer kind too."""
    assert_error(cnp("endpointSelector: {}\negress: [{toFQDNs: [{matchName: a.com}], toEndpoints: [{}]}]"),
                 "combining toEndpoints and toFQDNs in one rule is not supported")


def test_r1_14_every_peer_kind_combines_with_to_ports():
    """R1.14: any L3 kind may carry toPorts."""
    for peer in ("toEndpoints: [{}]", "toCIDR: [8.8.8.0/24]", "toCIDRSet: [{cidr: 8.8.8.0/24}]",
                 "toEntities: [world]", "toNodes: [{}]", "toFQDNs: [{matchName: a.com}]"):
        assert messages(cnp(f"endpointSelector: {{}}\negress: [{{{peer}, toPorts: [{{ports: [{{port: '80'}}]}}]}}]")) \
            == [], peer


def test_r1_15_host_egress_l7():
    """R1.15 / R9.8: on host policies egress DNS is allowed, HTTP is not."""
    dns = "toPorts: [{ports: [{port: '53', protocol: UDP}], rules: {dns: [{matchPattern: '*'}]}}]"
    http = "toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{}]}}]"
    assert messages(ccnp(f"nodeSelector: {{}}\negress: [{{{dns}}}]")) == []
    assert_error(ccnp(f"nodeSelector: {{}}\negress: [{{{http}}}]"), "host policies (nodeSelector) support no L7")


def test_r1_16_port_required():
    """R1.16: an empty port is rejected."""
    assert_error(cnp("endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: ''}]}]}]"), "port is required (R1.16)")


def test_r1_17_named_ports_and_numbers():
    """R1.17: IANA names are named ports, lower-cased; '0x10' has a letter so it is a name, not 16; numeric
    strings go through Go's ParseUint(s, 0, 16), so a leading 0 is octal."""
    result = load(cnp("endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: HTTP}, {port: '0x10'}, "
                      "{port: '010', protocol: TCP}]}]}]"))
    ports = {(pm.name, pm.first, pm.protocol) for rule in result.policy.rules for pm in rule.ports}
    assert ("http", 0, Protocol.TCP) in ports and ("0x10", 0, Protocol.UDP) in ports
    assert (None, 8, Protocol.TCP) in ports
    assert any("port '010' is octal to Cilium: port 8, not 10" in d.message for d in result.diagnostics)
    assert_error(cnp("endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: '--x'}]}]}]"),
                 "neither a number 0-65535 nor a valid port name")


def test_r1_18_protocols():
    """R1.18/R1.1c: TCP/UDP/SCTP/ANY upper case, as the CRD's enum: the API server rejects `udp`, so
    policyc does too (Cilium's Go code alone would have upper-cased it); anything else is rejected."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\n"
                       "ingress: [{toPorts: [{ports: [{port: '80', protocol: UDP}]}]}]"))
    assert allowed(ev, "x/b", "x/a", 80, "UDP") and not allowed(ev, "x/b", "x/a", 80, "TCP")
    assert_error(cnp("endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: '80', protocol: udp}]}]}]"),
                 "unknown protocol 'udp': expected one of TCP, UDP, SCTP, ANY; write 'UDP': the CRD's enum is "
                 "upper case and the API server rejects 'udp'")
    assert_error(cnp("endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: '80', protocol: ICMP}]}]}]"),
                 "unknown protocol 'ICMP'")


def test_r1_19_http_needs_tcp_dns_does_not():
    """R1.19: HTTP rules need every port to be TCP; DNS rules may use UDP or ANY."""
    assert_error(cnp("endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: '80', protocol: TCP}, "
                     "{port: '81', protocol: UDP}], rules: {http: [{}]}}]}]"), "(R1.19)")
    assert_error(cnp("endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: '80'}], rules: {http: [{}]}}]}]"),
                 "(R1.19)")
    assert messages(cnp("endpointSelector: {}\negress: [{toPorts: [{ports: [{port: '53', protocol: ANY}], "
                        "rules: {dns: [{matchPattern: '*'}]}}]}]")) == []


def test_r1_20_l7_with_port_zero():
    """R1.20: L7 rules with port 0 are rejected (a named port is not port 0)."""
    assert_error(cnp("endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: '0', protocol: TCP}], "
                     "rules: {http: [{}]}}]}]"), "L7 rules cannot be combined with port 0 (R1.20)")
    assert messages(cnp("endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: http, protocol: TCP}], "
                        "rules: {http: [{}]}}]}]")) == []


def test_r1_21_dns_rules_need_ports_and_no_range():
    """R1.21: DNS rules need a non-empty ports list and reject a range."""
    assert_error(cnp("endpointSelector: {}\negress: [{toPorts: [{ports: [{port: '53', endPort: 54, protocol: UDP}], "
                     "rules: {dns: [{matchPattern: '*'}]}}]}]"), "DNS rules cannot use a port range (R1.21)")
    assert_error(cnp("endpointSelector: {}\negress: [{toPorts: [{rules: {dns: [{matchPattern: '*'}]}}]}]"),
                 "DNS rules need a port in the same port rule (R1.21)")


def test_r1_22_one_l7_family():
    """R1.22: one L7 family per port rule; `l7` needs `l7proto`."""
    assert_error(cnp("endpointSelector: {}\negress: [{toPorts: [{ports: [{port: '80', protocol: TCP}], "
                     "rules: {http: [{}], dns: [{matchName: a.com}]}}]}]"), "only one L7 family per port rule")
    assert_error(cnp("endpointSelector: {}\negress: [{toPorts: [{ports: [{port: '80', protocol: TCP}], "
                     "rules: {l7: [{k: v}]}}]}]"), "'l7' needs 'l7proto' (R1.22)")


def test_r1_23_server_names():
    """R1.23: serverNames with L7 rules need terminatingTLS; an empty server name is rejected."""
    assert_error(cnp("endpointSelector: {}\negress: [{toPorts: [{ports: [{port: '443', protocol: TCP}], "
                     "serverNames: [a.com], rules: {http: [{}]}}]}]"), "serverNames with L7 rules need terminatingTLS (R1.23)")
    assert_error(cnp("endpointSelector: {}\negress: [{toPorts: [{ports: [{port: '443', protocol: TCP}], "
                     "serverNames: ['']}]}]"), "an empty server name is not allowed (R1.23)")


def test_r1_24_cidr_accepts_bare_address():
    """R1.24: fromCIDR/toCIDR take a prefix or a bare address (a host prefix)."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toCIDR: [8.8.8.8, '2001:db8::/64']}]"))
    assert allowed(ev, "x/a", WORLD4) and allowed(ev, "x/a", WORLD6) and not allowed(ev, "x/a", "8.8.4.4")


def test_r1_25_cidr_rule():
    """R1.25: a CIDRRule's cidr must be in prefix notation; cidrGroupRef/Selector are reported unsupported."""
    assert_error(cnp("endpointSelector: {}\negress: [{toCIDRSet: [{cidr: 8.8.8.8}]}]"), "is not in prefix notation")
    assert_error(cnp("endpointSelector: {}\negress: [{toCIDRSet: [{cidrGroupRef: g}]}]"), "unsupported field 'cidrGroupRef'")


@pytest.mark.parametrize("excepts,fragment", [("[10.0.0.0/4]", "is outside its CIDR"),
                                              ("[192.168.0.0/16]", "is outside its CIDR"),
                                              ("['fd00::/8']", "is not the same address family"),
                                              ("[10.1.0.0]", "is not in prefix notation")])
def test_r1_26_except_inside_cidr(excepts, fragment):
    """R1.26: each except is a prefix of the same family, inside the cidr and not shorter than it."""
    assert_error(cnp(f"endpointSelector: {{}}\negress: [{{toCIDRSet: [{{cidr: 10.0.0.0/8, except: {excepts}}}]}}]"),
                 fragment)


def test_r1_27_icmp_fields():
    """R1.27: type is 0-255 or a name of that family's table; family IPv4 (default) or IPv6; at most 40 fields."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\n"
                       "ingress: [{icmps: [{fields: [{type: EchoRequest}, {family: IPv6, type: EchoRequest}]}]}]"))
    assert allowed(ev, "x/b", "x/a", 8, "ICMP") and allowed_v6(ev, "x/b", "x/a", 128)
    assert not allowed(ev, "x/b", "x/a", 0, "ICMP") and not allowed_v6(ev, "x/b", "x/a", 8)
    assert not allowed(ev, "x/b", "x/a", 128, "ICMPv6")  # IPv4-only pods: no such packet
    assert_error(cnp("endpointSelector: {}\ningress: [{icmps: [{fields: [{type: PacketTooBig}]}]}]"),
                 "invalid IPv4 ICMP type 'PacketTooBig'")
    assert_error(cnp("endpointSelector: {}\ningress: [{icmps: [{fields: [{family: IPv5, type: 8}]}]}]"),
                 "family must be IPv4 or IPv6")
    assert_error(cnp("endpointSelector: {}\ningress: [{icmps: [{fields: [" + ", ".join(["{type: 8}"] * 41) + "]}]}]"),
                 "at most 40 ICMP fields")


# ---------------------------------------------------------------- 2. selection and namespace scoping

def test_r2_1_r2_2_sources_of_selector_keys():
    """R2.1/R2.2: a bare key matches the key from any source; `k8s:` only k8s labels; `reserved:` only reserved."""
    any_src = cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toEndpoints: [{matchLabels: {app: b}}]}]")
    k8s_src = any_src.replace("{app: b}", "{'k8s:app': b}")
    node_src = any_src.replace("{app: b}", "{'node:app': b}")
    assert allowed(any_src, "x/a", "x/b") and allowed(k8s_src, "x/a", "x/b") and not allowed(node_src, "x/a", "x/b")
    host = cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toEndpoints: [{matchLabels: {'reserved:host': ''}}]}]")
    assert allowed(host, "x/a", "n1") and not allowed(host, "x/a", "n2") and not allowed(host, "x/a", "x/b")


def test_r2_3_identity_labels_of_pods():
    """R2.3: pods carry namespace, namespace labels, service account and cluster labels."""
    for key, value, hit in (("io.kubernetes.pod.namespace", "y", "y/c"),
                            ("io.cilium.k8s.namespace.labels.team", "red", "x/b"),
                            ("io.cilium.k8s.policy.serviceaccount", "sb", "x/b"),
                            ("io.cilium.k8s.policy.cluster", "default", "y/d")):
        doc = ccnp(f"endpointSelector: {{}}\ningress: [{{fromEndpoints: [{{matchLabels: {{'k8s:{key}': {value}}}}}]}}]")
        ev = evaluator(doc)
        assert allowed(ev, hit, "x/a"), key
    sa = evaluator(ccnp("endpointSelector: {}\ningress: [{fromEndpoints: "
                        "[{matchLabels: {'io.cilium.k8s.policy.serviceaccount': sb}}]}]"))
    assert not allowed(sa, "y/c", "x/a") and allowed(sa, "x/b", "x/a")


def test_r2_4_empty_selector_matches_every_identity():
    """R2.4: `{}` unscoped (here: fromEntities all / a toPorts-only rule) matches world and host too."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{toPorts: [{ports: [{port: '80'}]}]}]"))
    for src in ("x/b", "y/c", WORLD4, WORLD6, "n2"):
        assert allowed(ev, src, "x/a"), src


def test_r2_5_cnp_subject_is_its_namespace():
    """R2.5: a CNP selects only its own namespace; another namespace in matchLabels is overwritten (warning)."""
    doc = cnp("endpointSelector: {matchLabels: {app: a, 'k8s:io.kubernetes.pod.namespace': y}}\ningress: [{}]")
    assert any("is overwritten with the policy's namespace 'x' (R2.5)" in w for w in warnings(doc))
    ev = evaluator(doc)
    assert not allowed(ev, "x/b", "x/a") and allowed(ev, "y/c", "y/d")


def test_r2_6_r5_5_ccnp_empty_subject_is_every_pod():
    """R2.6/R5.5: CCNP endpointSelector {} selects every pod of every namespace; a CNP's only its namespace."""
    cc = evaluator(ccnp("endpointSelector: {}\ningress: [{}]"))
    assert not allowed(cc, "x/a", "y/c") and not allowed(cc, "y/c", "x/b")
    ns = evaluator(cnp("endpointSelector: {}\ningress: [{}]"))
    assert not allowed(ns, "y/c", "x/b") and allowed(ns, "x/a", "y/c")


def test_r2_7_host_is_subject_only_to_node_selector():
    """R2.7: endpointSelector rules never apply to the host endpoint; nodeSelector rules never to pods."""
    pods = evaluator(ccnp("endpointSelector: {}\ningress: [{}]"))
    assert allowed(pods, "y/c", "n1")
    nodes = evaluator(ccnp("nodeSelector: {}\ningress: [{}]"))
    assert not allowed(nodes, "y/c", "n1") and allowed(nodes, "y/c", "x/a")


def test_r2_8_node_selector_is_not_namespace_scoped():
    """R2.8: nodeSelector selects nodes by node labels, no namespace added."""
    ev = evaluator(ccnp("nodeSelector: {matchLabels: {role: worker}}\ningress: [{}]"))
    assert not allowed(ev, "y/c", "n1") and allowed(ev, "x/a", "n2")


def test_r2_9_r2_18_reserved_keys_skip_scoping():
    """R2.9/R2.18: a peer selector with a `reserved:` key is left unscoped and equals the entity."""
    sel = cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toEndpoints: [{matchLabels: {'reserved:world': ''}}]}]")
    ent = cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toEntities: [world]}]")
    pairs = [("x/a", WORLD4), ("x/a", WORLD6), ("x/a", "x/b"), ("x/a", "n2")]
    assert table(sel, pairs) == table(ent, pairs) == {pairs[0]: True, pairs[1]: True, pairs[2]: False,
                                                      pairs[3]: False}


def test_r2_10_namespace_key_reaches_other_namespaces():
    """R2.10: a peer mentioning the namespace key (with or without k8s:, any operator) is not scoped."""
    for sel in ("{matchLabels: {'k8s:io.kubernetes.pod.namespace': y}}",
                "{matchLabels: {io.kubernetes.pod.namespace: y}}",
                "{matchExpressions: [{key: io.kubernetes.pod.namespace, operator: In, values: [y]}]}"):
        ev = evaluator(cnp(f"endpointSelector: {{matchLabels: {{app: a}}}}\ningress: [{{fromEndpoints: [{sel}]}}]"))
        assert allowed(ev, "y/c", "x/a") and not allowed(ev, "x/b", "x/a"), sel


def test_r2_11_namespace_labels_select_across_namespaces():
    """R2.11: a CNP peer on namespace labels matches pods of every namespace with those labels."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: b}}\n"
                       "ingress: [{fromEndpoints: [{matchLabels: {'k8s:io.cilium.k8s.namespace.labels.ns': y}}]}]"))
    assert allowed(ev, "y/c", "x/b") and allowed(ev, "y/d", "x/b") and not allowed(ev, "x/a", "x/b")


def test_r2_12_r5_3_cnp_empty_peer_is_own_namespace():
    """R2.12/R5.3: fromEndpoints [{}] in a CNP = every pod of the policy's namespace, nothing else."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{}]}]"))
    assert allowed(ev, "x/b", "x/a")
    assert not any(allowed(ev, s, "x/a") for s in ("y/c", WORLD4, "n2"))


def test_r2_13_r5_3_ccnp_empty_peer_is_every_pod():
    """R2.13/R5.3: fromEndpoints [{}] in a CCNP = pods of all namespaces, not world, host or remote nodes."""
    ev = evaluator(ccnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{}]}]"))
    assert allowed(ev, "x/b", "x/a") and allowed(ev, "y/c", "y/d")
    assert not any(allowed(ev, s, "y/d") for s in (WORLD4, "n1"))


def test_r2_13_init_subject_exception():
    """R2.13: when the CCNP subject mentions reserved:init, no namespace requirement is added to peers."""
    result = load(ccnp("endpointSelector: {matchLabels: {'reserved:init': ''}}\ningress: [{fromEndpoints: [{}]}]"))
    (rule,) = result.policy.rules
    (peer,) = rule.peers
    assert all(sel.is_wildcard for sel in peer.selectors)


def test_r2_14_non_endpoint_peers_are_not_scoped():
    """R2.14: entities, CIDRs and nodes in a CNP reach beyond the namespace."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEntities: [cluster]}]"))
    assert allowed(ev, "y/c", "x/a")
    nodes = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toNodes: [{matchLabels: {role: control}}]}]"))
    assert allowed(nodes, "x/a", "n2")


def test_r2_16_nodes_peers_are_remote_nodes_only():
    """R2.16: fromNodes/toNodes only match remote nodes, never the local host."""
    ev = evaluator(cnp("endpointSelector: {}\negress: [{toNodes: [{}]}]"))
    assert allowed(ev, "x/a", "n2") and not allowed(ev, "x/a", "n1")


def test_r2_17_not_in_namespace_over_selects():
    """R2.17: NotIn on the namespace key is exempt from scoping and matches identities without the key (world)."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{matchExpressions: "
                       "[{key: io.kubernetes.pod.namespace, operator: NotIn, values: [x]}]}]}]"))
    assert allowed(ev, "y/c", "x/a") and allowed(ev, WORLD4, "x/a") and allowed(ev, "n2", "x/a")
    assert not allowed(ev, "x/b", "x/a")


# ---------------------------------------------------------------- 3. default deny

def test_r3_2_r3_4_explicit_default_deny_false():
    """R3.2/R3.4b: enableDefaultDeny.ingress false: the rule adds allows but does not switch to default-deny."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\nenableDefaultDeny: {ingress: false}\n"
                       "ingress: [{fromEndpoints: [{matchLabels: {app: b}}]}]"))
    assert allowed(ev, "y/c", "x/a") and verdict(ev, "y/c", "x/a").ingress.reason is Reason.NOT_ENFORCED


def test_r3_4_flag_without_section_does_nothing():
    """R3.4: enableDefaultDeny.egress true without an egress section puts nothing in default-deny (warning)."""
    doc = cnp("endpointSelector: {matchLabels: {app: a}}\nenableDefaultDeny: {egress: true}\ningress: [{}]")
    assert any("does nothing (R3.4)" in w for w in warnings(doc))
    assert allowed(doc, "x/a", "y/c")


def test_r3_4_any_selecting_rule_asking_for_default_deny_wins():
    """R3.4: default-deny if ANY selecting rule with a section asks for it."""
    opt_out = cnp("endpointSelector: {}\nenableDefaultDeny: {ingress: false}\ningress: [{fromEntities: [world]}]", name="o")
    strict = cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{matchLabels: {app: b}}]}]")
    ev = evaluator(opt_out, strict)
    assert not allowed(ev, "y/c", "x/a") and allowed(ev, "x/b", "x/a") and allowed(ev, WORLD4, "x/a")
    assert allowed(ev, "y/c", "x/b")  # x/b is selected only by the opt-out rule


def test_r3_4c_l7_without_default_deny_is_flagged():
    """R3.4c: L7 rules are not reconciled with enableDefaultDeny false (cilium PR 38675): a warning says so."""
    doc = cnp("endpointSelector: {matchLabels: {app: a}}\nenableDefaultDeny: {ingress: false}\n"
              "ingress: [{toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{method: GET}]}}]}]")
    assert any("(R3.4c)" in w for w in warnings(doc))
    assert not any("(R3.4c)" in w for w in warnings(doc.replace("{ingress: false}", "{ingress: true}")))


def test_r3_5_not_default_deny_still_denies():
    """R3.5: without default-deny everything is allowed except what deny rules match."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\nenableDefaultDeny: {ingress: false}\n"
                       "ingressDeny: [{fromEndpoints: [{matchLabels: {app: b}}]}]"))
    assert not allowed(ev, "x/b", "x/a") and allowed(ev, "y/c", "x/a")


def test_r3_6_ingress_deny_alone_turns_on_default_deny():
    """R3.6: an ingressDeny-only policy blocks all ingress not otherwise allowed."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningressDeny: [{fromEntities: [world]}]"))
    assert not allowed(ev, "x/b", "x/a") and verdict(ev, "x/b", "x/a").ingress.reason is Reason.DEFAULT_DENY


def test_r3_7_directions_are_independent():
    """R3.7: an ingress-only policy leaves egress open."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{}]"))
    assert not allowed(ev, "x/b", "x/a") and allowed(ev, "x/a", "x/b") and allowed(ev, "x/a", WORLD4)


def test_r3_8_r11_4_both_ends_must_allow():
    """R3.8/R11.4: pod→pod needs the sender's egress and the receiver's ingress."""
    egress_only = cnp("endpointSelector: {matchLabels: {app: b}}\negress: [{toEndpoints: [{matchLabels: {app: a}}]}]")
    ingress_deny = cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{}]", name="q")
    v = verdict([egress_only, ingress_deny], "x/b", "x/a")
    assert v.egress.allowed and not v.ingress.allowed and not v.allowed


def test_r3_9_r11_7_local_host_reaches_its_pods():
    """R3.9/R11.7: the pod's own node may always reach it on ingress; another node may not."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{}]"))
    assert verdict(ev, "n1", "x/a").ingress.reason is Reason.LOCALHOST and allowed(ev, "n1", "x/a")
    assert not allowed(ev, "n2", "x/a")


def test_r3_10_r12_9_knp_is_always_default_deny():
    """R3.10/R12.9: a KNP puts the directions it covers into default-deny; it cannot opt out."""
    ev = evaluator(knp("podSelector: {matchLabels: {app: a}}\ningress: [{from: [{podSelector: {matchLabels: {app: b}}}]}]"))
    assert allowed(ev, "x/b", "x/a") and not allowed(ev, "y/c", "x/a") and allowed(ev, "x/a", "y/c")


# ---------------------------------------------------------------- 4. allow / deny

def test_r4_1_allows_are_a_union():
    """R4.1: any allow rule from any policy kind suffices."""
    docs = [cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{matchLabels: {app: b}}]}]"),
            knp("podSelector: {matchLabels: {app: a}}\ningress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}]}]")]
    ev = evaluator(*docs)
    assert allowed(ev, "x/b", "x/a") and allowed(ev, "y/c", "x/a") and not allowed(ev, WORLD4, "x/a")


def test_r4_2_r12_10_deny_beats_allow_across_kinds():
    """R4.2/R12.10: a CNP/CCNP deny overrides KNP and CNP allows regardless of specificity."""
    docs = [knp("podSelector: {}\ningress: [{}]"),
            cnp("endpointSelector: {}\ningress: [{fromEndpoints: [{matchLabels: {app: b}}], "
                "toPorts: [{ports: [{port: '80', protocol: TCP}]}]}]", name="allow"),
            ccnp("endpointSelector: {}\ningressDeny: [{fromEndpoints: [{matchLabels: {app: b}}]}]")]
    v = verdict(docs, "x/b", "x/a")
    assert not v.allowed and v.ingress.reason is Reason.DENIED
    assert allowed(docs, "y/c", "x/a")


def test_r4_3_r9_7_deny_is_l3_l4_only():
    """R4.3/R9.7: no L7 in deny rules, and a port deny blocks an L7 allow on that port."""
    assert_error(cnp("endpointSelector: {}\negressDeny: [{toPorts: [{ports: [{port: '80'}], rules: {http: [{}]}}]}]"),
                 "L7 rules are not allowed in a deny rule")
    docs = [cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{toPorts: [{ports: [{port: '80', protocol: TCP}], "
                "rules: {http: [{method: GET}]}}]}]"),
            cnp("endpointSelector: {matchLabels: {app: a}}\ningressDeny: [{toPorts: [{ports: [{port: '80'}]}]}]", name="d")]
    assert not allowed(docs, "x/b", "x/a")


def test_r4_4_decision_order():
    """R4.4: deny, then not-enforced, then allow rule, else default deny — each with its reason."""
    docs = [cnp("endpointSelector: {matchLabels: {app: a}}\n"
                "ingress: [{fromEndpoints: [{matchLabels: {app: b}}]}]\n"
                "ingressDeny: [{fromEntities: [world]}]")]
    ev = evaluator(*docs)
    reasons = {s: verdict(ev, s, "x/a").ingress.reason for s in ("x/b", "y/c", WORLD4)}
    assert reasons == {"x/b": Reason.ALLOWED, "y/c": Reason.DEFAULT_DENY, WORLD4: Reason.DENIED}
    assert verdict(ev, "x/a", "x/b").ingress.reason is Reason.NOT_ENFORCED


def test_r4_5_wider_deny_beats_narrower_allow():
    """R4.5: an L3-only deny beats a port allow; a port deny for every peer beats a peer's allow."""
    l3 = [cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{matchLabels: {app: b}}], "
              "toPorts: [{ports: [{port: '80', protocol: TCP}]}]}]"),
          cnp("endpointSelector: {matchLabels: {app: a}}\ningressDeny: [{fromEndpoints: [{matchLabels: {app: b}}]}]",
              name="d")]
    assert not allowed(l3, "x/b", "x/a")
    port = [l3[0], cnp("endpointSelector: {matchLabels: {app: a}}\ningressDeny: [{toPorts: [{ports: [{port: '80'}]}]}]",
                       name="d")]
    assert not allowed(port, "x/b", "x/a") and not allowed(port, "x/b", "x/a", 80, "UDP")


def test_r4_6_v1_requires_are_unsupported():
    """R4.6/V1: fromRequires/toRequires were removed in 1.19: reported unsupported, never silently dropped."""
    assert_error(cnp("endpointSelector: {}\ningress: [{fromRequires: [{}]}]"), "unsupported field 'fromRequires'")
    assert_error(cnp("endpointSelector: {}\negress: [{toRequires: [{}]}]"), "unsupported field 'toRequires'")


# ---------------------------------------------------------------- 5. empty rules

def test_r5_1_empty_rule_allows_nothing():
    """R5.1: ingress [{}] allows nothing and turns on default deny; ingressDeny [{}] denies nothing."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{}]"))
    assert not any(allowed(ev, s, "x/a") for s in ("x/b", "y/c", WORLD4, "n2"))
    deny = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningressDeny: [{}]\n"
                         "ingress: [{fromEndpoints: [{matchLabels: {app: b}}]}]"))
    assert allowed(deny, "x/b", "x/a") and not allowed(deny, "y/c", "x/a")


def test_r5_2_ports_without_peers_is_a_wildcard_peer():
    """R5.2: toPorts (or icmps) without a peer field = every identity, world included, not namespace-scoped."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\n"
                       "ingress: [{toPorts: [{ports: [{port: '80', protocol: TCP}]}]}, {icmps: [{fields: [{type: 8}]}]}]"))
    for src in ("x/b", "y/c", WORLD4, "n2"):
        assert allowed(ev, src, "x/a", 80) and allowed(ev, src, "x/a", 8, "ICMP") and not allowed(ev, src, "x/a", 81)


def test_r5_2b_l3_only_rule_covers_every_protocol():
    """R5.2b: peers without toPorts allow every protocol and port, ICMP included."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{matchLabels: {app: b}}]}]"))
    for port, proto in ((80, "TCP"), (53, "UDP"), (9, "SCTP"), (8, "ICMP"), (0, "TCP"), (0, "OTHER")):
        assert allowed(ev, "x/b", "x/a", port, proto), (port, proto)
    assert allowed_v6(ev, "x/b", "x/a", 128)


def test_r5_4_empty_peer_list_is_absent():
    """R5.4: fromEndpoints: [] is the same as no peer field (R5.1 or R5.2 then apply)."""
    pairs = [("x/b", "x/a"), (WORLD4, "x/a")]
    assert table(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: []}]"), pairs) == \
        {p: False for p in pairs}
    assert table(cnp("endpointSelector: {matchLabels: {app: a}}\n"
                     "ingress: [{fromEndpoints: [], toPorts: [{ports: [{port: '80'}]}]}]"), pairs) == \
        {p: True for p in pairs}


def test_r5_6_port_rule_without_ports_allows_nothing():
    """R5.6: toPorts [{}] allows nothing (not L3-only), still switches to default deny, with a warning."""
    doc = cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEndpoints: [{matchLabels: {app: b}}], toPorts: [{}]}]")
    assert any("a port rule without ports allows nothing (R5.6)" in w for w in warnings(doc))
    ev = evaluator(doc)
    assert not allowed(ev, "x/b", "x/a", 80) and not allowed(ev, "x/b", "x/a", 8, "ICMP")


def test_r5_7_port_zero_is_every_port():
    """R5.7: port 0 = every port of its protocol; with ANY it is TCP+UDP+SCTP (ICMP still needs L3-only)."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\n"
                       "ingress: [{fromEndpoints: [{matchLabels: {app: b}}], toPorts: [{ports: [{port: '0'}]}]}]"))
    assert all(allowed(ev, "x/b", "x/a", p, pr) for p, pr in ((1, "TCP"), (65535, "UDP"), (7, "SCTP")))
    assert not allowed(ev, "x/b", "x/a", 8, "ICMP")


def test_r5_8_empty_http_rule_is_allow_all_but_proxied():
    """R5.8: http [{}] allows every request through the proxy; rules: {} is no L7 at all."""
    proxied = verdict(cnp("endpointSelector: {matchLabels: {app: a}}\n"
                          "ingress: [{toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{}]}}]}]"),
                      "x/b", "x/a")
    assert proxied.allowed and proxied.l7 and proxied.l7[0].kind == "http"
    plain = verdict(cnp("endpointSelector: {matchLabels: {app: a}}\n"
                        "ingress: [{toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {}}]}]"), "x/b", "x/a")
    assert plain.allowed and plain.l7 == ()


def test_r5_9_r12_2_knp_empty_rule_is_everything():
    """R5.9/R12.2: a KNP ingress [{}] allows everything, world included; ingress [] with Ingress type denies all."""
    ev = evaluator(knp("podSelector: {matchLabels: {app: a}}\ningress: [{}]"))
    assert all(allowed(ev, s, "x/a") for s in ("x/b", "y/c", WORLD4, "n2"))
    deny = evaluator(knp("podSelector: {matchLabels: {app: a}}\npolicyTypes: [Ingress]\ningress: []"))
    assert not any(allowed(deny, s, "x/a") for s in ("x/b", WORLD4))


# ---------------------------------------------------------------- 6. entities

def test_r6_1_world_entities():
    """R6.1: world covers both families; world-ipv4/world-ipv6 one each; never pods or nodes."""
    for entity, v4, v6 in (("world", True, True), ("world-ipv4", True, False), ("world-ipv6", False, True)):
        ev = evaluator(cnp(f"endpointSelector: {{matchLabels: {{app: a}}}}\negress: [{{toEntities: [{entity}]}}]"))
        assert (allowed(ev, "x/a", WORLD4), allowed(ev, "x/a", WORLD6)) == (v4, v6), entity
        assert not allowed(ev, "x/a", "y/c") and not allowed(ev, "x/a", "n2")


def test_r6_2_r6_3_host_and_remote_node():
    """R6.2/R6.3: host is the pod's own node, remote-node every other node."""
    host = evaluator(cnp("endpointSelector: {}\negress: [{toEntities: [host]}]"))
    remote = evaluator(cnp("endpointSelector: {}\negress: [{toEntities: [remote-node]}]"))
    assert (allowed(host, "x/a", "n1"), allowed(host, "x/a", "n2")) == (True, False)
    assert (allowed(remote, "x/a", "n1"), allowed(remote, "x/a", "n2")) == (False, True)


def test_r6_5_none_and_reserved_entities():
    """R6.4/R6.5: none selects nothing; health, init, unmanaged, ingress, kube-apiserver select no pod or node."""
    for entity in ("none", "health", "init", "unmanaged", "ingress", "kube-apiserver"):
        ev = evaluator(cnp(f"endpointSelector: {{matchLabels: {{app: a}}}}\ningress: [{{fromEntities: [{entity}]}}]"))
        assert not any(allowed(ev, s, "x/a") for s in ("x/b", "y/c", WORLD4, "n2")), entity


def test_r6_6_cluster_entity():
    """R6.6: cluster = local pods of all namespaces and nodes, not world."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEntities: [cluster]}]"))
    assert allowed(ev, "x/b", "x/a") and allowed(ev, "y/c", "x/a") and allowed(ev, "n2", "x/a")
    assert not allowed(ev, WORLD4, "x/a")


def test_r6_6b_entity_names():
    """R6.6b: the valid entity names."""
    assert set(ENTITY_NAMES) == {"all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init", "ingress",
                                 "unmanaged", "remote-node", "health", "none", "kube-apiserver"}


def test_r6_7_all_is_everything():
    """R6.7: all = every identity, world included."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEntities: [all]}]"))
    assert all(allowed(ev, s, "x/a") for s in ("x/b", "y/c", WORLD4, WORLD6, "n2"))


def test_r6_8_entities_ignore_namespace():
    """R6.8: fromEntities [cluster] in a CNP admits pods of other namespaces."""
    assert allowed(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromEntities: [cluster]}]"), "y/d", "x/a")


def test_r6_9_numeric_identities():
    """R6.9: reserved numbers; pod identities from 256; equal label sets share one identity."""
    assert RESERVED_IDS == {"host": 1, "world": 2, "unmanaged": 3, "health": 4, "init": 5, "remote-node": 6,
                            "kube-apiserver": 7, "ingress": 8, "world-ipv4": 9, "world-ipv6": 10}
    assert INV.find(WORLD4).identity.id == 9 and INV.find(WORLD6).identity.id == 10
    assert all(p.identity.id >= 256 for p in INV.pods) and INV.find("n2").identity.id == 6
    assert len({p.identity.id for p in INV.pods}) == 4


# ---------------------------------------------------------------- 7. CIDR

def test_r7_1_cidr_never_matches_pods_or_nodes():
    """R7.1: a CIDR covering pod and node addresses still only matches addresses outside the cluster."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toCIDR: [0.0.0.0/0]}]"))
    assert not allowed(ev, "x/a", "y/c") and not allowed(ev, "x/a", "n2") and allowed(ev, "x/a", WORLD4)
    assert not allowed(ev, "x/a", "10.0.1.3")  # y/c's address resolves to the pod


def test_r7_3_r7_7_prefix_match_and_families():
    """R7.3/R7.7: 0.0.0.0/0 covers every IPv4 address outside the cluster but no IPv6 one."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toCIDR: [0.0.0.0/0]}]"))
    assert allowed(ev, "x/a", "1.1.1.1") and not allowed(ev, "x/a", WORLD6)


def test_r7_4_cidr_equals_cidr_set():
    """R7.4: fromCIDR X ≡ fromCIDRSet [{cidr: X}]."""
    pairs = [(WORLD4, "x/a"), ("8.8.4.4", "x/a"), ("x/b", "x/a")]
    a = cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromCIDR: [8.8.8.0/24]}]")
    b = cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromCIDRSet: [{cidr: 8.8.8.0/24}]}]")
    assert table(a, pairs) == table(b, pairs) == {pairs[0]: True, pairs[1]: False, pairs[2]: False}


def test_r7_5_except_is_per_entry():
    """R7.5: an except removes addresses from its own entry only; another entry still allows them."""
    one = cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toCIDRSet: [{cidr: 8.0.0.0/8, except: [8.8.0.0/16]}]}]")
    two = one.replace("except: [8.8.0.0/16]}]", "except: [8.8.0.0/16]}, {cidr: 8.8.8.0/24}]")
    assert not allowed(one, "x/a", WORLD4) and allowed(one, "x/a", "8.9.9.9")
    assert allowed(two, "x/a", WORLD4) and not allowed(two, "x/a", "8.8.4.4")


def test_r7_6_deny_cidr_set_with_except():
    """R7.6: a deny CIDRSet with except denies the cidr minus the except."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toEntities: [world]}]\n"
                       "egressDeny: [{toCIDRSet: [{cidr: 8.0.0.0/8, except: [8.8.8.0/24]}]}]"))
    assert allowed(ev, "x/a", WORLD4) and not allowed(ev, "x/a", "8.8.4.4") and allowed(ev, "x/a", "1.1.1.1")


def test_r7_9_cidr_groups_are_unsupported():
    """R7.9: CiliumCIDRGroup references are reported, not silently dropped."""
    assert_error(cnp("endpointSelector: {}\negress: [{toCIDRSet: [{cidrGroupSelector: {}}]}]"),
                 "unsupported field 'cidrGroupSelector'")


# ---------------------------------------------------------------- 8. ports and protocols

def test_r8_1_destination_port():
    """R8.1: the L4 match is on the destination port, on both sides of the connection."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: b}}\negress: [{toEndpoints: [{matchLabels: {app: a}}], "
                       "toPorts: [{ports: [{port: '80', protocol: TCP}]}]}]"))
    assert allowed(ev, "x/b", "x/a", 80) and not allowed(ev, "x/b", "x/a", 8080)


def test_r8_2_any_is_tcp_udp_sctp():
    """R8.2: protocol ANY (or omitted) is TCP, UDP and SCTP, not ICMP."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{toPorts: [{ports: [{port: '8'}]}]}]"))
    assert all(allowed(ev, "x/b", "x/a", 8, p) for p in ("TCP", "UDP", "SCTP"))
    assert not allowed(ev, "x/b", "x/a", 8, "ICMP")


def test_r8_3_port_ranges():
    """R8.3: [port, endPort] inclusive; endPort < port is accepted by Cilium and is the single port (warning).
    Kubernetes rejects endPort < port in a NetworkPolicy."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\n"
                       "ingress: [{toPorts: [{ports: [{port: '80', endPort: 90, protocol: TCP}]}]}]"))
    assert [allowed(ev, "x/b", "x/a", p) for p in (79, 80, 85, 90, 91)] == [False, True, True, True, False]
    low = cnp("endpointSelector: {matchLabels: {app: a}}\n"
              "ingress: [{toPorts: [{ports: [{port: '8080', endPort: 80, protocol: TCP}]}]}]")
    assert any("endPort 80 is less than port 8080" in w for w in warnings(low))
    assert [allowed(low, "x/b", "x/a", p) for p in (80, 8080, 8081)] == [False, True, False]
    assert_error(knp("podSelector: {}\ningress: [{ports: [{port: 8080, endPort: 80}]}]"), "endPort 80 is less than port 8080")


def test_r8_4_named_ports_resolve_at_the_destination():
    """R8.4: a named port resolves against the destination pod's container ports, case-insensitively;
    a protocol mismatch or a peer without that name (or outside the cluster) does not match."""
    ev = evaluator(cnp("endpointSelector: {}\negress: [{toPorts: [{ports: [{port: http, protocol: TCP}, "
                       "{port: DNS, protocol: TCP}]}]}]"))
    assert allowed(ev, "x/b", "x/a", 8080) and not allowed(ev, "x/b", "x/a", 80)
    assert not allowed(ev, "x/b", "x/a", 53, "TCP") and not allowed(ev, "x/b", "x/a", 53, "UDP")
    assert not allowed(ev, "x/b", "y/c", 8080) and not allowed(ev, "x/b", WORLD4, 8080)
    ingress = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{toPorts: [{ports: [{port: dns}]}]}]"))
    assert allowed(ingress, "y/c", "x/a", 53, "UDP") and not allowed(ingress, "y/c", "x/a", 53, "TCP")


def test_r8_5_r8_6_icmp_needs_an_icmp_or_l3_rule():
    """R8.5/R8.6: with an L4 rule ICMP is blocked unless an icmps rule (type in the port slot) allows it."""
    l4 = cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{toPorts: [{ports: [{port: '80'}]}]}]")
    assert not allowed(l4, "x/b", "x/a", 8, "ICMP")
    icmp = cnp("endpointSelector: {matchLabels: {app: a}}\n"
               "ingress: [{fromEndpoints: [{matchLabels: {app: b}}], icmps: [{fields: [{type: 8}]}]}]")
    assert allowed(icmp, "x/b", "x/a", 8, "ICMP") and not allowed(icmp, "x/b", "x/a", 0, "ICMP")
    assert not allowed(icmp, "x/b", "x/a", 8, "TCP")


def test_r8_7_r12_8_knp_ports():
    """R8.7/R12.8: KNP protocol defaults to TCP; a port without number is every port of its protocol."""
    ev = evaluator(knp("podSelector: {matchLabels: {app: a}}\ningress: [{ports: [{port: 80}, {protocol: UDP}]}]"))
    assert allowed(ev, "x/b", "x/a", 80) and not allowed(ev, "x/b", "x/a", 80, "SCTP")
    assert allowed(ev, "x/b", "x/a", 1234, "UDP") and not allowed(ev, "x/b", "x/a", 1234, "TCP")
    assert_error(knp("podSelector: {}\ningress: [{ports: [{port: 80, protocol: tcp}]}]"), "unknown protocol 'tcp'")


# ---------------------------------------------------------------- 9. L7

def test_r9_1_l7_rules_redirect_to_the_proxy():
    """R9.1: a port rule with L7 rules allows L4 and hands requests to the proxy."""
    v = verdict(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{toPorts: [{ports: [{port: '80', "
                    "protocol: TCP}], rules: {http: [{method: GET, path: /api}]}}]}]"), "x/b", "x/a")
    assert v.allowed and [r.http[0].method for r in v.l7] == ["GET"]


def test_r9_3_rule_without_l7_widens_to_allow_all():
    """R9.3: same peer and port with and without L7 → every request is allowed."""
    docs = [cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{toPorts: [{ports: [{port: '80', "
                "protocol: TCP}], rules: {http: [{method: GET}]}}]}, {toPorts: [{ports: [{port: '80', protocol: TCP}]}]}]")]
    v = verdict(docs, "x/b", "x/a")
    assert v.allowed and v.l7 == ()


def test_r9_4_l3_only_peer_gets_every_request():
    """R9.4/R9.3b: wildcard-peer HTTP rule on 80 plus an L3-only allow for X: per identity, X may send any
    request (its no-L7 entry), others only the HTTP-allowed ones."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress:\n"
                       "- toPorts: [{ports: [{port: '80', protocol: TCP}], rules: {http: [{method: GET}]}}]\n"
                       "- fromEndpoints: [{matchLabels: {app: b}}]"))
    assert verdict(ev, "x/b", "x/a").l7 == ()
    assert [r.kind for r in verdict(ev, "y/c", "x/a").l7] == ["http"]


def test_r9_5_dns_rules():
    """R9.5: DNS rules are egress only and filter queries (proxied)."""
    v = verdict(cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toEndpoints: [{}], "
                    "toPorts: [{ports: [{port: '53', protocol: UDP}], rules: {dns: [{matchPattern: '*.x.com'}]}}]}]"),
                "x/a", "x/b", 53, "UDP")
    assert v.allowed and v.l7[0].dns[0].match_pattern == "*.x.com"


def test_r9_6_kafka_is_reported():
    """R9.6/V2: Kafka rules (removed upstream) are warned about and kept as an opaque L7 filter."""
    doc = cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{toPorts: [{ports: [{port: '9092', "
              "protocol: TCP}], rules: {kafka: [{topic: t}]}}]}]")
    assert any("Kafka L7 rules are deprecated and removed" in w for w in warnings(doc))
    assert verdict(doc, "x/b", "x/a", 9092).l7[0].kind == "kafka"


def test_r9_2_header_matches_are_reported():
    """R9.2: headerMatches are not enforced: a warning says concrete verdicts treat them as matching
    and the verifier as unknown (verify/encode.py: an opaque part of the filter)."""
    assert any("headerMatches is not enforced by policyc" in w for w in warnings(cnp(
        "endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: '80', protocol: TCP}], "
        "rules: {http: [{headerMatches: [{name: x, value: y}]}]}}]}]")))


# ---------------------------------------------------------------- 10. FQDN, services, nodes, host policies

def test_r10_1_r10_2c_fqdn_matches_nothing_statically():
    """R10.1/R10.2c/R10.5: toFQDNs allows nothing until DNS answers are seen: statically no address matches."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\negress: [{toFQDNs: [{matchPattern: '*'}]}]"))
    assert not allowed(ev, "x/a", WORLD4) and not allowed(ev, "x/a", "x/b")


def test_r10_2_fqdn_syntax():
    """R10.2: matchName letters, digits, '.', '-', '_'; matchPattern adds '*'; exactly one of the two."""
    assert messages(cnp("endpointSelector: {}\negress: [{toFQDNs: [{matchName: A.Example.com.}, "
                        "{matchPattern: '**.example.com'}]}]")) == []
    assert_error(cnp("endpointSelector: {}\negress: [{toFQDNs: [{matchName: 'a*.com'}]}]"), "is not a valid DNS name")
    assert_error(cnp("endpointSelector: {}\negress: [{toFQDNs: [{matchName: a.com, matchPattern: b.com}]}]"),
                 "needs exactly one of matchName or matchPattern")


def test_r10_4_fqdn_not_in_deny():
    """R10.4: toFQDNs is not available in deny rules."""
    assert_error(cnp("endpointSelector: {}\negressDeny: [{toFQDNs: [{matchName: a.com}]}]"),
                 "toFQDNs is not allowed in a deny rule")


def test_r10_6_r10_7_r10_9_services_and_groups_are_unsupported():
    """R10.6/R10.7/R10.9: toServices and cloud groups need data policyc does not read: reported."""
    assert_error(cnp("endpointSelector: {}\negress: [{toServices: [{k8sService: {serviceName: s}}]}]"),
                 "unsupported field 'toServices'")
    assert_error(cnp("endpointSelector: {}\negress: [{toGroups: [{aws: {}}]}]"), "unsupported field 'toGroups'")
    assert_error(cnp("endpointSelector: {}\ningress: [{fromGroups: [{aws: {}}]}]"), "unsupported field 'fromGroups'")


def test_r10_8_nodes_by_label():
    """R10.8: fromNodes selects nodes by their labels."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{fromNodes: [{matchLabels: {role: control}}]}]"))
    assert allowed(ev, "n2", "x/a") and not allowed(ev, "y/c", "x/a")


def test_r10_10_host_policy():
    """R10.10: nodeSelector policies govern traffic to and from the node itself."""
    ev = evaluator(ccnp("nodeSelector: {matchLabels: {role: worker}}\ningress: [{fromEntities: [cluster]}]"))
    assert allowed(ev, "y/c", "n1") and not allowed(ev, WORLD4, "n1") and allowed(ev, WORLD4, "n2")


def test_r10_11_authentication_is_assumed():
    """R10.11: authentication mode required is an extra precondition policyc assumes met (warning)."""
    doc = cnp("endpointSelector: {matchLabels: {app: a}}\n"
              "ingress: [{fromEndpoints: [{matchLabels: {app: b}}], authentication: {mode: required}}]")
    assert any("mutual authentication is not modelled" in w for w in warnings(doc))
    assert allowed(doc, "x/b", "x/a")


# ---------------------------------------------------------------- 11. self traffic

def test_r11_5_self_traffic_is_never_policed():
    """R11.5: a pod talking to itself is allowed even under deny-all."""
    ev = evaluator(cnp("endpointSelector: {}\ningress: [{}]\negress: [{}]"))
    v = verdict(ev, "x/a", "x/a")
    assert v.allowed and v.ingress.reason is Reason.SELF and not allowed(ev, "x/b", "x/a")


# ---------------------------------------------------------------- 12. Kubernetes NetworkPolicy

def test_r12_1_knp_subject_is_namespaced():
    """R12.1: podSelector plus the policy namespace (default when absent)."""
    ev = evaluator(knp("podSelector: {matchLabels: {app: a}}\ningress: []\npolicyTypes: [Ingress]"))
    assert not allowed(ev, "x/b", "x/a") and allowed(ev, "x/b", "y/d")
    nameless = knp("podSelector: {}\npolicyTypes: [Ingress]").replace(", namespace: x", "")
    assert [p.namespace for p in load(nameless).policy.policies] == ["default"]
    assert allowed(nameless, "x/b", "x/a")  # namespace default has no pod here


def test_r12_2_each_peer_is_its_own_rule():
    """R12.2: each `from` peer is a separate rule carrying the ports."""
    result = load(knp("podSelector: {}\ningress: [{from: [{podSelector: {}}, {ipBlock: {cidr: 8.8.8.0/24}}], "
                      "ports: [{port: 80}]}]"))
    (rule,) = result.policy.rules
    assert len(rule.peers) == 2
    ev = Evaluator(result.policy)
    assert allowed(ev, WORLD4, "x/a") and allowed(ev, "x/b", "x/a") and not allowed(ev, "x/b", "x/a", 81)


def test_r12_3_namespace_selector():
    """R12.3: namespaceSelector keys become namespace-label keys, ANDed with podSelector; {} = all pods."""
    anded = evaluator(knp("podSelector: {}\ningress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, "
                          "podSelector: {matchLabels: {app: a}}}]}]"))
    assert allowed(anded, "y/d", "x/b") and not allowed(anded, "y/c", "x/b") and not allowed(anded, "x/a", "x/b")
    every = evaluator(knp("podSelector: {}\ningress: [{from: [{namespaceSelector: {}}]}]"))
    assert allowed(every, "y/c", "x/a") and not allowed(every, WORLD4, "x/a") and not allowed(every, "n2", "x/a")


def test_r12_3_r2_17_knp_not_in_namespace_selector_over_selects():
    """R12.3/R2.17: a namespaceSelector NotIn also matches identities without namespace labels (world)."""
    ev = evaluator(knp("podSelector: {}\ningress: [{from: [{namespaceSelector: {matchExpressions: "
                       "[{key: ns, operator: NotIn, values: [x]}]}}]}]"))
    assert allowed(ev, "y/c", "x/a") and allowed(ev, WORLD4, "x/a") and not allowed(ev, "x/b", "x/a")


def test_r12_4_pod_selector_is_own_namespace():
    """R12.4: podSelector alone = pods of the policy namespace."""
    ev = evaluator(knp("podSelector: {}\ningress: [{from: [{podSelector: {}}]}]"))
    assert allowed(ev, "x/b", "x/a") and not allowed(ev, "y/c", "x/a") and not allowed(ev, WORLD4, "x/a")


def test_r12_5_ip_block_never_matches_pods():
    """R12.5: ipBlock is a CIDRSet: never pods or nodes even inside the block."""
    ev = evaluator(knp("podSelector: {}\ningress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: [8.8.8.0/24]}}]}]"))
    assert not allowed(ev, "y/c", "x/a") and not allowed(ev, WORLD4, "x/a") and allowed(ev, "1.1.1.1", "x/a")


def test_r12_6_empty_to_is_everything():
    """R12.6: an egress rule without `to` allows everything, world included."""
    ev = evaluator(knp("podSelector: {matchLabels: {app: a}}\npolicyTypes: [Egress]\negress: [{ports: [{port: 443}]}]"))
    assert allowed(ev, "x/a", WORLD4, 443) and allowed(ev, "x/a", "y/c", 443) and not allowed(ev, "x/a", WORLD4, 80)


@pytest.mark.parametrize("types,ingress_denied,egress_denied", [
    ("", True, False), ("[Ingress]", True, False), ("[Egress]", False, True), ("[Ingress, Egress]", True, True)])
def test_r12_7_policy_types(types, ingress_denied, egress_denied):
    """R12.7: which directions an empty KNP puts into default deny."""
    ev = evaluator(knp("podSelector: {matchLabels: {app: a}}" + (f"\npolicyTypes: {types}" if types else "")))
    assert (not allowed(ev, "x/b", "x/a"), not allowed(ev, "x/a", "x/b")) == (ingress_denied, egress_denied)


def test_r12_11_policy_types_divergence():
    """R12.11: rules for a direction policyTypes omits are still installed by Cilium (warning)."""
    doc = knp("podSelector: {matchLabels: {app: a}}\npolicyTypes: [Egress]\n"
              "ingress: [{from: [{podSelector: {matchLabels: {app: b}}}]}]")
    assert any("Cilium still enforces these ingress rules" in w for w in warnings(doc))
    ev = evaluator(doc)
    assert allowed(ev, "x/b", "x/a") and not allowed(ev, "y/c", "x/a")
    assert verdict(ev, "x/a", "y/c").egress.action is Action.DENY


def test_r9_3c_local_host_bypasses_l7_filters():
    """R9.3c/R3.9: host traffic to its local pods is allowed outright, so L7 rules do not filter it."""
    ev = evaluator(cnp("endpointSelector: {matchLabels: {app: a}}\ningress: [{toPorts: [{ports: [{port: '80', "
                       "protocol: TCP}], rules: {http: [{method: GET}]}}]}]"))
    assert verdict(ev, "n1", "x/a").l7 == () and verdict(ev, "n1", "x/a").allowed
    assert [r.kind for r in verdict(ev, "n2", "x/a").l7] == ["http"]


def test_r1_6_selector_values_are_label_values():
    """R1.6: selector values must be valid Kubernetes label values (the agent builds k8s requirements from them)."""
    assert_error(cnp("endpointSelector: {matchLabels: {app: 'a b'}}\ningress: [{}]"), "'a b' is not a valid label value")
    assert_error(cnp("endpointSelector: {}\ningress: [{fromEndpoints: [{matchExpressions: "
                     f"[{{key: app, operator: In, values: [{'x' * 64}]}}]}}]}}]"), "is not a valid label value")
    assert messages(cnp("endpointSelector: {matchLabels: {'reserved:host': '', app: a-b.c_d}}\ningress: [{}]")) == []


def test_r1_17_cnp_ports_are_strings():
    """R1.17: the CRD types PortProtocol.port as a string; the API server rejects an unquoted number
    (grafana/loki#19251, minio/minio#19232), so policyc does too. KNP ports are the other way round."""
    assert_error(cnp("endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: 80}]}]}]"), "port 80 is a number: quote it")
    assert_error(knp("podSelector: {}\ningress: [{ports: [{port: '80'}]}]"), "port '80' is a string")
