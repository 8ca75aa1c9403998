"""The bundled example (examples/shop) does what its README says it does.

Each expectation below is a sentence of examples/shop/README.md; if a policy change breaks one,
either the policy or the README is wrong.
"""
from __future__ import annotations

import json

import pytest

import matrixtext
from cases import ROOT
from kernelreq import require_kernel
from policyc.cli import main

SHOP = ROOT / "examples" / "shop"
POLICIES = str(SHOP / "policies")
INVENTORY = str(SHOP / "inventory.yaml")
WORLD, PSP_PROD, PSP_SANDBOX, METADATA = "203.0.113.7", "198.51.100.10", "198.51.100.200", "169.254.169.254"

# (from, to, port/proto, verdict): the intended connectivity of examples/shop/README.md.
INTENDED = [
    # the internet reaches the ingress controller only
    (WORLD, "ops/ingress", "443/TCP", "allow"),
    (WORLD, "ops/ingress", "80/TCP", "allow"),
    (WORLD, "shop/frontend", "8080/TCP", "deny"),
    (WORLD, "data/postgres", "5432/TCP", "deny"),
    ("ops/ingress", "shop/frontend", "8080/TCP", "allow"),
    ("ops/ingress", "shop/cart", "8080/TCP", "deny"),
    # the frontend calls the shop APIs by the named port `api`, and a CDN on 443
    ("shop/frontend", "shop/cart", "8080/TCP", "allow"),
    ("shop/frontend", "shop/catalog", "8080/TCP", "allow"),
    ("shop/frontend", "shop/checkout", "8080/TCP", "allow"),
    ("shop/frontend", "shop/payment-gw", "8443/TCP", "deny"),
    ("shop/frontend", "data/postgres", "5432/TCP", "deny"),
    ("shop/frontend", WORLD, "443/TCP", "allow"),
    ("shop/frontend", WORLD, "80/TCP", "deny"),
    # deny wins over the frontend's world allow: the metadata service stays closed
    ("shop/frontend", METADATA, "443/TCP", "deny"),
    # checkout's dependencies
    ("shop/checkout", "shop/cart", "8080/TCP", "allow"),
    ("shop/checkout", "shop/payment-gw", "8443/TCP", "allow"),
    ("shop/checkout", "data/postgres", "5432/TCP", "allow"),
    ("shop/checkout", "data/queue", "9092/TCP", "allow"),
    ("shop/cart", "shop/checkout", "8080/TCP", "deny"),
    ("shop/cart", "data/redis", "6379/TCP", "allow"),
    ("shop/catalog", "data/postgres", "5432/TCP", "allow"),
    ("shop/catalog", "data/redis", "6379/TCP", "deny"),
    ("shop/cart", "data/postgres", "5432/TCP", "deny"),
    ("shop/payment-gw", "data/queue", "9092/TCP", "deny"),
    # the payment processor's production half, not its sandbox half (CIDR except)
    ("shop/payment-gw", PSP_PROD, "443/TCP", "allow"),
    ("shop/payment-gw", PSP_SANDBOX, "443/TCP", "deny"),
    ("shop/payment-gw", PSP_PROD, "80/TCP", "deny"),
    # DNS to CoreDNS from every application namespace, nowhere else
    ("shop/frontend", "kube-system/coredns", "53/UDP", "allow"),
    ("data/postgres", "kube-system/coredns", "53/UDP", "allow"),
    ("ops/grafana", "kube-system/coredns", "53/TCP", "allow"),
    ("shop/frontend", WORLD, "53/UDP", "deny"),
    # monitoring: the exporter range 9100-9199 in shop and data, Grafana -> Prometheus
    ("ops/prometheus", "shop/cart", "9100/TCP", "allow"),
    ("ops/prometheus", "data/postgres", "9187/TCP", "allow"),
    ("ops/prometheus", "data/redis", "9121/TCP", "allow"),
    ("ops/prometheus", "data/postgres", "9200/TCP", "deny"),
    ("ops/prometheus", "data/postgres", "5432/TCP", "deny"),
    ("ops/prometheus", "ops/grafana", "9100/TCP", "deny"),
    ("ops/grafana", "ops/prometheus", "9090/TCP", "allow"),
    ("shop/frontend", "ops/prometheus", "9090/TCP", "deny"),
    # data pods initiate nothing but DNS
    ("data/postgres", "shop/checkout", "8080/TCP", "deny"),
    ("data/queue", WORLD, "443/TCP", "deny"),
]

