"""Services in every interpreter: inventory, toServices, per-backend verdicts after translation.

Connections to a Service are decided against the backend kube-proxy translates them to, on the
backend port (R7.8), hairpin flows meet no policy (R11.6), and toServices stands for the Service's
pods, or its EndpointSlice addresses when it has no selector (R10.6, R10.7).
"""
from __future__ import annotations

import ipaddress
import json
import re
import textwrap

import pytest
import z3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irgen import EXTERNALS, KEYS, VALUES, inventories, policy_sets
from policyc.cli import main
from policyc.compiler.diagnostics import PolicycError
from policyc.compiler.evaluate import Evaluator, Flow, Reason
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.inventory import Inventory, build_inventory
from policyc.compiler.ir import (Action, CIDRPeer, Direction, EndpointSlice, Label, Op, PortMatch, Protocol,
                                 Requirement, Rule, Selector, SelectorPeer, Service, ServicePort, ServiceRef,
                                 SliceEndpoint, SlicePort, SubjectKind)
from policyc.compiler.services import ServiceMap, bind, cells, decide
from policyc.compiler.source import parse_text
from policyc.compiler.verify.encode import InventorySpace, SymbolicSpace, new_flow

CLUSTER = """\
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: shop, labels: {kubernetes.io/metadata.name: shop}}}
- {apiVersion: v1, kind: Namespace, metadata: {name: data, labels: {kubernetes.io/metadata.name: data}}}
- apiVersion: v1
  kind: Pod
  metadata: {name: fe, namespace: shop, labels: {app: fe}}
  spec: {nodeName: n1}
  status: {podIP: 10.244.1.1, podIPs: [{ip: 10.244.1.1}, {ip: "fd00::1:1"}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: cart-1, namespace: shop, labels: {app: cart}}
  spec: {nodeName: n1, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
  status: {podIP: 10.244.1.2, podIPs: [{ip: 10.244.1.2}, {ip: "fd00::1:2"}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: cart-2, namespace: shop, labels: {app: cart}}
  spec: {nodeName: n2, containers: [{name: c, ports: [{name: http, containerPort: 9090}]}]}
  status: {podIP: 10.244.2.2}
- apiVersion: v1
  kind: Pod
  metadata: {name: cart-3, namespace: shop, labels: {app: cart}}
  spec: {nodeName: n2}
  status: {podIP: 10.244.2.3}
- apiVersion: v1
  kind: Pod
  metadata: {name: cart, namespace: data, labels: {app: cart}}
  spec: {nodeName: n2, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
  status: {podIP: 10.244.2.9}
- apiVersion: v1
  kind: Node
  metadata: {name: n1}
  status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
- apiVersion: v1
  kind: Service
  metadata: {name: cart, namespace: shop, labels: {tier: backend}}
  spec:
    type: NodePort
    clusterIP: 10.96.0.10
    clusterIPs: [10.96.0.10, "fd00:96::10"]
    selector: {app: cart}
    ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]
- apiVersion: v1
  kind: Service
  metadata: {name: local, namespace: shop}
  spec:
    type: NodePort
    clusterIP: 10.96.0.11
    externalTrafficPolicy: Local
    selector: {app: cart}
    ports: [{port: 81, targetPort: 8080, nodePort: 30081}]
- apiVersion: v1
  kind: Service
  metadata: {name: kubernetes, namespace: default, labels: {component: apiserver, provider: kubernetes}}
  spec: {clusterIP: 10.96.0.1, ports: [{name: https, port: 443, targetPort: 6443}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: kubernetes, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}
  addressType: IPv4
  endpoints: [{addresses: [172.18.0.2]}]
  ports: [{name: https, port: 6443, protocol: TCP}]
- apiVersion: v1
  kind: Service
  metadata: {name: legacy, namespace: shop}
  spec: {clusterIP: 10.96.0.12, ports: [{port: 5432}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: legacy-a, namespace: shop, labels: {kubernetes.io/service-name: legacy}}
  addressType: IPv4
  endpoints:
  - {addresses: [192.0.2.7], conditions: {ready: true}}
  - {addresses: [10.244.1.2]}
  - {addresses: [192.0.2.8], conditions: {ready: false}}
  ports: [{port: 5432, protocol: TCP}]
"""


def inventory_of(text: str, name: str = "inv.yaml") -> Inventory:
    return build_inventory(parse_text(textwrap.dedent(text), name))


def policy_of(text: str):
    result = build_policy_set(parse_text(textwrap.dedent(text), "pol.yaml"))
    return result.policy, result.diagnostics


