"""A new user's attack on a fresh clone (wrong answers, crashes, misleading output): each test replays
one finding with the shop example and fails on the behaviour the attack saw. The ids (W2, C1, M5,
K...) are those of the attack report; the choices made are written in docs/cli.md and docs/semantics.md."""
from __future__ import annotations

import io
import json
import os
import sys
import threading

import pytest
import yaml

from cases import ROOT
from policyc.cli import main
from policyc.compiler import source
from policyc.compiler.frontend import load_policies

P = str(ROOT / "examples" / "shop" / "policies")
INV_PATH = ROOT / "examples" / "shop" / "inventory.yaml"
INV = str(INV_PATH)
CNP = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n"


def run(capsys, *argv: str, stdin: bytes | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        source._stdin_bytes.cache_clear()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    if stdin is not None:
        source._stdin_bytes.cache_clear()
    return code, out, err


def validate_cnp(capsys, tmp_path, body: str, *options: str) -> tuple[int, str]:
    """`validate` of one CiliumNetworkPolicy file holding ``body`` after its kind."""
    p = tmp_path / "p.yaml"
    p.write_text(CNP + body)
    code, out, _ = run(capsys, "validate", p, *options)
    return code, out


def flows(capsys, *argv) -> dict:
    """``query ... -o json`` as {(from, to, port): verdict}."""
    code, out, err = run(capsys, "query", P, "--inventory", INV, *argv, "-o", "json")
    assert code == 0, err
    return {(q["from"], q["to"], q["port"]): q["verdict"] for q in json.loads(out)["queries"]}


def inventory_without(tmp_path, kind: str):
    data = yaml.safe_load(INV_PATH.read_text())
    data["items"] = [i for i in data["items"] if i["kind"] != kind]
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- W2: one name defined twice -------------------------------------------------------------------------------

def test_a_name_defined_twice_is_an_error(capsys, tmp_path):
    """Two CNPs shop/cart selecting different pods: the cluster keeps whichever is applied last, so
    which rules it has depends on apply order (R1.3b). Every command refuses the input and names both
    places, rather than answer for one of two clusters (or, keeping both, for one that cannot exist)."""
    first = CNP + ("metadata: {name: cart, namespace: shop}\nspec:\n  endpointSelector: {matchLabels: {app: cart}}\n"
                   "  ingress:\n  - fromEndpoints: [{matchLabels: {app: frontend}}]\n")
    (tmp_path / "a.yaml").write_text(first)
    (tmp_path / "b.yaml").write_text(first.replace("{app: cart}", "{app: checkout}"))
    for argv in (("validate", tmp_path), ("check", tmp_path, "--fail-on", "never"),
                 ("query", tmp_path, "--inventory", INV, "--from", "shop/payment-gw", "--to", "shop/cart",
                  "--port", "8080/TCP")):
        code, out, err = run(capsys, *argv)
        assert code == 2 and f"{tmp_path / 'b.yaml'}:3:12: error: metadata.name: CiliumNetworkPolicy shop/cart is " \
            f"defined twice (first at {tmp_path / 'a.yaml'}:3:12)" in out + err, (argv, out, err)
    (tmp_path / "b.yaml").unlink()
    policy, _ = load_policies([tmp_path, tmp_path / "a.yaml"])  # a file reached twice is read once
    assert len({r.id for r in policy.rules}) == len(policy.rules) == 1


def test_the_same_path_twice_is_read_once(capsys):
    code, out, _ = run(capsys, "validate", P, P, P + "/shop")
    assert code == 0 and out.strip() == "valid: 16 policies, 27 rules"


# -- W4: repeated options add up ------------------------------------------------------------------------------

def test_two_spec_files_prove_both(capsys, tmp_path):
    ok = tmp_path / "ok.yaml"
    ok.write_text("invariants:\n- mustDeny: {from: 'namespace=shop,app=frontend', to: 'namespace=data,app=redis'}\n")
    spec = ROOT / "examples" / "shop" / "invariants.yaml"
    code, out, _ = run(capsys, "verify", P, "--spec", spec, "--spec", ok)
    assert code == 1 and "FAIL mustAllow 'checkout-reaches-postgres'" in out
    assert f"PASS mustDeny '{ok}:mustDeny[0]'" in out and "5 invariant(s): 4 hold, 1 failed" in out


def test_two_ports_ask_both(capsys):
    got = flows(capsys, "--from", "shop/frontend", "--to", "shop/cart", "--port", "8080/TCP",
                "--port", "5432/TCP,53/UDP")
    assert got == {("shop/frontend", "shop/cart", 8080): "allow", ("shop/frontend", "shop/cart", 5432): "deny",
                   ("shop/frontend", "shop/cart", 53): "deny"}


def test_two_baselines_add_up(capsys, tmp_path):
    code, out, _ = run(capsys, "check", P, "--inventory", INV, "-o", "json")
    findings = json.loads(out)["findings"]
    assert len(findings) == 3
    for n, part in enumerate((findings[:1], findings[1:])):
        (tmp_path / f"b{n}.json").write_text(json.dumps({"findings": part}))
    code, out, _ = run(capsys, "check", P, "--inventory", INV, "--baseline", tmp_path / "b0.json",
                       "--baseline", tmp_path / "b1.json")
    assert code == 0 and out.splitlines()[-1] == "0 finding(s): 0 error, 0 warning, 0 note, 3 suppressed " \
                                                 "(policyc.io/ignore, --baseline)"


# -- W5: IPv4-mapped IPv6 addresses ---------------------------------------------------------------------------

def test_a_mapped_address_is_the_ipv4_address_in_query_matrix_and_verify(capsys, tmp_path):
    """A dual-stack socket sends IPv4 to ::ffff:169.254.169.254: the metadata deny holds in all three."""
    for to in ("169.254.169.254", "::ffff:169.254.169.254", "::ffff:a9fe:a9fe"):
        assert flows(capsys, "--from", "shop/frontend", "--to", to, "--port", "443/TCP") == {
            ("shop/frontend", "169.254.169.254", 443): "deny"}
    code, out, _ = run(capsys, "matrix", P, "--inventory", INV, "--ports", "443/TCP", "--from", "shop/frontend",
                       "--external", "::ffff:169.254.169.254,::ffff:169.254.169.0/120", "-o", "json")
    verdicts = {f["to"]: f["verdict"] for f in json.loads(out)["flows"] if f["to"].startswith("169.254")}
    assert verdicts == {"169.254.169.254": "deny", "169.254.169.0/24 except 169.254.169.254/32": "allow",
                        "169.254.169.254/32": "deny"}
    spec = tmp_path / "spec.yaml"
    spec.write_text("invariants:\n- mustDeny: {from: 'namespace=shop,app=frontend',\n"
                    "    to: {cidr: '::ffff:169.254.169.254'}}\n")
    code, out, _ = run(capsys, "verify", P, "--inventory", INV, "--spec", spec)
    assert code == 0 and "cidr:169.254.169.254/32" in out


def test_a_mapped_cidr_in_a_policy_is_warned_about(capsys, tmp_path):
    code, out = validate_cnp(capsys, tmp_path, "metadata: {name: m, namespace: shop}\nspec:\n  endpointSelector: {}\n"
                             "  egressDeny:\n  - toCIDR: ['::ffff:169.254.169.254/128']\n")
    assert code == 0 and "IPv4-mapped IPv6 prefix: it matches no IPv4 packet" in out
    assert "write 169.254.169.254/32" in out


# -- W6: an endpoint with itself --------------------------------------------------------------------------------

def test_self_pairs_count_nowhere(capsys, tmp_path):
    """query over selectors leaves a pod's traffic to itself out, as matrix (-) and verify do: the three
    agree on one question."""
    code, out, err = run(capsys, "query", P, "--inventory", INV, "--from", "ns=shop", "--to", "ns=shop", "--port",
                         "5432/TCP", "--expect", "deny", "-o", "json")
    asked = {(q["from"], q["to"]) for q in json.loads(out)["queries"]}
    assert code == 0 and "5 pair(s) of an endpoint with itself left out" in err
    assert len(asked) == 20 and all(a != b for a, b in asked)
    code, out, _ = run(capsys, "matrix", P, "--inventory", INV, "--ports", "5432/TCP", "--from", "ns=shop", "--to",
                       "ns=shop", "-o", "json")
    assert {(f["from"], f["to"]) for f in json.loads(out)["flows"]} == asked
    spec = tmp_path / "spec.yaml"
    spec.write_text("invariants:\n- mustDeny: {from: ns=shop, to: ns=shop, ports: [5432/TCP]}\n")
    assert run(capsys, "verify", P, "--inventory", INV, "--spec", spec)[0] == 0
    code, out, _ = run(capsys, "query", P, "--inventory", INV, "--from", "shop/cart", "--to", "shop/cart", "--port",
                       "5432/TCP")
    assert code == 0 and "ALLOW" in out and "itself" in out  # asked alone, it is answered


# -- C1, M5, M6: matrix rows ----------------------------------------------------------------------------------------

def test_matrix_from_an_address_or_a_cidr_is_a_row(capsys):
    code, out, err = run(capsys, "matrix", P, "--inventory", INV, "--ports", "443/TCP", "--from", "203.0.113.7", "-o",
                         "json")
    assert code == 0, err
    assert {f["to"] for f in json.loads(out)["flows"] if f["verdict"] == "allow"} >= {"ops/ingress"}
    code, out, err = run(capsys, "matrix", P, "--inventory", INV, "--ports", "443/TCP", "--external", "198.51.100.0/24",
                         "--to", "198.51.100.0/24", "--from", "shop/payment-gw", "-o", "json")
    assert code == 0, err
    assert {f["to"]: f["verdict"] for f in json.loads(out)["flows"]} == {
        "198.51.100.0/24 except 198.51.100.128/25": "allow", "198.51.100.128/25": "deny"}


def test_a_cidr_row_is_split_where_rules_tell_its_addresses_apart(capsys):
    """169.254.0.0/16 held one verdict for the whole range, while 169.254.169.254 in it is denied."""
    code, out, _ = run(capsys, "matrix", P, "--inventory", INV, "--ports", "443/TCP", "--external", "169.254.0.0/16",
                       "--from", "shop/frontend", "-o", "csv", "-q")
    rows = [line for line in out.splitlines() if "169.254" in line]
    assert rows == ["shop/frontend,169.254.0.0/16 except 169.254.169.254/32,443,TCP,allow,false",
                    "shop/frontend,169.254.169.254/32,443,TCP,deny,false"]


def test_a_comma_list_of_endpoints(capsys):
    code, out, _ = run(capsys, "matrix", P, "--inventory", INV, "--ports", "443/TCP", "--from",
                       "shop/frontend,shop/payment-gw", "-o", "json")
    assert code == 0 and {f["from"] for f in json.loads(out)["flows"]} == {"shop/frontend", "shop/payment-gw"}
    code, _, err = run(capsys, "query", P, "--inventory", INV, "--from", "shop/frontend,shop/paymnt-gw", "--to",
                       "shop/cart", "--port", "8080")
    assert code == 2 and "did you mean 'shop/payment-gw'?" in err


# -- C2: every input has a cap --------------------------------------------------------------------------------------

def test_an_endless_stream_is_refused_after_the_cap(capsys, monkeypatch, tmp_path):
    """A pipe (as /dev/stdin or a device would be) that never ends: read cap + 1 bytes, then refused."""
    cap = 64 * 1024
    monkeypatch.setattr(source, "MAX_FILE_BYTES", cap)
    fifo = tmp_path / "endless.yaml"
    os.mkfifo(fifo)
    written = []

    def writer() -> None:
        chunk, total = b"# a line of a log that goes on\n" * 512, 0
        try:
            with open(fifo, "wb") as fh:
                while total < 64 * cap:  # bounded, so the test ends even if the reader never stops
                    fh.write(chunk)
                    total += len(chunk)
        except BrokenPipeError:
            pass
        written.append(total)

    thread = threading.Thread(target=writer)
    thread.start()
    code, out, _ = run(capsys, "validate", fifo)
    thread.join(timeout=60)
    assert code == 2 and "over the 64 KiB limit for one input" in out
    assert written and written[0] < 8 * cap  # the reader stopped early: the writer met a closed pipe
    code, _, err = run(capsys, "query", P, "--inventory", "-", "--from", "a/b", "--to", "c/d", "--port", "1",
                       stdin=b"#" * (cap + 1), monkeypatch=monkeypatch)
    assert code == 2 and "<stdin>: error: input goes on past the cap" in err


# -- M1-M4: inputs that say less than they seem to ------------------------------------------------------------------

def test_an_inventory_without_namespaces_or_nodes_says_so(capsys, tmp_path):
    inv = inventory_without(tmp_path, "Namespace")
    code, _, err = run(capsys, "query", P, "--inventory", inv, "--from", "shop/checkout", "--to", "data/postgres",
                       "--port", "5432/TCP")
    assert code == 0
    assert "pods are in namespace(s) data, kube-system, ops, shop but the inventory holds no Namespace" in err
    inv = inventory_without(tmp_path, "Node")
    code, _, err = run(capsys, "query", P, "--inventory", inv, "--from", "shop/checkout", "--to", "data/postgres",
                       "--port", "5432/TCP")
    assert "pods run on node(s) node-1, node-2 that the inventory holds no Node object for" in err


def test_a_namespace_without_k8s_prefix_in_the_subject_is_warned_about(capsys, tmp_path):
    code, out = validate_cnp(capsys, tmp_path, "metadata: {name: o, namespace: shop}\nspec:\n  endpointSelector: "
                             "{matchLabels: {app: cart, io.kubernetes.pod.namespace: data}}\n  ingress: [{}]\n")
    assert code == 0 and "asks for namespace 'data' without the k8s: prefix" in out and "selects no pod" in out


def test_a_policy_without_namespace_is_said_to_be_in_default(capsys, tmp_path):
    code, out = validate_cnp(capsys, tmp_path, "metadata: {name: web}\nspec:\n  endpointSelector: "
                             "{matchLabels: {app: cart}}\n  ingress: [{}]\n")
    assert code == 0 and "has no metadata.namespace: policyc assumes 'default'" in out


def test_an_inventory_given_as_the_policies_is_an_error(capsys):
    for cmd in (["query", INV, "--from", "shop/frontend", "--to", "shop/cart", "--port", "8080/TCP"],
                ["matrix", INV, "--ports", "80/TCP"]):
        code, _, err = run(capsys, *cmd, "--inventory", INV)
        assert code == 2 and "holds 18 object(s), none of them a network policy" in err, cmd


# -- M7, M8: Kubernetes and repository habits -----------------------------------------------------------------------

def test_typed_and_nested_lists_are_read(capsys, tmp_path):
    """What `kubectl get --raw`, client-go and backups write: XxxList, items without kind, lists in lists."""
    shop = ROOT / "examples/shop/policies/shop"
    items = [yaml.safe_load((shop / f).read_text()) for f in ("cart.yaml", "catalog.yaml")]
    for item in items:
        del item["kind"], item["apiVersion"]
    typed = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicyList", "metadata": {}, "items": items}
    knp = yaml.safe_load((ROOT / "examples/shop/policies/data/redis.yaml").read_text())
    nested = {"apiVersion": "v1", "kind": "List", "items": [typed, {"apiVersion": "networking.k8s.io/v1",
                                                                     "kind": "NetworkPolicyList", "items": [knp]}]}
    (tmp_path / "list.yaml").write_text(yaml.safe_dump(nested))
    code, out, _ = run(capsys, "validate", tmp_path / "list.yaml")
    assert code == 0 and "valid: 3 policies" in out


def test_pre_commit_hooks_pass_in_a_typical_repository(capsys, tmp_path, monkeypatch):
    """Workflows, the pre-commit config, a compose file and a verify spec beside the policies: the hooks
    run as pre-commit runs them (validate on the changed files, check on `.`) and pass."""
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows" / "ci.yml").write_text("on: push\njobs: {}\n")
    (tmp_path / ".pre-commit-config.yaml").write_text("repos:\n- repo: x\n")
    (tmp_path / "docker-compose.yml").write_text("services: {web: {image: nginx}}\n")
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "cart.yaml").write_text((ROOT / "examples/shop/policies/shop/cart.yaml").read_text())
    (tmp_path / "policies" / "spec.yaml").write_text((ROOT / "examples/shop/invariants.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    changed = ["docker-compose.yml", "policies/spec.yaml", ".pre-commit-config.yaml"]
    for hook_id, files in (("policyc-validate", changed), ("policyc-validate", changed + ["policies/cart.yaml"]),
                           ("policyc-check", [])):
        hook = hooks[hook_id]
        argv = hook["entry"].split()[1:] + hook.get("args", []) + (files if hook["pass_filenames"] else [])
        code, out, err = run(capsys, *argv)
        assert code == 0, (hook_id, out, err)


# -- M9-M14: values that must be refused -----------------------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["query", P, "--inventory", INV, "--from", "shop/cart", "--to", "shop/catalog", "--port", "8080/ICMP"],
     "ICMP or ICMPv6 (whose types are 0-255)"),
    (["matrix", P, "--inventory", INV, "--ports", "300/ICMPv6"], "ICMP or ICMPv6 (whose types are 0-255)"),
    (["matrix", P, "--inventory", INV, "--ports", ""], "--ports: no value in ''"),
    (["query", P, "--inventory", INV, "--from", "shop/cart", "--to", "shop/catalog", "--port", "http"],
     "named ports are resolved per pod"),
    (["compile", P, "--inventory", INV, "--output-dir", "unused", "--map-size", "policy=99999999999"],
     "N from 1 to 4294967295"),
    (["compile", P, "--inventory", INV, "--output-dir", "unused", "--map-size", "polcy=9"], "no map 'polcy'"),
    (["compile", P, "--inventory", INV, "-o", "sarif"], "-o sarif: compile writes text, json, yaml"),
    (["paths", "world", "data/postgres", P, "--inventory", INV, "--ports", "300/ICMP"],
     "ICMP and ICMPv6 types are 0-255"),
    (["blast-radius", "world", P, "--inventory", INV, "--ports", ""], "--ports: no port given"),
])
def test_values_out_of_range_are_refused(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_paths_reads_ports_and_addresses_as_the_other_commands_do(capsys):
    """The graph commands (merged after the attack) keep its fixes: --ports adds up like matrix's, and a
    mapped IPv6 CIDR is its IPv4 range, as in query, matrix and verify."""
    def chains(*argv):
        code, out, err = run(capsys, "paths", *argv, P, "--inventory", INV, "-o", "json", "-q")
        assert code in (0, 1), err
        return json.loads(out)

    got = chains("world", "data/postgres", "--ports", "5432/TCP", "--ports", "443/TCP")
    assert got["ports"] == ["443/TCP", "5432/TCP"]
    ipv4, mapped = chains("203.0.113.0/24", "data/postgres"), chains("::ffff:203.0.113.0/120", "data/postgres")
    assert ipv4["found"] and mapped["chains"] == ipv4["chains"]


def test_a_spec_icmp_type_above_255_is_refused(capsys, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("invariants:\n- mustDeny: {from: ns=shop, to: ns=data, ports: [300/ICMP]}\n")
    code, _, err = run(capsys, "verify", P, "--spec", spec)
    assert code == 2 and "ICMP types are 0-255" in err


def test_an_http_path_go_cannot_compile_is_an_error(capsys, tmp_path):
    code, out = validate_cnp(capsys, tmp_path, "metadata: {name: r, namespace: shop}\nspec:\n  endpointSelector: {}\n"
                             "  ingress:\n  - toPorts:\n    - ports: [{port: '80', protocol: TCP}]\n"
                             "      rules: {http: [{path: '/api/(v1'}, {path: '/a(?=b)'},"
                             " {method: 'GET|POST', path: '/api/\\\\pL+/\\\\z'}]}\n", "-o", "json")
    diags = json.loads(out)["diagnostics"]
    assert code == 2 and [(d["field"], d["code"]) for d in diags] == [
        ("spec.ingress[0].toPorts[0].rules.http[0].path", "invalid-regex"),
        ("spec.ingress[0].toPorts[0].rules.http[1].path", "invalid-regex")]
    assert "lookahead" in diags[1]["message"]


def test_a_default_deny_invariant_over_an_empty_namespace_is_vacuous(capsys, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("invariants:\n- defaultDeny: {namespaces: [shopp]}\n")
    code, _, err = run(capsys, "verify", P, "--inventory", INV, "--spec", spec)
    assert code == 1 and "namespace 'shopp' matches no pod of the inventory" in err  # vacuous: no pass
    assert run(capsys, "verify", P, "--inventory", INV, "--spec", spec, "--allow-vacuous")[0] == 0


def test_standard_input_twice(capsys, monkeypatch):
    policy = (ROOT / "examples/shop/policies/shop/cart.yaml").read_bytes()
    code, _, err = run(capsys, "query", "-", "--inventory", "-", "--from", "shop/a", "--to", "shop/b", "--port", "1",
                       stdin=policy, monkeypatch=monkeypatch)
    assert code == 2 and "standard input is read once and serves the policies and --inventory alike" in err
    code, _, err = run(capsys, "diff", "-", "-", stdin=policy, monkeypatch=monkeypatch)
    assert code == 2 and "OLD and NEW are both standard input" in err


@pytest.mark.parametrize("text,field,message", [
    ("metadata: {name: p, namespace: shop}\nspec:\n  endpointSelector: {}\n  egress: {}\n", "spec.egress",
     "must be a list, not a mapping"),
    ("metadata: {name: p, namespace: shop}\nspec:\n  endpointSelector: {matchLabels: {'app name': x}}\n"
     "  ingress: [{}]\n",
     "spec.endpointSelector.matchLabels.app name", "'app name' is not a valid label key"),
    ("metadata: {name: T_4, namespace: shop}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n", "metadata.name",
     "'T_4' is not a valid name"),
    ("metadata: {name: t, namespace: Shop}\nspec:\n  endpointSelector: {}\n  ingress: [{}]\n", "metadata.namespace",
     "'Shop' is not a valid namespace"),
])
def test_values_the_api_server_refuses(capsys, tmp_path, text, field, message):
    code, out = validate_cnp(capsys, tmp_path, text, "-o", "json")
    (diag,) = json.loads(out)["diagnostics"]
    assert code == 2 and diag["field"] == field and message in diag["message"]


def test_inventory_mistakes_are_said(capsys, tmp_path):
    data = yaml.safe_load(INV_PATH.read_text())
    pods = [i for i in data["items"] if i["kind"] == "Pod"]
    done = dict(pods[0], metadata={**pods[0]["metadata"], "name": "job-1"}, status={**pods[0]["status"],
                                                                                  "phase": "Succeeded"})
    twin = dict(pods[1], metadata={**pods[1]["metadata"], "name": "twin"})
    data["items"] += [done, twin]
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data))
    code, out, err = run(capsys, "matrix", P, "--inventory", inv, "--ports", "80/TCP", "-o", "json", "-v")
    names = {f["from"] for f in json.loads(out)["flows"]}
    assert code == 0 and f"{pods[0]['metadata']['namespace']}/job-1" not in names and "is Succeeded" in err
    assert f"has the address {pods[1]['status']['podIP']} of" in err
    bad = yaml.safe_load(INV_PATH.read_text())
    bad["items"] += [next(i for i in bad["items"] if i["kind"] == "Namespace")]
    inv.write_text(yaml.safe_dump(bad))
    code, _, err = run(capsys, "matrix", P, "--inventory", inv, "--ports", "80/TCP")
    assert code == 2 and "is defined twice" in err
    bad = yaml.safe_load(INV_PATH.read_text())
    pod = next(i for i in bad["items"] if i["kind"] == "Pod")
    pod["spec"]["containers"][0]["ports"].append({"containerPort": 99999, "protocol": "XYZ"})
    inv.write_text(yaml.safe_dump(bad))
    code, _, err = run(capsys, "matrix", P, "--inventory", inv, "--ports", "80/TCP")
    assert code == 2 and "containerPort 1-65535" in err


def test_a_broken_link_in_a_directory_is_said(capsys, tmp_path):
    (tmp_path / "cart.yaml").write_text((ROOT / "examples/shop/policies/shop/cart.yaml").read_text())
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "nowhere.yaml")
    code, out, _ = run(capsys, "validate", tmp_path)
    assert code == 0 and f"{tmp_path / 'gone.yaml'}: warning: broken symbolic link" in out