# Findings `policyc check --inventory` reports, each explained in examples/shop/README.md.
EXPECTED_FINDINGS = {
    ("PC008", "1 pod(s) of namespace kube-system are not default-deny in ingress: coredns"),
    ("PC009", "1 pod(s) of namespace kube-system are not default-deny in egress: coredns"),
    ("PC010", "admits entity:world on 80/TCP, 443/TCP"),
}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_validates_without_warnings(capsys):
    code, out, err = run_cli(capsys, "validate", POLICIES)
    assert code == 0
    assert out.strip() == "valid: 16 policies, 27 rules"
    assert err == ""


def test_size_of_the_example():
    """At least 10 services across 3 namespaces, with all three policy kinds."""
    import yaml
    items = yaml.safe_load((SHOP / "inventory.yaml").read_text())["items"]
    pods = [i for i in items if i["kind"] == "Pod"]
    assert len(pods) >= 10 and len({p["metadata"]["namespace"] for p in pods}) >= 3
    assert sum(i["kind"] == "Node" for i in items) == 2
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in (SHOP / "policies").rglob("*.yaml")}
    assert kinds == {"CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy", "NetworkPolicy"}


def test_matrix_matches_the_intent(capsys):
    ports = sorted({p for _, _, p, _ in INTENDED})
    code, out, err = run_cli(capsys, "matrix", POLICIES, "--inventory", INVENTORY, "--ports", ",".join(ports),
                             "--external", ",".join((WORLD, PSP_PROD, PSP_SANDBOX, METADATA)), "--format", "json")
    assert code == 0, err
    got = {(f["from"], f["to"], f"{f['port']}/{f['protocol']}"): f["verdict"] for f in json.loads(out)["flows"]}
    wrong = [(s, d, p, want, got[(s, d, p)]) for s, d, p, want in INTENDED if got[(s, d, p)] != want]
    assert not wrong


@pytest.mark.parametrize("src,dst,port,rule", [
    ("shop/frontend", METADATA, "443/TCP", "deny-cloud-metadata spec.egressDeny[0]"),
    ("shop/payment-gw", PSP_SANDBOX, "443/TCP", "default deny: no allow rule matches"),
    ("shop/frontend", "shop/catalog", "8080/TCP", "catalog spec.ingress[0]"),
])
def test_query_names_the_deciding_rule(capsys, src, dst, port, rule):
    code, out, _ = run_cli(capsys, "query", POLICIES, "--inventory", INVENTORY, "--from", src, "--to", dst,
                           "--port", port)
    assert code == 0
    assert rule in " ".join(out.split()), out  # explanation lines wrap


def test_catalog_is_read_only_through_the_l7_proxy(capsys):
    code, out, _ = run_cli(capsys, "query", POLICIES, "--inventory", INVENTORY, "--from", "shop/frontend",
                           "--to", "shop/catalog", "--port", "8080/TCP", "--format", "json")
    assert code == 0
    (answer,) = json.loads(out)["queries"]
    assert answer["verdict"] == "allow" and answer["ingress"]["l7"] == ["http"]


def test_prometheus_scrapes_node_exporters(capsys):
    """The `cluster` entity covers the nodes (R6.6): Prometheus reaches node-exporter on both nodes."""
    for node in ("node-1", "node-2"):
        code, _, _ = run_cli(capsys, "query", POLICIES, "--inventory", INVENTORY, "--from", "ops/prometheus",
                             "--to", node, "--port", "9100/TCP", "--expect", "allow")
        assert code == 0, node


def test_selector_query_over_a_namespace(capsys):
    """Every shop pod to Postgres: only checkout and catalog get through."""
    code, out, _ = run_cli(capsys, "query", POLICIES, "--inventory", INVENTORY, "--from", "namespace=shop",
                           "--to", "app=postgres", "--port", "5432/TCP", "--format", "json")
    assert code == 0
    verdicts = {q["from"]: q["verdict"] for q in json.loads(out)["queries"]}
    assert verdicts == {"shop/cart": "deny", "shop/catalog": "allow", "shop/checkout": "allow",
                        "shop/frontend": "deny", "shop/payment-gw": "deny"}


def test_check_reports_only_the_documented_findings(capsys):
    code, out, err = run_cli(capsys, "check", POLICIES, "--inventory", INVENTORY, "--format", "json")
    assert code == 0, err
    got = {(f["id"], f["message"]) for f in json.loads(out)["findings"]}
    assert got == EXPECTED_FINDINGS