def cnp(egress: str, selector: str = "{app: fe}", ns: str = "shop", section: str = "egress") -> str:
    return (f"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: {ns}}}\n"
            f"spec:\n  endpointSelector: {{matchLabels: {selector}}}\n  {section}:\n"
            + textwrap.indent(textwrap.dedent(egress), "  "))


INV = inventory_of(CLUSTER)
SMAP = ServiceMap(INV)


def ep(ref: str):
    return INV.find(ref)


def backends(ref: str, port: int = 80, protocol: Protocol = Protocol.TCP, **kw) -> list[tuple[str, int]]:
    front = SMAP.frontend(ref, port, protocol)
    return sorted((b.endpoint.display, b.port) for b in SMAP.backends(front.service, front.port, **kw))


# ---- inventory ----

def test_services_and_slices_as_kubectl_prints_them():
    cart = SMAP.named("svc:shop/cart")
    assert cart.cluster_ips == (ipaddress.ip_address("10.96.0.10"), ipaddress.ip_address("fd00:96::10"))
    assert cart.selector == (("app", "cart"),) and cart.type == "NodePort"
    assert cart.ports == (ServicePort("http", Protocol.TCP, 80, "http", 30080),)
    assert cart.labels == frozenset({Label("k8s", "tier", "backend")})
    api = SMAP.named("default/kubernetes")
    assert api.selector is None and [s.name for s in api.slices] == ["kubernetes"]
    legacy = SMAP.named("shop/legacy")
    assert legacy.slices[0].endpoints[2] == SliceEndpoint((ipaddress.ip_address("192.0.2.8"),), False)
    assert SMAP.service_at(ipaddress.ip_address("fd00:96::10")) is cart


SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\n"
SLICE = ("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: e, namespace: x, labels: "
         "{kubernetes.io/service-name: s}}\n")
BAD = [
    ("port: 0", "spec:\n  ports: [{port: 0}]", "spec.ports[0].port", "port must be a number 1-65535"),
    ("lower-case protocol", "spec:\n  ports: [{port: 80, protocol: tcp}]", "spec.ports[0].protocol",
     "protocol must be TCP, UDP or SCTP"),
    ("bad target name", "spec:\n  ports: [{port: 80, targetPort: HTTP_1}]", "spec.ports[0].targetPort",
     "neither a number nor a port name"),
    ("nodePort on ClusterIP", "spec:\n  ports: [{port: 80, nodePort: 30000}]", "spec.ports[0].nodePort",
     "nodePort needs type NodePort"),
    ("unnamed ports", "spec:\n  ports: [{port: 80}, {port: 81}]", "spec.ports[0]", "names each of them"),
    ("duplicate port", "spec:\n  ports: [{name: a, port: 80}, {name: b, port: 80}]", "spec.ports[1]",
     "listed twice"),
    ("bad clusterIP", "spec:\n  clusterIP: 10.96.0.300", "spec.clusterIP", "invalid clusterIP"),
    ("clusterIPs disagree", "spec:\n  clusterIP: 10.96.0.1\n  clusterIPs: [10.96.0.2]", "spec.clusterIPs[0]",
     "differs from clusterIP"),
    ("two IPv4 clusterIPs", "spec:\n  clusterIPs: [10.96.0.1, 10.96.0.2]", "spec.clusterIPs",
     "at most one clusterIP per address family"),
    ("bad type", "spec:\n  type: Balancer", "spec.type", "type must be one of"),
    ("bad traffic policy", "spec:\n  externalTrafficPolicy: Nearest", "spec.externalTrafficPolicy",
     "must be Cluster or Local"),
]
BAD_SLICES = [
    ("address type", "addressType: IP", "addressType", "addressType must be IPv4, IPv6 or FQDN"),
    ("family", "addressType: IPv6\nendpoints: [{addresses: [10.0.0.1]}]", "endpoints[0].addresses",
     "IPv6 addresses"),
    ("address", "addressType: IPv4\nendpoints: [{addresses: [10.0.0]}]", "endpoints[0].addresses[0]",
     "invalid endpoint address"),
    ("port", "addressType: IPv4\nports: [{port: 70000}]", "ports[0].port", "port must be a number"),
    ("ready", "addressType: IPv4\nendpoints: [{addresses: [10.0.0.1], conditions: {ready: yes please}}]",
     "endpoints[0].conditions.ready", "ready must be true or false"),
]


