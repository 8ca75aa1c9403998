"""The adversarial review of issue 12's gate (attack findings on diff, check, verify), one test per
finding; each failed before its fix."""
from __future__ import annotations

import pytest

from policyc.compiler.inventory import load_inventory
from policyc.compiler.verify.checks import run_checks
from test_verify_gate import API, FROM_WEB, _cnp, _http, _policy, _run, _write, inventory  # noqa: F401

WEB = {"matchLabels": {"app": "web"}}
TOKEN = {"name": "X-Token", "value": "s3cret"}


def _tls(**fields) -> dict:
    return {"toEntities": ["world"], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}], **fields}]}


# ---------------------------------------------------------------- findings 2, 7, 8: headerMatches, TLS

@pytest.mark.parametrize("old_rule, new_rule, section", [
    (_http({"method": "GET", "headerMatches": [TOKEN]}), _http({"method": "GET"}), "ingress"),
    (_http({"method": "GET", "headerMatches": [TOKEN]}),
     _http({"method": "GET", "headerMatches": [{**TOKEN, "value": "other"}]}), "ingress"),
    (_tls(serverNames=["api.example.com"]), _tls(), "egress"),
    (_tls(listener={"envoyConfig": {"kind": "CiliumEnvoyConfig", "name": "x"}, "name": "l"}), _tls(), "egress"),
    (_tls(originatingTLS={"secret": {"name": "ca"}}), _tls(), "egress"),
])
def test_removing_what_policyc_cannot_read_is_not_no_change(tmp_path, capsys, inventory, old_rule, new_rule,
                                                            section):
    """headerMatches, serverNames, TLS and listener were dropped from the IR: old and new compared equal
    and the gate passed. Each is now an opaque condition: its removal may admit requests it refused."""
    subject = API if section == "ingress" else WEB
    old = _write(tmp_path / "old.yaml", _cnp("x", subject, **{section: [old_rule]}))
    new = _write(tmp_path / "new.yaml", _cnp("x", subject, **{section: [new_rule]}))
    for extra in ([], ["--inventory", inventory]):
        code, out = _run(capsys, "diff", old, new, "--no-new-access", *extra)
        assert code == 1 and "new connection:" in out and "not met)" in out, out
    assert _run(capsys, "diff", old, old, "--no-new-access")[0] == 0


@pytest.mark.parametrize("first, second", [
    (_http({"method": "GET", "headerMatches": [TOKEN]}), _http({"method": "GET"})),
    (_tls(serverNames=["api.example.com"]), _tls()),
])
def test_rules_that_differ_in_unread_fields_are_no_duplicates(tmp_path, first, second):
    """PC003 called them duplicates ("remove one"): deleting the one without the condition refuses requests."""
    section = "ingress" if "fromEndpoints" in first else "egress"
    path = _write(tmp_path / "p.yaml", _cnp("x", API if section == "ingress" else WEB, **{section: [first, second]}))
    codes = {f.check for f in run_checks(_policy(path))}
    assert "PC003" not in codes, codes


def test_an_entry_without_header_matches_is_not_shadowed_by_one_with_them(tmp_path):
    """PC019 said http[1] (GET /a) admits nothing http[0] (GET /a with a header match) does not: deleting
    it refuses every GET /a without the header. The entry with the condition is the covered one."""
    path = _write(tmp_path / "p.yaml", _cnp("x", API, ingress=[
        _http({"method": "GET", "path": "/a", "headerMatches": [TOKEN]}, {"method": "GET", "path": "/a"})]))
    (finding,) = [f for f in run_checks(_policy(path)) if f.check == "PC019"]
    assert finding.message.startswith("http[0] ({method: GET, path: /a, headerMatches: [")
    assert finding.key == "http[0]"


# ---------------------------------------------------------------- findings 3 and 5: toFQDNs

DNS = {"toEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns"}}],
       "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}], "rules": {"dns": [{"matchPattern": "*"}]}}]}