# -- K: kubectl habits and output details ------------------------------------------------------------------------------

def test_kubectl_habits_on_the_command_line(capsys):
    code, out, _ = run(capsys, "query", P, "--inventory", INV, "--from", "shop/frontend", "--to", "shop/cart", "--port",
                       "8080", "--output", "json")
    assert code == 0 and json.loads(out)["queries"][0]["verdict"] == "allow"
    code, _, err = run(capsys, "query", P, "--invetory", INV, "--from", "a", "--to", "b", "--port", "1")
    assert code == 2 and err.startswith("usage: policyc query") and "did you mean --inventory?" in err
    code, _, err = run(capsys, "check", P, "--nope", "-o", "json")
    assert code == 2 and json.loads(err)["diagnostics"][0]["message"] == "unrecognized option --nope"


def test_output_details(capsys, tmp_path):
    code, out, _ = run(capsys, "matrix", P, "--inventory", INV, "--ports", "8080/TCP", "--to", "shop/catalog",
                       "-o", "csv")
    assert {line.rsplit(",", 1)[1] for line in out.splitlines()[1:]} == {"true", "false"}  # as JSON spells it
    bad = tmp_path / "bad.yaml"
    bad.write_text(CNP + "metadata: {name: p, namespace: shop}\nspec: {endpointSelector: {}, ingres: [{}]}\n")
    code, out, _ = run(capsys, "check", bad, "-o", "markdown")
    assert code == 2 and out.startswith("### policyc: invalid input, 2 error(s)") and "'ingres'" in out
    ignored = tmp_path / "ignored.yaml"
    ignored.write_text(CNP + "metadata:\n  name: p\n  namespace: shop\n"
                       "  annotations: {policyc.io/ignore: 'pc010,PC01,PC099'}\nspec:\n  endpointSelector: {}\n"
                       "  ingress: [{fromEntities: [world], toPorts: [{ports: [{port: '443'}]}]}]\n")
    code, out, err = run(capsys, "check", ignored, "--fail-on", "never")
    assert "'PC01' in policyc.io/ignore is not a check id" in out + err
    assert "'PC099' in policyc.io/ignore is no check" in err
    assert "PC010" not in out and "suppressed" in out