@pytest.mark.parametrize("head,body,field,message", [(SERVICE, *b[1:]) for b in BAD] + [(SLICE, *b[1:])
                                                                                         for b in BAD_SLICES],
                         ids=[b[0] for b in BAD] + ["slice " + b[0] for b in BAD_SLICES])
def test_malformed_service_or_slice_is_an_error_with_position(head, body, field, message):
    with pytest.raises(PolicycError) as err:
        inventory_of(head + body + "\n", "inv.yaml")
    diag = err.value.diagnostics[0]
    assert (diag.file, diag.field) == ("inv.yaml", field) and message in diag.message and diag.line >= 4


def test_service_needs_its_namespace_and_a_unique_name():
    with pytest.raises(PolicycError, match="without metadata.namespace"):
        inventory_of("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n")
    twice = "- {apiVersion: v1, kind: Service, metadata: {name: s, namespace: x}}\n"
    with pytest.raises(PolicycError, match="service x/s is defined twice"):
        inventory_of("apiVersion: v1\nkind: List\nitems:\n" + twice * 2)


def test_cli_reports_a_malformed_service_with_file_and_line(tmp_path, capsys):
    inv = tmp_path / "inv.yaml"
    inv.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\nspec:\n  ports: [{port: x}]\n")
    pol = tmp_path / "p.yaml"
    pol.write_text(cnp("- toEndpoints: [{}]\n"))
    assert main(["query", str(pol), "--inventory", str(inv), "--from", "x/a", "--to", "x/b", "--port", "80/TCP"]) == 2
    assert f"{inv}:5:" in capsys.readouterr().err


# ---- backends ----

def test_named_target_port_is_resolved_per_backend_pod():
    """http is 8080 on cart-1 and 9090 on cart-2; cart-3 has no http port and is no backend of it."""
    assert backends("svc:shop/cart") == [("shop/cart-1", 8080), ("shop/cart-2", 9090)]


def test_a_selected_hostnetwork_pod_is_a_backend_at_its_node():
    """Without an EndpointSlice the backends are the selected pods; a hostNetwork pod among them is
    reached at its node's address (its traffic is its node's), never left out."""
    inv = inventory_of(CLUSTER + textwrap.dedent("""\
        - apiVersion: v1
          kind: Pod
          metadata: {name: agent, namespace: shop, labels: {app: agent}}
          spec: {nodeName: n1, hostNetwork: true}
          status: {podIP: 172.18.0.2}
        - apiVersion: v1
          kind: Service
          metadata: {name: agent, namespace: shop}
          spec: {clusterIP: 10.96.0.20, selector: {app: agent}, ports: [{port: 9100}]}
        """))
    smap = ServiceMap(inv)
    front = smap.frontend("svc:shop/agent", 9100, Protocol.TCP)
    assert [(b.endpoint.display, b.port, b.node) for b in smap.backends(front.service, front.port)] == [
        ("n1", 9100, "n1")]


def test_slices_are_the_backends_and_not_ready_ones_are_skipped():
    assert backends("svc:shop/legacy", 5432) == [("192.0.2.7", 5432), ("shop/cart-1", 5432)]
    assert backends("svc:default/kubernetes", 443) == [("n1", 6443)]


def test_address_family_and_local_traffic_policy_narrow_the_backends():
    v6 = SMAP.frontend("fd00:96::10", 80, Protocol.TCP)
    assert v6.family == 6
    assert [b.endpoint.display for b in SMAP.backends(v6.service, v6.port, family=6)] == ["shop/cart-1"]
    local = SMAP.frontend("172.18.0.2", 30081, Protocol.TCP)
    assert local.node == "n1" and "NodePort n1:30081" in local.via
    assert [b.endpoint.display for b in SMAP.backends(local.service, local.port, local.node)] == ["shop/cart-1"]
    assert SMAP.frontend("n1", 30080, Protocol.TCP).node is None  # externalTrafficPolicy: Cluster
    assert SMAP.frontend("n1", 30099, Protocol.TCP) is None


def test_unknown_service_or_port_is_a_clear_error():
    with pytest.raises(PolicycError, match="did you mean 'svc:shop/cart'"):
        SMAP.named("svc:shop/carts")
    with pytest.raises(PolicycError, match=r"no port 81/TCP \(its ports: 80/TCP http -> http\)"):
        SMAP.frontend("svc:shop/cart", 81, Protocol.TCP)


# ---- toServices ----

