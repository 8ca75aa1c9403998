"""Output speaks the CLI's language (issue 16, item 6): selectors as `--from` accepts them, near misses
for denies, explanation lines that wrap."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cases import E2E_INVENTORY, ROOT, own
from policyc.cli import main
from policyc.compiler.cliselector import format_selector, parse_cli_selector
from policyc.compiler.ir import NAMESPACE_KEY, Label, Op, Requirement, Selector

KEYS = st.sampled_from(["app", "tier", "team", NAMESPACE_KEY, "io.cilium.k8s.namespace.labels.team"])
VALUES = st.lists(st.sampled_from(["a", "b", "web", "x"]), min_size=1, max_size=3, unique=True)


@st.composite
def requirements(draw) -> Requirement:
    op = draw(st.sampled_from(list(Op)))
    values = tuple(sorted(draw(VALUES))) if op in (Op.IN, Op.NOT_IN) else ()
    return Requirement(draw(st.sampled_from(["any", "k8s"])), draw(KEYS), op, values)


@st.composite
def pod_labels(draw) -> frozenset:
    keys = draw(st.lists(KEYS, unique=True, max_size=4))
    return frozenset(Label("k8s", k, draw(st.sampled_from(["a", "b", "web", "x"]))) for k in keys)


@settings(max_examples=300, deadline=None)
@given(reqs=st.lists(requirements(), min_size=1, max_size=4), labels=pod_labels())
def test_printed_selectors_parse_back_to_the_same_pods(reqs, labels):
    sel = Selector(tuple(sorted(set(reqs))))
    text = format_selector(sel)
    assert "any:" not in text and "k8s:" not in text
    assert parse_cli_selector(text).matches(labels) == sel.matches(labels)


def test_diff_prints_selectors_as_the_cli_writes_them(capsys, tmp_path):
    old = own("L12-knp-pod-peer-is-own-namespace") / "policies"
    new = tmp_path / "new.yaml"
    new.write_text((old / "policy.yaml").read_text().replace("pod: b", "pod: c"))
    assert main(["diff", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "namespace=x,pod=a" in out and "namespace=x,pod=c" in out
    assert "any:" not in out and "k8s:" not in out and "endpoints(" not in out


def test_deny_names_the_rule_that_nearly_matched_and_lines_wrap(capsys):
    case = own("L12-knp-pod-peer-is-own-namespace")
    assert main(["query", str(case / "policies"), "--inventory", str(E2E_INVENTORY), "--from", "x/b", "--to", "x/a",
                 "--port", "81/TCP"]) == 0
    out = capsys.readouterr().out
    assert "near miss: NetworkPolicy x/a-from-b spec.ingress[0]" in out
    assert "would have allowed this but for port 81/TCP (it allows 80/TCP)" in " ".join(out.split())
    assert all(len(line) <= 100 or len(line.split()) == 1 for line in out.splitlines())  # a long path stays whole
    main(["query", str(case / "policies"), "--inventory", str(E2E_INVENTORY), "--from", "y/b", "--to", "x/a",
          "--port", "80/TCP"])
    assert "allows this port, but only from namespace=x,pod=b" in " ".join(capsys.readouterr().out.split())


def test_witnesses_are_plain_examples(capsys):
    """Addresses from the documentation ranges rather than `::`; witness pods without labels the
    finding does not need (the shop's DNS rules made pods labelled k8s-app=kube-dns appear)."""
    import json
    shop = ROOT / "examples" / "shop" / "policies"
    assert main(["check", str(shop), "--fail-on", "never", "-o", "json"]) == 0
    witnesses = [f["witness"] for f in json.loads(capsys.readouterr().out)["findings"] if f.get("witness")]
    assert witnesses
    ends = [w[side] for w in witnesses for side in ("from", "to") if w.get(side)]
    addresses = [ip for e in ends if e["kind"] == "external" for ip in e["ips"]]
    assert addresses and all(ip in ("203.0.113.7", "198.51.100.9") for ip in addresses), addresses
    for e in ends:
        if e["kind"] == "pod":
            assert not any(lab.startswith("k8s:k8s-app=") for lab in e["labels"]), e
