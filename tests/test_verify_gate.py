"""Issue 12, item by item: a gate that never passes new access, and findings that are safe to act on.

Each case was found with `policyc query`/`matrix` as the judge; each test failed before the fix.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml

from policyc.cli import main
from policyc.compiler.evaluate import Evaluator, Flow
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.inventory import external, load_inventory, pod_labels
from policyc.compiler.ir import Endpoint, EndpointKind, Identity, Protocol
from policyc.compiler.source import load_documents
from policyc.compiler.verify.checks import run_checks
from policyc.compiler.verify.diff import semantic_diff
from test_verify_checks import replay

INVENTORY = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {kubernetes.io/metadata.name: shop}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {nodeName: n2, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: n2}
status: {podIP: 10.0.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, hostNetwork: true}
status: {podIP: 172.18.0.2}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 172.18.0.2}]}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
status: {addresses: [{type: InternalIP, address: 172.18.0.3}]}
"""


def _cnp(name: str, selector: dict, **sections) -> dict:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": "shop"}, "spec": {"endpointSelector": selector, **sections}}


def _write(path: Path, *docs) -> str:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def _policy(path: str):
    return build_policy_set(load_documents([path])).policy


@pytest.fixture
def inventory(tmp_path) -> str:
    return _write(tmp_path / "inventory.yaml", *yaml.safe_load_all(INVENTORY))


def _run(capsys, *args) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


# ---------------------------------------------------------------- items 1 and 12: caps, order, naming