def test_to_services_parses_to_unresolved_peers():
    policy, diags = policy_of(cnp("""\
        - toServices:
          - k8sService: {serviceName: cart, namespace: shop}
          - k8sService: {serviceName: cart}
          - k8sServiceSelector: {selector: {matchLabels: {tier: backend}}, namespace: ""}
        """))
    assert not diags
    refs = [p.service for p in policy.rules[0].peers]
    assert refs[:2] == [ServiceRef("shop", "cart"), ServiceRef(None, "cart")]
    assert refs[2].namespace is None and refs[2].selector.matches(frozenset({Label("k8s", "tier", "backend")}))
    assert all(isinstance(p, SelectorPeer) and not p.selectors for p in policy.rules[0].peers)


@pytest.mark.parametrize("egress,section,code", [
    ("- toServices: [{k8sService: {serviceName: cart}}]\n", "egressDeny", "toservices-deny"),
    ("- toServices: [{k8sService: {serviceName: a}, k8sServiceSelector: {selector: {}}}]\n", "egress",
     "toservices-both"),
    ("- toServices: [{k8sService: {namespace: shop}}]\n", "egress", "toservices-no-name"),
])
def test_to_services_traps_are_warnings(egress, section, code):
    _, diags = policy_of(cnp(egress, section=section))
    assert [d.code for d in diags] == [code]


def test_to_services_errors():
    _, diags = policy_of(cnp("- toServices: [{k8sServiceSelector: {namespace: shop}}]\n"))
    assert "needs a selector" in diags[0].message and diags[0].field.endswith("toServices[0].k8sServiceSelector")
    _, diags = policy_of(cnp("- toServices: [{k8sService: {serviceName: a}}]\n  toEndpoints: [{}]\n"))
    assert "combining toEndpoints and toServices" in diags[0].message  # R1.13


def _allowed_backends(policy_text: str, to: str, port: int) -> dict[str, bool]:
    policy = bind(policy_of(policy_text)[0], INV.services)
    front = SMAP.frontend(to, port, Protocol.TCP)
    verdict = decide(Evaluator(policy), SMAP, ep("shop/fe"), front)
    return {b.endpoint.display: v.allowed for b, v in verdict.backends}


def test_to_services_is_the_service_pods_in_its_namespace():
    """R10.6: the Service's selector in the Service's namespace; data/cart carries app=cart too."""
    policy = bind(policy_of(cnp("- toServices: [{k8sService: {serviceName: cart, namespace: shop}}]\n"))[0],
                  INV.services)
    ev = Evaluator(policy)
    ok = {ref: ev.evaluate(Flow(ep("shop/fe"), ep(ref), Protocol.TCP, 8080)).allowed
          for ref in ("shop/cart-1", "shop/cart-3", "data/cart")}
    assert ok == {"shop/cart-1": True, "shop/cart-3": True, "data/cart": False}


def test_to_services_without_selector_is_cidrs_that_never_select_pods():
    """R10.6/R7.1: legacy's slice lists 192.0.2.7 and cart-1's address; only the outside one is allowed."""
    got = _allowed_backends(cnp("- toServices: [{k8sService: {serviceName: legacy, namespace: shop}}]\n"),
                            "svc:shop/legacy", 5432)
    assert got == {"192.0.2.7": True, "shop/cart-1": False}
    policy = bind(policy_of(cnp("- toServices: [{k8sService: {serviceName: legacy}}]\n"))[0], INV.services)
    assert CIDRPeer(ipaddress.ip_network("192.0.2.7/32")) in policy.rules[0].peers
    assert CIDRPeer(ipaddress.ip_network("192.0.2.8/32")) not in policy.rules[0].peers  # not ready


def test_to_services_selector_matches_service_labels_in_any_namespace():
    """R10.7: no namespace is every namespace; k8sServiceSelector reads the Service's labels, not its pods'."""
    by_labels = cnp("- toServices: [{k8sServiceSelector: {selector: {matchLabels: {tier: backend}}}}]\n")
    assert _allowed_backends(by_labels, "svc:shop/cart", 80) == {"shop/cart-1": True, "shop/cart-2": True}
    by_pod_labels = cnp("- toServices: [{k8sServiceSelector: {selector: {matchLabels: {app: cart}}}}]\n")
    assert _allowed_backends(by_pod_labels, "svc:shop/cart", 80) == {"shop/cart-1": False, "shop/cart-2": False}


def test_to_services_ports_are_backend_ports():
    got = _allowed_backends(cnp("""\
        - toServices: [{k8sService: {serviceName: cart, namespace: shop}}]
          toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
        """), "svc:shop/cart", 80)
    assert got == {"shop/cart-1": False, "shop/cart-2": True}


