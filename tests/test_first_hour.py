"""A newcomer's first hour (issue 16): answers that never mislead, bad input reaching code scanning,
kinds read the way Cilium reads them. Each test fails on the behaviour the issue saw."""
from __future__ import annotations

import json

import jsonschema

from cases import E2E_INVENTORY, own
from policyc.cli import main
from test_sarif import SUBSET

CASE = own("L12-knp-pod-peer-is-own-namespace")  # x/a admits only x/b, on 80/TCP
POLICY = str(CASE / "policies")
INV = str(E2E_INVENTORY)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def validate_one(capsys, tmp_path, text: str) -> tuple[int, dict]:
    """`validate -o json` of one file that must give exactly one diagnostic."""
    p = tmp_path / "p.yaml"
    p.write_text(text)
    code, out, _ = run(capsys, "validate", str(p), "-o", "json")
    (diag,) = json.loads(out)["diagnostics"]
    return code, diag


# -- item 2: silent wrong answers with exit 0 -----------------------------------------------------------

def test_spec_peer_written_ns_slash_pod_is_that_pod(capsys, tmp_path):
    """`from: x/c` was read as a label key no pod has, so a false mustDeny passed "vacuously"."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("invariants:\n- name: b reaches a\n  mustDeny: {from: x/b, to: x/a, ports: [80/TCP]}\n"
                    "- name: c is kept out\n  mustDeny: {from: x/c, to: x/a, ports: [80/TCP]}\n")
    code, out, _ = run(capsys, "verify", POLICY, "--inventory", INV, "--spec", str(spec))
    assert code == 1
    assert "FAIL mustDeny 'b reaches a'" in out and "PASS mustDeny 'c is kept out'" in out


def test_spec_selector_matching_no_pod_warns(capsys, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("invariants:\n- name: typo\n  mustDeny: {from: 'pod=bb', to: 'pod=a'}\n")
    code, _, err = run(capsys, "verify", POLICY, "--inventory", INV, "--spec", str(spec))
    assert code == 1 and "pods(pod=bb) matches no pod of the inventory" in err  # checked nothing: no pass
    assert run(capsys, "verify", POLICY, "--inventory", INV, "--spec", str(spec), "--allow-vacuous")[0] == 0


def test_inventory_without_namespaces_pods_or_nodes_is_an_error(capsys):
    """`--inventory` naming the policies (or the spec) was an empty cluster: every answer vacuous."""
    for cmd in (["matrix", POLICY], ["check", POLICY], ["query", POLICY, "--from", "x/b", "--to", "x/a",
                                                         "--port", "80/TCP"]):
        code, _, err = run(capsys, *cmd, "--inventory", POLICY)
        assert code == 2 and "no Namespace, Pod or Node in it" in err, cmd


def test_validate_and_check_of_no_policy_are_errors(capsys, tmp_path):
    (tmp_path / "pods.yaml").write_text(E2E_INVENTORY.read_text())
    for cmd in ("validate", "check"):
        code, out, err = run(capsys, cmd, str(tmp_path))
        assert code == 2 and "no network policy" in out + err, cmd
    code, _, err = run(capsys, "matrix", str(tmp_path), "--inventory", INV, "--ports", "80/TCP")
    assert code == 2 and "none of them a network policy" in err  # objects, but the wrong ones (attack M4)
    (tmp_path / "pods.yaml").unlink()
    code, _, err = run(capsys, "matrix", str(tmp_path), "--inventory", INV, "--ports", "80/TCP")
    assert code == 0 and "warning" in err and "no network policy" in err  # no policy at all: a legitimate question


# -- item 3: SARIF when inputs are invalid ----------------------------------------------------------------

def test_check_sarif_of_an_invalid_policy_is_a_sarif_log_with_the_error(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CASE / "policies" / "policy.yaml").read_text().replace("podSelector", "podSelektor", 1))
    for cmd in ("check", "validate", "diff"):
        argv = [cmd, str(bad), "-o", "sarif"] if cmd != "diff" else [cmd, POLICY, str(bad), "-o", "sarif"]
        code, out, _ = run(capsys, *argv)
        assert code == 2, cmd
        log = json.loads(out)
        jsonschema.Draft4Validator(SUBSET).validate(log)
        (result,) = [r for r in log["runs"][0]["results"] if r["ruleId"] == "unknown-field"]
        assert result["level"] == "error" and "podSelektor" in result["message"]["text"]
        region = result["locations"][0]["physicalLocation"]["region"]
        assert (region["startLine"], region["startColumn"]) == (5, 3), cmd


# -- item 7: the CRD's protocol enum; codes on every JSON diagnostic -------------------------------------

def test_lower_case_protocol_is_an_error(capsys, tmp_path):
    code, diag = validate_one(capsys, tmp_path, "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"
                              "metadata: {name: p, namespace: x}\nspec:\n  endpointSelector: {}\n  ingress:\n"
                              "  - toPorts: [{ports: [{port: '80', protocol: tcp}]}]\n")
    assert code == 2 and diag["code"] == "invalid-protocol" and "write 'TCP'" in diag["message"]


def test_every_json_diagnostic_has_a_code(capsys, tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: x}\n"
                 "spec:\n  endpointSelector: {}\n  ingres: [{}]\n  egress: [{toPorts: [{ports: [{port: '99999'}]}]}]\n")
    code, out, _ = run(capsys, "validate", str(p), "-o", "json")
    codes = [d["code"] for d in json.loads(out)["diagnostics"]]
    assert code == 2 and codes[0] == "unknown-field" and all(codes)
    code, _, err = run(capsys, "query", str(p), "--inventory", INV, "--from", "x/a", "--to", "x/b", "--port", "1",
                       "-o", "json")
    assert code == 2 and all(d["code"] for d in json.loads(err)["diagnostics"])


# -- item 10: kinds and rules as Cilium reads them --------------------------------------------------------

def test_non_policy_cilium_kinds_are_skipped(capsys, tmp_path):
    p = tmp_path / "mixed.yaml"
    p.write_text((CASE / "policies" / "policy.yaml").read_text() + "".join(
        f"---\napiVersion: cilium.io/v2\nkind: {k}\nmetadata: {{name: n}}\nspec: {{}}\n"
        for k in ("CiliumEnvoyConfig", "CiliumClusterwideEnvoyConfig", "CiliumL2AnnouncementPolicy",
                  "CiliumBGPClusterConfig", "CiliumNodeConfig")))
    code, out, _ = run(capsys, "validate", str(p), "-v")
    assert code == 0 and "valid: 1 policies" in out and out.count("skipped (not a network policy)") == 5
    p.write_text(p.read_text() + "---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolcy\nmetadata: {name: t}\n")
    code, out, _ = run(capsys, "validate", str(p))
    assert code == 2 and "did you mean 'CiliumNetworkPolicy'?" in out


def test_extended_ip_protocol_is_reported_as_such(capsys, tmp_path):
    """`protocol: VRRP` with no port is valid Cilium (enable-extended-ip-protocols), not "port is required"."""
    code, diag = validate_one(capsys, tmp_path, "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n"
                              "metadata: {name: vrrp}\nspec:\n  nodeSelector: {}\n  ingress:\n"
                              "  - toPorts: [{ports: [{protocol: VRRP}]}]\n")
    assert code == 2 and diag["code"] == "unsupported-protocol" and "port is required" not in diag["message"]


def test_ccnp_without_any_section_is_rejected(capsys, tmp_path):
    code, diag = validate_one(capsys, tmp_path, "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\n"
                              "metadata: {name: c}\nspec:\n  endpointSelector: {matchLabels: {app: x}}\n")
    assert code == 2 and diag["code"] == "empty-rule" and diag["severity"] == "error"