def _to(app: str, port: int, **labels) -> dict:
    return {"toEndpoints": [{"matchLabels": {"app": app, **labels}}],
            "toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}]}]}


RECEIVERS = (_cnp("db", {"matchLabels": {"app": "db"}},
                  ingress=[{"fromEndpoints": [{"matchLabels": {"app": "web"}}],
                            "toPorts": [{"ports": [{"port": "5432", "endPort": 5433, "protocol": "TCP"}]}]}]),
             _cnp("api", {"matchLabels": {"app": "api"}}, ingress=[{"fromEndpoints": [{"matchLabels": {"app": "x"}}]}]))


def _one_sided(tmp_path, real: bool) -> tuple[str, str]:
    """web's egress opens 30 ports to api (whose ingress still denies them) and, if ``real``, 5433 to db
    (whose ingress admits it: a new connection); 5432 to db closes (a narrowing)."""
    web = {"matchLabels": {"app": "web"}}
    old = _cnp("web", web, egress=[_to("db", 5432), _to("db", 1)])
    new = _cnp("web", web, egress=[_to("db", 1)] + [_to("api", 1000 + i, v=str(i)) for i in range(30)]
               + ([_to("db", 5433)] if real else []))
    return _write(tmp_path / "old.yaml", old, *RECEIVERS), _write(tmp_path / "new.yaml", new, *RECEIVERS)


def test_a_cap_never_hides_a_new_connection_and_is_reported_in_every_format(tmp_path, capsys):
    old, new = _one_sided(tmp_path, real=True)
    code, out = _run(capsys, "diff", old, new, "--no-new-access", "--max-groups", "5")
    assert code == 1
    assert "new connection: shop/pod-src -> shop/pod-dst 5433/TCP: allowed by CiliumNetworkPolicy shop/web" in out
    assert "incomplete: egress widenings: stopped after 5 groups (--max-groups)" in out
    assert "newly denied: egress" in out and "5432/TCP" in out  # the narrowing search still ran
    code, out = _run(capsys, "diff", old, new, "--no-new-access", "--max-groups", "5", "--format", "json")
    doc = json.loads(out)
    assert code == 1 and not doc["gate"]["passed"] and doc["gate"]["complete"]
    assert [t["kind"] for t in doc["truncated"]] == ["widened"] and not doc["truncated"][0]["hides_new_access"]
    (opened,) = doc["gate"]["new_connections"]
    assert opened["flow"]["port"] == 5433 and opened["opened_by"][0]["path"] == "spec.egress[31]"
    code, out = _run(capsys, "diff", old, new, "--no-new-access", "--max-groups", "5", "--format", "sarif")
    notes = json.loads(out)["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert any("stopped after 5 groups" in n["message"]["text"] for n in notes)
    assert any(n["level"] == "error" and "5433/TCP" in n["message"]["text"] for n in notes)
    code, out = _run(capsys, "diff", old, new, "--no-new-access", "--max-groups", "5", "--format", "markdown")
    assert code == 1 and "#### Incomplete" in out and "**no-new-access: FAIL" in out and "5433/TCP" in out


def test_one_sided_widenings_past_the_cap_pass_the_gate_but_say_so(tmp_path, capsys):
    old, new = _one_sided(tmp_path, real=False)
    code, out = _run(capsys, "diff", old, new, "--no-new-access", "--max-groups", "5")
    assert code == 0
    assert "incomplete: egress widenings: stopped after 5 groups" in out
    assert "no-new-access: PASS" in out


def test_the_gate_fails_when_new_connections_exceed_the_cap(tmp_path, capsys):
    web = {"matchLabels": {"app": "web"}}
    old = _write(tmp_path / "old.yaml", _cnp("web", web, egress=[_to("db", 1)]))
    new = _write(tmp_path / "new.yaml", _cnp("web", web, egress=[_to("db", 1)] + [_to("db", 100 + i) for i in range(4)]))
    code, out = _run(capsys, "diff", old, new, "--no-new-access", "--max-groups", "2")
    assert code == 1 and "the search did not finish, so more may" in out
    assert "incomplete: egress widenings: stopped after 2 groups" in out


def test_caps_are_validated(tmp_path, capsys):
    old, new = _one_sided(tmp_path, real=False)
    assert main(["diff", old, new, "--max-groups", "0"]) == 2
    assert "--max-groups: expected a whole number of at least 1" in capsys.readouterr().err


# ---------------------------------------------------------------- items 2 and 3: the gate's model

API = {"matchLabels": {"app": "api"}}
FROM_WEB = {"fromEndpoints": [{"matchLabels": {"app": "web"}}]}


def _http(*entries) -> dict:
    return {**FROM_WEB, "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}], "rules": {"http": list(entries)}}]}


def test_http_widening_is_new_access_and_names_the_request(tmp_path, capsys, inventory):
    old = _write(tmp_path / "old.yaml", _cnp("api", API, ingress=[_http({"method": "GET", "path": "/public/.*"})]))
    new = _write(tmp_path / "new.yaml", _cnp("api", API, ingress=[_http({})]))
    for extra in ([], ["--inventory", inventory]):
        code, out = _run(capsys, "diff", old, new, "--no-new-access", *extra)
        assert code == 1, out
        line = next(x for x in out.splitlines() if x.startswith("  new connection:"))
        assert "8080/TCP HTTP " in line and "allowed by CiliumNetworkPolicy shop/api spec.ingress[0]" in line
        assert "GET /public/" not in line  # a request the old rule refused
    assert _run(capsys, "diff", new, old, "--no-new-access")[0] == 0  # narrowing only
    assert "newly denied" in _run(capsys, "diff", new, old)[1]
    same = _write(tmp_path / "same.yaml", _cnp("api", API, ingress=[_http({"path": "/public/.*", "method": "GET"})]))
    assert "0 finding(s)" in _run(capsys, "diff", old, same, "--fail-on-change")[1]


def test_fqdn_widening_is_new_access_but_concrete_answers_stay_honest(tmp_path, capsys):
    dns = {"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system"}}],
           "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}], "rules": {"dns": [{"matchPattern": "*"}]}}]}
    web = {"matchLabels": {"app": "web"}}
    named = {"toFQDNs": [{"matchName": "api.example.com"}],
             "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}
    old = _write(tmp_path / "old.yaml", _cnp("web", web, egress=[dns, named]))
    for wider in ({"toFQDNs": [{"matchPattern": "*"}], "toPorts": named["toPorts"]},   # any name, same port
                  {"toFQDNs": [{"matchName": "api.example.com"}]}):                    # same name, every port
        new = _write(tmp_path / "new.yaml", _cnp("web", web, egress=[dns, wider]))
        code, out = _run(capsys, "diff", old, new, "--no-new-access")
        assert code == 1 and "new connection: shop/pod-src -> " in out, out
        result = semantic_diff(_policy(old), _policy(new))
        for c in result.new_connections:
            assert c.witness.flow.dst.dns_names, "the new access is to an address learned under a name"
    # query and matrix cannot know which address a name resolves to: an address without one matches nothing
    unnamed = external(ipaddress.ip_address("192.0.2.10"))
    assert not Evaluator(_policy(old)).evaluate(Flow(_pod("web", "app=web"), unnamed, Protocol.TCP, 443)).egress.allowed


def test_gate_keeps_unchanged_fqdn_rules_that_meet_a_changed_cidr_rule(tmp_path, capsys):
    """Removing a CIDR deny opens the addresses an unchanged toFQDNs allow admits by name: the diff
    encodes only rules that can meet a changed one, and in the gate's model a name meets any address."""
    web = {"matchLabels": {"app": "web"}}
    https = {"toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}
    named = {"toFQDNs": [{"matchPattern": "*.example.com"}], **https}
    blocked = {"toCIDR": ["198.51.100.0/24"], **https}
    dns = {"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system"}}],  # R10.1: lookups
           "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}], "rules": {"dns": [{"matchPattern": "*"}]}}]}
    old = _write(tmp_path / "old.yaml", _cnp("web", web, egress=[dns, named], egressDeny=[blocked]))
    new = _write(tmp_path / "new.yaml", _cnp("web", web, egress=[dns, named]))
    code, out = _run(capsys, "diff", old, new, "--no-new-access")
    assert code == 1 and "new connection: shop/pod-src -> " in out, out
    result = semantic_diff(_policy(old), _policy(new))
    assert result.new_connections
    for c in result.new_connections:
        assert ipaddress.ip_address(c.witness.flow.dst.ips[0]) in ipaddress.ip_network("198.51.100.0/24")
        assert c.witness.flow.dst.dns_names
    assert _run(capsys, "diff", new, old, "--no-new-access")[0] == 0  # the deny back: a narrowing only
    assert "newly denied" in _run(capsys, "diff", new, old)[1]


def _pod(name: str, label: str) -> Endpoint:
    key, value = label.split("=")
    labels = pod_labels({key: value}, "shop", {"kubernetes.io/metadata.name": "shop"}, "default", "default")
    return Endpoint(EndpointKind.POD, name, "shop", (ipaddress.ip_address("10.0.1.9"),), Identity(300, labels))


def test_removing_authentication_is_new_access(tmp_path, capsys):
    required = {**FROM_WEB, "authentication": {"mode": "required"}}
    old = _write(tmp_path / "old.yaml", _cnp("api", API, ingress=[required]))
    new = _write(tmp_path / "new.yaml", _cnp("api", API, ingress=[FROM_WEB]))
    code, out = _run(capsys, "diff", old, new, "--no-new-access")
    assert code == 1 and "(without mutual authentication)" in out
    assert _run(capsys, "diff", new, old, "--no-new-access")[0] == 0
    (c,) = semantic_diff(_policy(old), _policy(new)).new_connections
    assert not c.witness.flow.authenticated
    # concrete answers assume the handshake succeeds, as before
    assert Evaluator(_policy(old)).evaluate(Flow(_pod("w", "app=web"), _pod("a", "app=api"), Protocol.TCP, 80)).allowed


# ---------------------------------------------------------------- items 4, 5, 9, 11: removable findings

def test_the_only_rule_switching_to_default_deny_is_not_called_removable(tmp_path, inventory):
    broad = _cnp("broad", API, enableDefaultDeny={"ingress": False}, ingress=[FROM_WEB])
    narrow = _cnp("narrow", API, ingress=[{**FROM_WEB, "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}])
    path = _write(tmp_path / "p.yaml", broad, narrow)
    policy, inv = _policy(path), load_inventory([inventory])
    for universe in (None, inv):
        assert not [f for f in run_checks(policy, universe) if f.check in ("PC001", "PC002", "PC003")]
    # the judge: deleting the narrow rule opens every port from db
    flow = Flow(inv.find("shop/db"), inv.find("shop/api"), Protocol.TCP, 9999)
    assert not Evaluator(policy).evaluate(flow).allowed
    assert Evaluator(policy.without([policy.rules[1].id])).evaluate(flow).allowed
    # with default-deny from the broad policy too, the narrow rule is removable
    broad["spec"]["enableDefaultDeny"]["ingress"] = True
    policy = _policy(_write(tmp_path / "p.yaml", broad, narrow))
    assert [f.check for f in run_checks(policy) if f.location.line > 8] == ["PC001"]


def test_duplicate_that_alone_implies_default_deny_is_kept(tmp_path):
    broad = _cnp("broad", API, enableDefaultDeny={"ingress": False}, ingress=[FROM_WEB])
    copy = _cnp("copy", API, ingress=[FROM_WEB])
    policy = _policy(_write(tmp_path / "p.yaml", broad, copy))
    assert "PC003" not in {f.check for f in run_checks(policy)}


def test_deny_shadowed_by_deny(tmp_path):
    path = _write(tmp_path / "p.yaml", _cnp("api", API, ingress=[FROM_WEB], ingressDeny=[
        {**FROM_WEB, "toPorts": [{"ports": [{"port": "22", "protocol": "TCP"}]}]}, FROM_WEB]))
    policy = _policy(path)
    findings = run_checks(policy)
    shadowed = [f for f in findings if f.check == "PC018"]
    assert [f.location.field for f in shadowed] == ["spec.ingressDeny[0]"]
    assert "PC005" not in {f.check for f in findings}
    replay(policy, shadowed[0])


def test_host_allow_is_always_allowed_not_dead(tmp_path, inventory):
    host = {"fromEntities": ["host"]}
    policy = _policy(_write(tmp_path / "p.yaml", _cnp("api", API, ingress=[host], ingressDeny=[host])))
    for universe in (None, load_inventory([inventory])):
        findings = run_checks(policy, universe)
        by_check = {f.check: f for f in findings}
        assert "PC002" not in by_check
        # the deny is ineffective too, but not once the allow is gone: deleting both would take the only
        # rules that switch api to ingress default-deny, so only the allow is reported (they hold together)
        assert "always allowed" in by_check["PC001"].message and "PC005" not in by_check
        for f in findings:
            replay(policy, f)


def test_covered_http_entry_and_dns_pattern(tmp_path):
    http = _http({"method": "GET", "path": "/api/.*"}, {"method": "GET", "path": "/api/v1"},
                 {"method": "GET|POST", "path": "/x"})
    dns = {"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system"}}],
           "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}], "rules": {"dns": [
               {"matchPattern": "*.example.com"}, {"matchName": "api.example.com"}, {"matchPattern": "**.example.org"}]}}]}
    policy = _policy(_write(tmp_path / "p.yaml", _cnp("api", API, ingress=[http], egress=[dns])))
    found = sorted((f.location.field, f.key) for f in run_checks(policy) if f.check == "PC019")
    assert found == [("spec.egress[0]", "dns[1]"), ("spec.ingress[0]", "http[1]")]
    for f in run_checks(policy):
        replay(policy, f)