def test_to_services_in_deny_denies_nothing_and_unmatched_allows_nothing():
    deny = policy_of(cnp("- toServices: [{k8sService: {serviceName: cart}}]\n", section="egressDeny"))[0]
    assert bind(deny, INV.services) == deny
    assert _allowed_backends(cnp("- toServices: [{k8sService: {serviceName: carts}}]\n"), "svc:shop/cart", 80) \
        == {"shop/cart-1": False, "shop/cart-2": False}


def test_hairpin_meets_no_policy_and_a_cidr_over_the_cluster_ip_never_matches():
    policy = bind(policy_of(cnp("- toCIDR: [10.96.0.0/12]\n", selector="{app: cart}"))[0], INV.services)
    front = SMAP.frontend("10.96.0.10", 80, Protocol.TCP)
    got = decide(Evaluator(policy), SMAP, ep("shop/cart-1"), front)
    reasons = {b.endpoint.display: (v.allowed, v.egress.reason) for b, v in got.backends}
    assert reasons == {"shop/cart-1": (True, Reason.HAIRPIN), "shop/cart-2": (False, Reason.DEFAULT_DENY)}
    assert got.verdict == "partial"


def test_world_egress_does_not_reach_a_service_whose_backends_deny():
    policy = bind(policy_of(cnp("- toEntities: [world]\n")
                            + "---\n" + cnp("- fromEndpoints: [{matchLabels: {app: none}}]\n",
                                            selector="{app: cart}", section="ingress").replace("name: p,", "name: q,"))[0],
                  INV.services)
    got = decide(Evaluator(policy), SMAP, ep("shop/fe"), SMAP.frontend("svc:shop/cart", 80, Protocol.TCP))
    assert got.verdict == "deny" and all(v.egress.reason is Reason.DEFAULT_DENY for _, v in got.backends)


# ---- the three interpreters agree on generated clusters with Services ----

@st.composite
def with_services(draw):
    """A generated cluster plus Services over it: selectors over the generated labels, numbered or named
    (http) target ports, and selector-less Services whose slices mix pod and outside addresses."""
    inventory = draw(inventories())
    pods = list(inventory.pods)
    services = []
    for i in range(draw(st.integers(1, 3))):
        ns = draw(st.sampled_from(("x", "y")))
        target = draw(st.sampled_from((80, 8080, "http")))
        port = ServicePort("p", Protocol.TCP, 80, target)
        labels = frozenset({Label("k8s", "tier", draw(st.sampled_from(VALUES)))})
        if draw(st.booleans()):
            selector = ((draw(st.sampled_from(KEYS)), draw(st.sampled_from(VALUES))),)
            slices = ()
        else:
            selector = None
            chosen = draw(st.lists(st.sampled_from(pods + list(EXTERNALS[:2])), max_size=3, unique=True))
            slices = (EndpointSlice(ns, f"s{i}", f"s{i}", (SlicePort("p", Protocol.TCP, 8080),),
                                    tuple(SliceEndpoint(e.ips[:1]) for e in chosen)),)
        services.append(Service(ns, f"s{i}", labels, selector, "ClusterIP",
                                (ipaddress.ip_address(f"10.96.0.{i + 1}"),), (port,), slices=slices))
    return Inventory(inventory.endpoints, inventory.namespaces, inventory.cluster, services=tuple(services))