def test_compiles(tmp_path, capsys):
    art = ["--output-dir", str(tmp_path / "art")]
    code, out, err = run_cli(capsys, "compile", POLICIES, "--inventory", INVENTORY, *art)
    assert code == 2 and "policies/shop/catalog.yaml" in err and "need a proxy" in err
    code, out, err = run_cli(capsys, "compile", POLICIES, "--inventory", INVENTORY, *art, "--l7", "l4-only")
    assert code == 0, err
    assert "compiled 27 rules" in out
    assert "L7 rules enforced as L4 only: shop/catalog ingress from shop/frontend 8080/TCP" in out
    assert (tmp_path / "art" / "manifest.json").is_file()


@pytest.mark.kernel
def test_compiled_example_agrees_with_evaluator_in_kernel(tmp_path, capsys):
    require_kernel()
    code, out, err = run_cli(capsys, "compile", POLICIES, "--inventory", INVENTORY, "--output-dir", str(tmp_path / "art"),
                             "--l7", "l4-only", "--validate")
    assert code == 0, err
    assert " 0 mismatch(es)" in out


def test_make_demo_commands_run(capsys, monkeypatch):
    """The `policyc` lines of the Makefile's demo target, as a new user runs them."""
    import shlex
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    commands = [shlex.split(line.strip())[1:] for line in recipe.splitlines() if line.strip().startswith("policyc ")]
    assert [c[0] for c in commands] == ["validate", "matrix"]
    monkeypatch.chdir(ROOT)
    outputs = []
    for argv in commands:
        assert main(argv) == 0, argv
        outputs.append(capsys.readouterr().out)
    assert outputs[0].strip() == "valid: 16 policies, 27 rules"
    tables = matrixtext.parse(outputs[1])
    assert set(tables) == {"443/TCP", "8080/TCP", "5432/TCP"}
    assert tables["443/TCP"][(WORLD, "ops/ingress")] == "." and tables["443/TCP"][(WORLD, "shop/frontend")] == "X"


def test_egress_named_ports_mean_one_number_cluster_wide():
    """Cilium < 1.20 resolves egress port names over every pod and drops the rule on a clash
    (cilium issue 30003): the example only uses names that are unambiguous in its inventory."""
    import yaml
    numbers: dict[str, set] = {}
    for item in yaml.safe_load((SHOP / "inventory.yaml").read_text())["items"]:
        for container in item.get("spec", {}).get("containers", []) if item["kind"] == "Pod" else []:
            for port in container.get("ports", []):
                numbers.setdefault(port["name"], set()).add(port["containerPort"])
    used = set()
    for path in (SHOP / "policies").rglob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        for rule in [doc.get("spec")] + (doc.get("specs") or []):
            for egress in (rule or {}).get("egress", []):
                used |= {p["port"] for pr in egress.get("toPorts", []) for p in pr.get("ports", [])
                         if not str(p["port"]).isdigit()}
    assert used == {"api"}
    assert all(len(numbers[name]) == 1 for name in used), {n: numbers[n] for n in used}
    assert len(numbers["http"]) > 1  # the name the README warns about


def test_invariants_hold_for_the_inventory(capsys):
    code, out, _ = run_cli(capsys, "verify", POLICIES, "--spec", str(SHOP / "invariants.yaml"),
                           "--inventory", INVENTORY, "--format", "json")
    assert code == 0
    assert all(r["holds"] for r in json.loads(out)["invariants"]), out


def test_without_inventory_checkout_may_sit_in_an_unlabelled_namespace(capsys):
    """The spec's header comment: postgres admits checkout only from namespaces labelled team=storefront."""
    code, out, _ = run_cli(capsys, "verify", POLICIES, "--spec", str(SHOP / "invariants.yaml"), "--format", "json")
    assert code == 1
    failed = {r["name"] for r in json.loads(out)["invariants"] if not r["holds"]}
    assert failed == {"checkout-reaches-postgres"}


def test_readme_outputs_are_current(capsys, monkeypatch):
    """Every console block of examples/shop/README.md is what its command prints (the layout drifted)."""
    import re
    import shlex

    monkeypatch.chdir(ROOT)
    blocks = re.findall(r"```console\n\$ policyc (.*?)\n(.*?)```", (SHOP / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    for command, output in blocks:
        main(shlex.split(command))
        assert capsys.readouterr().out == output, command