def test_messages_speak_the_command_line(capsys, tmp_path):
    knp = tmp_path / "knp.yaml"
    knp.write_text("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n, namespace: shop}\n"
                   "spec:\n  podSelector: {}\n  ingress: [{ports: [{port: 80, protocol: tcp}]}]\n")
    code, out, _ = run(capsys, "validate", knp)
    assert code == 2 and "CRD" not in out and "NetworkPolicy's protocol is upper case" in out
    code, out, _ = run(capsys, "check", ROOT / "tests/data/checks/PC010/fail.yaml", "--fail-on", "never")
    assert "admits entity:world on 443/TCP" in out
    code, out, _ = run(capsys, "query", P, "--inventory", INV, "--from", "shop/frontend", "--to", "data/postgres",
                       "--port", "5432/TCP")
    assert "allows this port, but only from app in (catalog,checkout)" in " ".join(out.split())
    spec_dir = tmp_path / "mixed"
    spec_dir.mkdir()
    (spec_dir / "spec.yaml").write_text((ROOT / "examples/shop/invariants.yaml").read_text())
    (spec_dir / "cart.yaml").write_text((ROOT / "examples/shop/policies/shop/cart.yaml").read_text())
    code, out, _ = run(capsys, "validate", spec_dir, "-v")
    assert f"{spec_dir / 'spec.yaml'}:4: VerificationSpec: skipped (not a network policy)" in out