@st.composite
def service_rules(draw, inventory: Inventory):
    """A policy set plus egress allow rules to Services by name or by labels, with or without namespace."""
    policy = draw(policy_sets())
    extra = []
    for i in range(draw(st.integers(1, 2))):
        ns = draw(st.sampled_from((None, "x", "y")))
        if draw(st.booleans()):
            ref = ServiceRef(ns, draw(st.sampled_from([s.name for s in inventory.services] + ["none"])))
        else:
            ref = ServiceRef(ns, selector=Selector((Requirement("any", "tier", Op.IN, (draw(st.sampled_from(VALUES)),)),)))
        subject = draw(st.sampled_from([r.subject for r in policy.rules]))
        ports = (PortMatch(Protocol.ANY),) if draw(st.booleans()) else (PortMatch(Protocol.TCP, 8080, 8080),)
        extra.append(Rule(f"svc{i}", policy.rules[0].origin, subject, SubjectKind.ENDPOINT, Direction.EGRESS,
                          Action.ALLOW, (SelectorPeer((), "service", "", ref),), ports))
    return type(policy)(policy.rules + tuple(extra), policy.default_deny, policy.policies, policy.cluster)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_matrix_cells_equal_per_backend_evaluation(data):
    """The matrix's Service columns (reachability tables) equal the evaluator backend by backend."""
    inventory = data.draw(with_services())
    policy = bind(data.draw(service_rules(inventory)), inventory.services)
    smap = ServiceMap(inventory)
    endpoints = list(inventory.pods) + list(EXTERNALS)
    evaluator = Evaluator(policy)
    for cell in cells(policy, smap, endpoints, list(inventory.services), [(80, Protocol.TCP)]):
        want = decide(evaluator, smap, endpoints[cell.src], cell.frontend)
        assert [ok for _, ok in cell.backends] == [v.allowed for _, v in want.backends]
        assert cell.verdict == want.verdict


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_z3_agrees_with_the_evaluator_on_backend_flows(data):
    """Bound toServices peers are selector and CIDR peers: both Z3 universes decide every backend flow
    the way the evaluator does."""
    inventory = data.draw(with_services())
    policy = bind(data.draw(service_rules(inventory)), inventory.services)
    smap = ServiceMap(inventory)
    evaluator = Evaluator(policy)
    flows = [Flow(src, b.endpoint, b.protocol, b.port) for s in inventory.services for sp in s.ports
             for b in smap.backends(s, sp) for src in inventory.pods if src != b.endpoint]
    for space in (SymbolicSpace.for_rules(policy.rules, policy.default_deny), InventorySpace(inventory)):
        solver = z3.Solver()
        sym = new_flow(space, solver)
        allowed = space.allows(policy, sym)
        for flow in flows[:12]:
            solver.push()
            solver.add(*sym.fix(flow), allowed != evaluator.evaluate(flow).allowed)
            assert solver.check() == z3.unsat, flow
            solver.pop()


# ---- the commands ----

def _files(tmp_path, policy: str):
    (tmp_path / "inv.yaml").write_text(CLUSTER)
    (tmp_path / "p.yaml").write_text(policy)
    return str(tmp_path / "p.yaml"), str(tmp_path / "inv.yaml")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_query_answers_per_backend_with_the_deciding_rules(tmp_path, capsys):
    pol, inv = _files(tmp_path, cnp("""\
        - toServices: [{k8sService: {serviceName: cart, namespace: shop}}]
          toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
        """))
    code, out, _ = run(capsys, "query", pol, "--inventory", inv, "--from", "shop/fe", "--to", "svc:shop/cart",
                       "--port", "80/TCP", "--expect", "allow")
    assert code == 1
    assert "shop/fe -> svc:shop/cart 80/TCP via 10.96.0.10, fd00:96::10: PARTIAL (1 of 2 backends allowed)" in out
    assert "backend shop/cart-1 8080/TCP: ALLOW" in out and "spec.egress[0]" in out
    assert "backend shop/cart-2 9090/TCP: DENY" in out
    code, out, _ = run(capsys, "query", pol, "--inventory", inv, "--from", "shop/fe", "--to", "fd00:96::10",
                       "--port", "80/TCP", "--format", "json", "--expect", "allow")
    doc = json.loads(out)["queries"][0]
    assert code == 0 and doc["verdict"] == "allow" and doc["via"] == "fd00:96::10"
    assert [(b["backend"], b["port"], b["verdict"]) for b in doc["backends"]] == [("shop/cart-1", 8080, "allow")]
    assert doc["backends"][0]["egress"]["rules"][0]["path"] == "spec.egress[0]"


def test_query_nodeport_from_outside_is_decided_against_the_backend(tmp_path, capsys):
    pol, inv = _files(tmp_path, cnp("- fromEntities: [world]\n  toPorts: [{ports: [{port: \"9090\"}]}]\n",
                                    selector="{app: cart}", section="ingress"))
    code, out, _ = run(capsys, "query", pol, "--inventory", inv, "--from", "203.0.113.9", "--to", "172.18.0.2",
                       "--port", "30080/TCP")
    assert "via NodePort n1:30080: PARTIAL" in out
    assert "backend shop/cart-2 9090/TCP: ALLOW" in out and "backend shop/cart-1 8080/TCP: DENY" in out


def test_query_refuses_a_service_as_source(tmp_path, capsys):
    pol, inv = _files(tmp_path, cnp("- toEndpoints: [{}]\n"))
    code, _, err = run(capsys, "query", pol, "--inventory", inv, "--from", "svc:shop/cart", "--to", "shop/fe",
                       "--port", "80/TCP")
    assert code == 2 and "destination only" in err