# ---------------------------------------------------------------- item 6: exposure as sets

@pytest.mark.parametrize("peer,ports,want", [
    ({"fromCIDR": ["0.0.0.0/1", "128.0.0.0/1"]}, None, "PC011"),
    ({"fromEntities": ["world"]}, [{"port": "1", "endPort": 65535, "protocol": "UDP"}], "PC011"),
    ({"fromCIDRSet": [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}]}, [{"port": "443", "protocol": "TCP"}], "PC010"),
    ({"fromCIDR": ["0.0.0.0/1"]}, None, None),
    ({"fromEntities": ["world"]}, [{"port": "1", "endPort": 65534, "protocol": "UDP"}], "PC010"),
])
def test_exposure_is_semantic(tmp_path, peer, ports, want):
    rule = {**peer, **({"toPorts": [{"ports": ports}]} if ports else {})}
    policy = _policy(_write(tmp_path / "p.yaml", _cnp("api", API, ingress=[rule])))
    got = [f.check for f in run_checks(policy) if f.check in ("PC010", "PC011")]
    assert got == ([want] if want else [])


# ---------------------------------------------------------------- item 7: ICMP and its address family

def test_icmp_is_tied_to_its_family(tmp_path, capsys):
    echo4 = {"fromEntities": ["world"], "icmps": [{"fields": [{"type": 8, "family": "IPv4"}]}]}
    path = _write(tmp_path / "p.yaml", _cnp("api", API, ingress=[echo4]))
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"apiVersion": "policyc.io/v1alpha1", "kind": "VerificationSpec", "invariants": [
        {"name": "no echo from IPv6", "mustDeny": {"from": {"cidr": "::/0"}, "to": "namespace=shop,app=api",
                                                   "ports": ["8/ICMP"]}}]}))
    assert main(["verify", path, "--spec", str(spec)]) == 0, capsys.readouterr().out
    wider = _write(tmp_path / "q.yaml", _cnp("api", API, ingress=[{**echo4, "fromEntities": ["world", "world-ipv6"]}]))
    assert "0 finding(s)" in _run(capsys, "diff", path, wider, "--fail-on-change")[1]