DNS_PLAIN = {**DNS, "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}]}
ANY_NAME = {"toFQDNs": [{"matchPattern": "*"}], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}


def test_verify_never_proves_a_deny_a_fqdn_allow_can_break(tmp_path, capsys):
    """mustDeny web → world passed (FQDN peers matched nothing in verify's model) although web reaches
    every address a DNS answer names. Without a DNS rule toFQDNs stays dormant and the deny holds."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("invariants:\n- name: no-world\n  mustDeny: {from: 'namespace=shop,app=web', to: {entity: world}}\n")
    live = _write(tmp_path / "live.yaml", _cnp("x", WEB, egress=[DNS, ANY_NAME]))
    code, out = _run(capsys, "verify", live, "--spec", str(spec))
    assert code == 1 and "FAIL mustDeny 'no-world'" in out and "443/TCP" in out, out
    dormant = _write(tmp_path / "dormant.yaml", _cnp("x", WEB, egress=[DNS_PLAIN, ANY_NAME]))
    code, out = _run(capsys, "verify", dormant, "--spec", str(spec))
    assert code == 0 and "PASS mustDeny 'no-world'" in out, out


def test_a_dns_rule_that_wakes_a_dormant_fqdn_allow_is_new_access(tmp_path, capsys, inventory):
    """The gate assumed lookups proxied on both sides, so the DNS rule that makes toFQDNs match passed."""
    old = _write(tmp_path / "old.yaml", _cnp("x", WEB, egress=[DNS_PLAIN, ANY_NAME]))
    new = _write(tmp_path / "new.yaml", _cnp("x", WEB, egress=[DNS, ANY_NAME]))
    for extra in ([], ["--inventory", inventory]):
        code, out = _run(capsys, "diff", old, new, "--no-new-access", *extra)
        assert code == 1 and "443/TCP: allowed by CiliumNetworkPolicy shop/x spec.egress[1]" in out, out
    assert _run(capsys, "diff", new, new, "--no-new-access")[0] == 0


# ---------------------------------------------------------------- finding 6: L7 without default deny

@pytest.mark.parametrize("new_rule", [_http({}), {**FROM_WEB, "toPorts": [{"ports": [{"port": "8080", "protocol": "TCP"}]}]}])
def test_http_widening_without_default_deny_is_new_access(tmp_path, capsys, new_rule):
    """With enableDefaultDeny ingress false Cilium's proxy still filters the redirected port (R3.4c):
    widening the HTTP filter (or dropping it) admits requests it refused; the gate passed both."""
    sections = {"enableDefaultDeny": {"ingress": False}}
    old = _write(tmp_path / "old.yaml", _cnp("x", API, ingress=[_http({"method": "GET", "path": "/public/.*"})],
                                              **sections))
    new = _write(tmp_path / "new.yaml", _cnp("x", API, ingress=[new_rule], **sections))
    code, out = _run(capsys, "diff", old, new, "--no-new-access")
    assert code == 1 and "8080/TCP HTTP" in out and "GET /public/" not in out, out
    assert _run(capsys, "diff", new, old, "--no-new-access")[0] == 0


# ---------------------------------------------------------------- finding 9: protocols beyond the five

def test_an_l3_only_allow_opens_protocols_no_rule_names(tmp_path, capsys, inventory):
    """ANY (TCP, UDP, SCTP) turned into an L3-only allow opens ICMP and also GRE, ESP, ...: flows had
    five protocols only, so with every ICMP type allowed before (the attack's case) the gate passed."""
    db = {"matchLabels": {"app": "db"}}
    old = _write(tmp_path / "old.yaml", _cnp("x", db, ingress=[
        {**FROM_WEB, "toPorts": [{"ports": [{"port": "0", "protocol": "ANY"}]}]}]))
    new = _write(tmp_path / "new.yaml", _cnp("x", db, ingress=[FROM_WEB]))
    for extra in ([], ["--inventory", inventory]):
        code, out = _run(capsys, "diff", old, new, "--no-new-access", *extra)
        assert code == 1 and "*/OTHER (allowed by CiliumNetworkPolicy shop/x spec.ingress[0]" in out, out
    code, out = _run(capsys, "query", new, "--inventory", inventory, "--from", "shop/web", "--to", "shop/db",
                     "--port", "0/OTHER")
    assert code == 0 and "ALLOW" in out, out


# ---------------------------------------------------------------- finding 10: authentication modes

def test_test_always_fail_denies_and_changing_it_to_required_is_new_access(tmp_path, capsys, inventory):
    """Cilium's handler for test-always-fail errors on every handshake (pkg/auth): the flow never
    connected, so query said ALLOW wrongly and the switch to `required` passed the gate."""
    db = {"matchLabels": {"app": "db"}}

    def rule(mode: str) -> dict:
        return {**FROM_WEB, "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}],
                "authentication": {"mode": mode}}
    old = _write(tmp_path / "old.yaml", _cnp("x", db, ingress=[rule("test-always-fail")]))
    new = _write(tmp_path / "new.yaml", _cnp("x", db, ingress=[rule("required")]))
    code, out = _run(capsys, "query", old, "--inventory", inventory, "--from", "shop/web", "--to", "shop/db",
                     "--port", "5432/TCP")
    assert "DENY" in out and "ALLOW" not in out.splitlines()[0], out
    code, out = _run(capsys, "diff", old, new, "--no-new-access")
    assert code == 1 and "5432/TCP (without mutual authentication): allowed by CiliumNetworkPolicy shop/x" in out, out
    assert _run(capsys, "diff", new, old, "--no-new-access")[0] == 0


# ---------------------------------------------------------------- finding 11: removal advice and new pods

def test_removal_advice_holds_for_pods_created_later(tmp_path, inventory):
    """With --inventory, PC018 called a namespace-wide deny removable because today's pods of the
    namespace each have a per-app deny; deleting it opens the namespace to every pod created later."""
    shop = "k8s:io.kubernetes.pod.namespace"
    denies = [{"toEndpoints": [{"matchLabels": {shop: "shop", "app": app}}]} for app in ("web", "api", "db")]
    wide = {"toEndpoints": [{"matchLabels": {shop: "shop"}}], "toPorts": [{"ports": [{"port": "0", "protocol": "ANY"}]}]}
    path = _write(tmp_path / "p.yaml", _cnp("guard", {}, egressDeny=[denies[0], wide, *denies[1:]],
                                            egress=[{"toEntities": ["all"]}]))
    for universe in (None, load_inventory([inventory])):
        assert not [f for f in run_checks(_policy(path), universe) if f.check == "PC018"]


# ---------------------------------------------------------------- finding 13: the DNS rule toFQDNs needs

def test_a_dns_rule_toFQDNs_depends_on_is_not_ineffective(tmp_path):
    """PC013 called the DNS rule bypassed by a plain 53/UDP allow; deleting it, as advised, stops the
    proxy from seeing lookups and toFQDNs then matches nothing (R10.1)."""
    named = {"toFQDNs": [{"matchName": "api.example.com"}], "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}
    path = _write(tmp_path / "p.yaml", _cnp("x", WEB, egress=[DNS_PLAIN, DNS, named]))
    assert "PC013" not in {f.check for f in run_checks(_policy(path))}
    alone = _write(tmp_path / "q.yaml", _cnp("x", WEB, egress=[DNS_PLAIN, DNS]))
    assert "PC013" in {f.check for f in run_checks(_policy(alone))}  # nothing depends on it: still reported


# ---------------------------------------------------------------- finding 4: ICMPv6 between IPv4-only ends

def test_query_matrix_and_diff_agree_that_ipv4_only_ends_send_no_icmpv6(tmp_path, capsys, inventory):
    """The inventory is IPv4-only: an ICMPv6 echo between its pods is no packet at all. diff already said
    "nothing changed"; query and matrix answered ALLOW, so the judge contradicted the gate."""
    def icmp(*fields) -> str:
        return _write(tmp_path / f"p{len(fields)}.yaml", _cnp("x", WEB, egress=[{"icmps": [{"fields": list(fields)}]}]))
    old, new = icmp({"type": 8}), icmp({"type": 8}, {"type": "EchoRequest", "family": "IPv6"})
    code, out = _run(capsys, "query", new, "--inventory", inventory, "--from", "shop/web", "--to", "shop/db",
                     "--port", "128/ICMPv6")
    assert "DENY" in out.splitlines()[0] and "no such packet" in out, out
    code, out = _run(capsys, "matrix", new, "--inventory", inventory, "--ports", "128/ICMPv6", "-o", "json")
    assert '"verdict": "allow"' not in out
    assert _run(capsys, "diff", old, new, "--inventory", inventory, "--no-new-access")[0] == 0
    assert _run(capsys, "diff", old, new, "--no-new-access")[0] == 1  # invented pods may have IPv6


# ---------------------------------------------------------------- finding 12: witnesses query can replay

def test_query_takes_the_reserved_identities_witnesses_name(tmp_path, capsys, inventory):
    """diff named `a/db -> reserved:init` as a new connection, and query refused the name (exit 2)."""
    deny = _write(tmp_path / "deny.yaml", _cnp("x", WEB, egressDeny=[{"toEntities": ["init"]}],
                                               egress=[{"toEntities": ["all"]}]))
    code, out = _run(capsys, "query", deny, "--inventory", inventory, "--from", "shop/web", "--to", "reserved:init",
                     "--port", "443/TCP")
    assert code == 0 and out.startswith("shop/web -> reserved:init 443/TCP: DENY"), out
    code, out = _run(capsys, "query", deny, "--inventory", inventory, "--from", "shop/web", "--to",
                     "reserved:nope", "--port", "443/TCP")
    assert code == 2