def test_matrix_shows_services_as_columns(tmp_path, capsys):
    pol, inv = _files(tmp_path, cnp("- toEndpoints: [{matchLabels: {app: cart}}]\n  toPorts: [{ports: "
                                    "[{port: \"8080\"}]}]\n"))
    for port, service, want in (("80/TCP", "shop/cart", "~"), ("5432/TCP", "shop/legacy", "X")):
        code, out, _ = run(capsys, "matrix", pol, "--inventory", inv, "--ports", port, "--services", service)
        assert code == 0 and "Services: . every backend allowed, ~ some, X none" in out
        number = re.search(rf"(\d+) svc:{service}\b", out).group(1)
        header = next(line for line in out.splitlines() if re.fullmatch(r"[ \d]+", line))
        end = re.search(rf"\b{number}\b", header).end()
        row = next(line for line in out.splitlines() if " shop/fe " in line)
        assert row[end - 1] == want  # cart-1 on 8080 only; legacy's backends deny fe
    code, out, _ = run(capsys, "matrix", pol, "--inventory", inv, "--ports", "80/TCP", "--services",
                       "--format", "json")
    rows = [f for f in json.loads(out)["flows"] if f["to"] == "svc:shop/cart" and f["from"] == "shop/fe"]
    assert rows == [{"from": "shop/fe", "to": "svc:shop/cart", "port": 80, "protocol": "TCP", "verdict": "partial",
                     "backends": [{"backend": "shop/cart-1", "port": 8080, "verdict": "allow"},
                                  {"backend": "shop/cart-2", "port": 9090, "verdict": "deny"}]}]
    code, _, err = run(capsys, "matrix", pol, "--inventory", inv, "--external", "10.96.0.10")
    assert code == 2 and "--services shop/cart" in err


def test_without_inventory_to_services_is_named_on_stderr(tmp_path, capsys):
    pol = tmp_path / "p.yaml"
    pol.write_text(cnp("- toServices: [{k8sService: {serviceName: cart}}]\n"))
    code, _, err = run(capsys, "check", str(pol), "--fail-on", "never")
    assert code == 0 and "toServices */cart cannot be resolved without --inventory" in err


def test_service_addresses_get_an_identity_no_rule_matches():
    """R7.8 in the datapath's tables: a ClusterIP is not world (a world or CIDR rule never reaches a Service
    by its address), and an address a node holds stays the node's."""
    from policyc.compiler.lower import SERVICE_ID, lower

    policy = policy_of(cnp("- toEntities: [world]\n"))[0]
    inv = inventory_of(CLUSTER.replace("spec: {clusterIP: 10.96.0.12, ports: [{port: 5432}]}",
                                       "spec: {clusterIP: 10.96.0.12, externalIPs: [172.18.0.2], ports: [{port: 5432}]}"))
    entries = {str(e.network): (e.identity, e.source) for e in lower(policy, inv).ipcache}
    assert entries["10.96.0.10/32"] == (SERVICE_ID, "service shop/cart")
    assert entries["fd00:96::10/128"] == (SERVICE_ID, "service shop/cart")
    assert entries["172.18.0.2/32"][1] == "node n1"


# ---- the gate's model and removable rules (issue 12's verify) ----

def test_gate_fails_on_a_new_to_services_it_cannot_resolve(tmp_path, capsys):
    """Without an inventory a toServices entry allows nothing concretely, but the Service exists in the
    cluster: the gate must not pass it; with the inventory it names the new connections."""
    (tmp_path / "old.yaml").write_text(cnp("- toEndpoints: [{matchLabels: {app: db}}]\n"))
    (tmp_path / "new.yaml").write_text(cnp("- toEndpoints: [{matchLabels: {app: db}}]\n"
                                           "- toServices: [{k8sService: {serviceName: cart, namespace: shop}}]\n"))
    (tmp_path / "inv.yaml").write_text(CLUSTER)
    old, new = str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml")
    code, out, _ = run(capsys, "diff", old, new, "--no-new-access")
    assert code == 1 and "incomplete: egress widenings: toServices shop/cart added or changed" in out
    code, out, _ = run(capsys, "diff", old, old, "--no-new-access")
    assert code == 0 and "PASS" in out
    code, out, _ = run(capsys, "diff", old, new, "--no-new-access", "--inventory", str(tmp_path / "inv.yaml"))
    assert code == 1 and "incomplete" not in out
    assert re.search(r"new connection: shop/fe -> shop/cart-\d", out)


