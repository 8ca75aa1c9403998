"""The command-line selector grammar (grammar/selector.lark) and its use in `policyc query`."""
from __future__ import annotations

import json

import pytest

from cases import ROOT
from policyc.cli import main
from policyc.compiler.cliselector import looks_like_selector, parse_cli_selector
from policyc.compiler.diagnostics import PolicycError
from policyc.compiler.ir import ANY_SOURCE, NAMESPACE_KEY, Label, Op, Requirement

SHOP = ROOT / "examples" / "shop"


def req(key: str, op: Op, *values: str, source: str = ANY_SOURCE) -> Requirement:
    return Requirement(source, key, op, tuple(values))


@pytest.mark.parametrize("text,want", [
    ("app=web", [req("app", Op.IN, "web")]),
    ("app==web", [req("app", Op.IN, "web")]),
    ("app = web", [req("app", Op.IN, "web")]),
    ("app=", [req("app", Op.IN, "")]),
    ("app!=web", [req("app", Op.NOT_IN, "web")]),
    ("tier in (b,a, b)", [req("tier", Op.IN, "a", "b")]),
    ("tier notin (a)", [req("tier", Op.NOT_IN, "a")]),
    ("app", [req("app", Op.EXISTS)]),
    ("!legacy", [req("legacy", Op.DOES_NOT_EXIST)]),
    ("index=3", [req("index", Op.IN, "3")]),          # keys may start like the operators
    ("in=x,notin=y", [req("in", Op.IN, "x"), req("notin", Op.IN, "y")]),
    ("app.kubernetes.io/name=ingress-nginx", [req("app.kubernetes.io/name", Op.IN, "ingress-nginx")]),
    ("k8s:app=web", [req("app", Op.IN, "web", source="k8s")]),
    ("reserved:host", [req("host", Op.EXISTS, source="reserved")]),
])
def test_requirements(text, want):
    assert parse_cli_selector(text).requirements == tuple(sorted(want))


@pytest.mark.parametrize("alias", ["namespace", "ns"])
def test_namespace_is_named_by_namespace_or_ns(alias):
    """`namespace`/`ns` stand for Cilium's k8s:io.kubernetes.pod.namespace label (R2.3)."""
    sel = parse_cli_selector(f"{alias}=shop,app in (cart,checkout)")
    assert sel.requirements == tuple(sorted([req(NAMESPACE_KEY, Op.IN, "shop", source="k8s"),
                                             req("app", Op.IN, "cart", "checkout")]))
    pod = frozenset({Label("k8s", NAMESPACE_KEY, "shop"), Label("k8s", "app", "cart")})
    assert sel.matches(pod)
    assert not sel.matches(pod - {Label("k8s", NAMESPACE_KEY, "shop")} | {Label("k8s", NAMESPACE_KEY, "data")})


def test_semantics_of_negations():
    """k8s semantics: != and notin hold for labels that lack the key; !key only for those."""
    web = frozenset({Label("k8s", "app", "web")})
    bare = frozenset()
    assert not parse_cli_selector("app!=web").matches(web) and parse_cli_selector("app!=web").matches(bare)
    assert parse_cli_selector("app notin (db)").matches(web) and parse_cli_selector("app notin (db)").matches(bare)
    assert not parse_cli_selector("!app").matches(web) and parse_cli_selector("!app").matches(bare)


@pytest.mark.parametrize("text,column,what", [
    ("=web", 1, "unexpected '='"),
    ("app=web,,x", 9, "unexpected ','"),
    ("app=we b", 8, "unexpected 'b'"),
    ("!app=web", 5, "unexpected '='"),
    ("a=b=c", 4, "unexpected '='"),
    ("app in ()", 9, "unexpected ')'"),
    ("app in (a,)", 11, "unexpected ')'"),
    ("app in a", 8, "unexpected 'a'"),
    ("app in (a,b", 12, "unexpected end"),
    ("app=web,", 9, "unexpected end"),
    ("", 1, "unexpected end"),
])
def test_errors_name_the_column(text, column, what):
    with pytest.raises(PolicycError) as info:
        parse_cli_selector(text, "--to")
    (diag,) = info.value.diagnostics
    assert diag.message == (f"--to: invalid label selector {text!r} at column {column} ({what}): expected "
                            "requirements such as 'app=web,tier in (a,b),!legacy' (namespace=NS names the namespace)")


@pytest.mark.parametrize("text,is_selector", [
    ("shop/frontend", False), ("node-1", False), ("10.0.1.10", False), ("fd00:10:0:1::a", False),
    ("app=web", True), ("!legacy", True), ("tier in (a,b)", True), ("app notin (a)", True), ("app,ns", True),
])
def test_endpoint_or_selector(text, is_selector):
    assert looks_like_selector(text) is is_selector


def query(capsys, src: str, dst: str, port: str = "5432/TCP") -> tuple[int, object, str]:
    code = main(["query", str(SHOP / "policies"), "--inventory", str(SHOP / "inventory.yaml"),
                 "--from", src, "--to", dst, "--port", port, "--format", "json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out)["queries"] if code == 0 else None), err


def test_query_with_selectors_on_both_ends(capsys):
    code, answers, _ = query(capsys, "namespace=shop,tier=api,app notin (payment-gw)", "ns=data,!broker")
    assert code == 0
    got = {(a["from"], a["to"]): a["verdict"] for a in answers}
    assert set(got) == {(f"shop/{s}", f"data/{d}") for s in ("cart", "catalog", "checkout")
                        for d in ("postgres", "redis")}
    assert got[("shop/checkout", "data/postgres")] == "allow"
    assert got[("shop/catalog", "data/postgres")] == "allow"
    assert got[("shop/cart", "data/postgres")] == "deny"


def test_query_mixes_a_selector_and_a_pod(capsys):
    code, answers, _ = query(capsys, "app in (cart,grafana)", "data/redis", "6379/TCP")
    assert code == 0
    assert {a["from"]: a["verdict"] for a in answers} == {"shop/cart": "allow", "ops/grafana": "deny"}


def test_query_selector_matching_nothing_is_bad_input(capsys):
    code, _, err = query(capsys, "app=nonexistent", "data/redis")
    assert code == 2
    (diag,) = json.loads(err)["diagnostics"]
    assert diag["severity"] == "error"
    assert diag["message"] == "--from: selector 'app=nonexistent' matches no pod of the inventory"


def test_query_selector_syntax_error_is_bad_input(capsys):
    code, _, err = query(capsys, "shop/frontend", "app in (redis", "6379/TCP")
    assert code == 2
    (diag,) = json.loads(err)["diagnostics"]
    assert diag["message"].startswith("--to: invalid label selector 'app in (redis' at column 14 (unexpected end)")


def test_unknown_endpoint_suggests_a_close_name(capsys):
    code, _, err = query(capsys, "shop/cartt", "data/redis")
    assert code == 2
    (diag,) = json.loads(err)["diagnostics"]
    assert diag["message"] == ("unknown endpoint 'shop/cartt': expected namespace/pod, a node name or an IP address; "
                               "did you mean 'shop/cart'?")