# ---------------------------------------------------------------- item 8: hostNetwork pods are their node

def test_host_network_pod_carries_its_nodes_identity(tmp_path, inventory, capsys):
    inv = load_inventory([inventory])
    assert "agent" not in {p.name for p in inv.pods}
    assert inv.find("shop/agent") == inv.find("n1")
    path = _write(tmp_path / "p.yaml", _cnp("api", API, ingress=[FROM_WEB]))
    code, out = _run(capsys, "query", path, "--inventory", inventory, "--from", "shop/agent", "--to", "shop/api",
                     "--port", "80/TCP", "--expect", "deny")
    assert code == 0, out  # app=web on the pod does not count: its traffic is the node's (remote-node on n2)


# ---------------------------------------------------------------- item 10: port ranges as narrow as they are

def test_ports_are_named_ports_and_icmp_types(tmp_path, capsys, inventory):
    old = _write(tmp_path / "old.yaml", _cnp("api", API, ingress=[
        {**FROM_WEB, "toPorts": [{"ports": [{"port": "9090", "protocol": "TCP"}]}]}]))
    new = _write(tmp_path / "new.yaml", _cnp("api", API, ingress=[
        {**FROM_WEB, "toPorts": [{"ports": [{"port": "9090", "protocol": "TCP"}, {"port": "http", "protocol": "TCP"}]}]},
        {**FROM_WEB, "icmps": [{"fields": [{"type": 8, "family": "IPv4"}]}]}]))
    ports = {p for c in semantic_diff(_policy(old), _policy(new)).changes for p in c.ports}
    assert ports == {"http/TCP", "8/ICMP"}
    ports = {p for c in semantic_diff(_policy(old), _policy(new), load_inventory([inventory])).changes for p in c.ports}
    assert ports == {"8080/TCP", "8/ICMP"}