def _as_argument(end: dict) -> str | None:
    """A witness endpoint as query takes it without an inventory: its address, or its pod's labels."""
    if end["kind"] == "external":
        return end["ips"][0]
    if end["kind"] != "pod":
        return None
    return ",".join(lab.removeprefix("k8s:") for lab in end["labels"] if "policy.cluster=" not in lab)


@pytest.mark.parametrize("check_id", sorted(p.name for p in (ROOT / "tests/data/checks").iterdir()
                                            if not (p / "inventory.yaml").exists()))
def test_witnesses_without_an_inventory_replay_with_query(capsys, check_id):
    """A finding's example names invented pods by their labels; query takes the same, with no inventory,
    and gives the side the example is about the verdict the example claims."""
    fail = ROOT / "tests/data/checks" / check_id / "fail.yaml"
    _, out, _ = run(capsys, "check", fail, "-o", "json", "--fail-on", "never")
    for finding in json.loads(out)["findings"]:
        w = finding["witness"]
        if not w or not w.get("direction"):
            continue
        src, dst = _as_argument(w["from"]), _as_argument(w["to"])
        if src is None or dst is None:
            continue
        code, out, err = run(capsys, "query", fail, "--from", src, "--to", dst, "--port",
                             f"{w['port']}/{w['protocol']}", "-o", "json")
        assert code == 0, err
        assert json.loads(out)["queries"][0][w["direction"]]["verdict"] == w["verdict"], (check_id, w)