def test_gate_never_takes_a_service_address_for_world(tmp_path, capsys):
    """A CIDR over a ClusterIP never matches a connection to it (R7.8, PC022): the inventory's world has no
    Service address, so the gate sees no new access where the datapath gives none."""
    (tmp_path / "inv.yaml").write_text(CLUSTER)
    (tmp_path / "old.yaml").write_text(cnp("- toEndpoints: [{matchLabels: {app: db}}]\n"))
    (tmp_path / "new.yaml").write_text(cnp("- toCIDR: [10.96.0.10/32]\n"))
    code, out, _ = run(capsys, "diff", str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml"), "--no-new-access",
                       "--inventory", str(tmp_path / "inv.yaml"))
    assert code == 0 and "PASS" in out
    (tmp_path / "new.yaml").write_text(cnp("- toCIDR: [10.96.0.0/30]\n"))
    code, out, _ = run(capsys, "diff", str(tmp_path / "old.yaml"), str(tmp_path / "new.yaml"), "--no-new-access",
                       "--inventory", str(tmp_path / "inv.yaml"))
    assert code == 1 and "10.96.0.10" not in out


def test_paths_follow_to_services_to_the_backends(tmp_path, capsys):
    """paths, blast-radius and graph read toServices as every other command does (bound to the inventory)."""
    pol, inv = _files(tmp_path, cnp("- toServices: [{k8sService: {serviceName: cart, namespace: shop}}]\n"
                                    "  toPorts: [{ports: [{port: \"8080\"}]}]\n"))
    code, out, _ = run(capsys, "paths", "shop/fe", "shop/cart-1", pol, "--inventory", inv)
    assert code == 1 and "shop/fe -> shop/cart-1  8080/TCP" in out
    code, out, _ = run(capsys, "paths", "shop/fe", "data/cart", pol, "--inventory", inv, "--max-hops", "1")
    assert code == 0  # the Service selects shop's cart pods only
    for to in ("svc:shop/cart", "10.96.0.10"):  # a Service stands for its backends, as a connection to it ends there
        code, out, _ = run(capsys, "paths", "shop/fe", to, pol, "--inventory", inv, "-k", "5")
        assert code == 1 and {"shop/cart-1", "shop/cart-2"} <= set(re.findall(r"-> (shop/cart-\d)  8080", out))
    (tmp_path / "inv.yaml").write_text(CLUSTER.replace("  - {addresses: [192.0.2.7], conditions: {ready: true}}\n"
                                                       "  - {addresses: [10.244.1.2]}\n", ""))
    code, _, err = run(capsys, "blast-radius", "svc:shop/legacy", pol, "--inventory", inv)
    assert code == 2 and "service shop/legacy has no backend" in err


def test_verify_decides_a_service_per_backend_and_a_denial_over_no_backend_is_vacuous(tmp_path, capsys):
    """mustAllow/mustDeny to a Service hold per backend port after translation; a mustDeny to a Service
    without a ready backend checked nothing, so it is vacuous (a failure unless --allow-vacuous)."""
    pol, inv = _files(tmp_path, cnp("""\
        - toServices: [{k8sService: {serviceName: cart, namespace: shop}}]
          toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
        """))
    (tmp_path / "inv.yaml").write_text(CLUSTER + textwrap.dedent("""\
        - apiVersion: v1
          kind: Service
          metadata: {name: empty, namespace: shop}
          spec: {clusterIP: 10.96.0.21, selector: {app: none}, ports: [{port: 80}]}
        """))
    spec = tmp_path / "spec.yaml"
    spec.write_text("invariants:\n"
                    "- {name: cart-1, mustAllow: {from: shop/fe, to: {service: shop/cart}, ports: [80/TCP]}}\n"
                    "- {name: none, mustDeny: {from: shop/fe, to: {service: shop/empty}}}\n")
    code, out, _ = run(capsys, "verify", pol, "--inventory", inv, "--spec", str(spec), "-o", "json")
    got = {r["name"]: r for r in json.loads(out)["invariants"]}
    assert code == 1 and not got["cart-1"]["holds"] and "shop/cart-2 is denied (backend of service shop/cart port 80/TCP)" in got["cart-1"]["message"]
    assert got["none"]["holds"] and got["none"]["vacuous"] and "no backend" in got["none"]["message"]
    spec.write_text("invariants:\n- {name: none, mustDeny: {from: shop/fe, to: {service: shop/empty}}}\n")
    code, _, _ = run(capsys, "verify", pol, "--inventory", inv, "--spec", str(spec), "--allow-vacuous")
    assert code == 0
