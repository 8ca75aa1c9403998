"""`policyc matrix` for a reader (issue 16, items 4 and 5): default ports said out loud, numbered columns in
blocks that fit any width, filters, a per-port summary, the L7 mark, nodes, and --external/--ports forms."""
from __future__ import annotations

import json

import matrixtext
from cases import ROOT
from policyc.cli import main

SHOP = ROOT / "examples" / "shop"
P, INV = str(SHOP / "policies"), str(SHOP / "inventory.yaml")
NODE_IP = "192.168.10.11"  # node-1's InternalIP in the shop inventory


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["matrix", P, "--inventory", INV, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_default_ports_are_the_inventorys_and_the_rules_and_it_says_so(capsys):
    code, out, err = run(capsys)
    assert code == 0 and "no --ports given" in err
    ports = set(matrixtext.parse(out))
    assert {"8080/TCP", "5432/TCP", "443/TCP", "53/UDP"} <= ports and "81/TCP" not in ports
    assert any(v == "." for table in matrixtext.parse(out).values() for v in table.values())


def test_columns_are_numbered_and_fit_the_width(capsys):
    """Lines stay within 120 characters (no terminal) however many endpoints there are."""
    code, out, _ = run(capsys, "--ports", "8080/TCP", "--external",
                       ",".join(f"198.51.100.{n}" for n in range(1, 60)))
    assert code == 0 and max(map(len, out.splitlines())) <= 120
    assert "columns 1-" in out  # the table came in column blocks
    table = matrixtext.parse(out)["8080/TCP"]
    assert table[("shop/frontend", "shop/cart")] == "." and table[("198.51.100.7", "shop/cart")] == "X"


def test_from_and_to_filter_and_add_up(capsys):
    code, out, _ = run(capsys, "--ports", "8080/TCP", "--from", "shop/frontend", "--from", "app=checkout",
                       "--to", "namespace=shop")
    table = matrixtext.parse(out)["8080/TCP"]
    assert {s for s, _ in table} == {"shop/frontend", "shop/checkout"}
    assert {d for _, d in table} == {"shop/cart", "shop/catalog", "shop/checkout", "shop/frontend", "shop/payment-gw"}


def test_per_port_summary_and_l7_mark(capsys):
    code, out, _ = run(capsys, "--ports", "8080/TCP,5432/TCP")
    summary = next(line for line in out.splitlines() if line.startswith("per port: "))
    assert "8080/TCP" in summary and "5432/TCP" in summary and "via L7" in summary
    assert matrixtext.parse(out)["8080/TCP"][("shop/frontend", "shop/catalog")] == "L"
    code, out, _ = run(capsys, "--ports", "8080/TCP", "-o", "json")
    flows = {(f["from"], f["to"]): f for f in json.loads(out)["flows"]}
    assert flows[("shop/frontend", "shop/catalog")] == {"from": "shop/frontend", "to": "shop/catalog", "port": 8080,
                                                         "protocol": "TCP", "verdict": "allow", "l7": True}
    assert "l7" not in flows[("shop/frontend", "shop/cart")]


def test_nodes_are_rows_and_a_node_address_is_the_node_as_in_query(capsys):
    code, out, _ = run(capsys, "--ports", "8080/TCP,443/TCP", "--external", f"{NODE_IP},203.0.113.0/24")
    table = matrixtext.parse(out)["8080/TCP"]
    assert ("node-1", "shop/cart") in table and NODE_IP not in {s for s, _ in table}
    assert main(["query", P, "--inventory", INV, "--from", NODE_IP, "--to", "shop/cart", "--port", "8080/TCP",
                 "-o", "json"]) == 0
    query = json.loads(capsys.readouterr().out)["queries"][0]
    assert query["from"] == "node-1"
    assert table[("node-1", "shop/cart")] == {"allow": ".", "deny": "X"}[query["verdict"]]
    https = matrixtext.parse(out)["443/TCP"]  # the ingress admits the world on 443 (a CIDR row: its first address)
    assert https[("203.0.113.0/24", "ops/ingress")] == "." and https[("203.0.113.0/24", "shop/cart")] == "X"


def test_external_takes_node_names_and_ports_take_ranges(capsys):
    code, out, _ = run(capsys, "--ports", "8079-8081/TCP", "--external", "node-2", "-o", "json")
    flows = json.loads(out)["flows"]
    assert {f["port"] for f in flows} == {8079, 8080, 8081}
    code, _, err = run(capsys, "--ports", "9000-8000/TCP")
    assert code == 2 and "FIRST <= LAST" in err
    code, _, err = run(capsys, "--external", "node-9")
    assert code == 2 and "unknown endpoint 'node-9'" in err
