"""Every real-world policy under ../shared/corpus validates, or reports what a reader would expect.

The corpus is not part of the repository: these tests run when ../shared is there (skip without it,
fail instead under POLICYC_REQUIRE_SHARED=1).

Files with diagnostics are listed below with every message they must produce, so a change in
wording or location is a visible decision. Any other file (including ones added to the corpus
later) must validate with no diagnostic at all. `policyc check` must find in them what a reader
would point out (EXPECTED_FINDINGS), and nothing else.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cases import SHARED
from policyc.cli import main

CORPUS = SHARED / "corpus"
FILES = sorted(p for p in CORPUS.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
pytestmark = pytest.mark.needs_shared

TOP_LEVEL_DESCRIPTION = ("warning", "description", 3, 1,
                         "unknown top-level field 'description' is dropped by the API server; "
                         "description belongs in the rule (spec.description)")



def assumed_default(name: str, line: int = 3) -> tuple:
    """Cilium's own examples leave the namespace to `kubectl apply -n`: policyc says which it assumes."""
    return ("warning", "metadata", line, 1, f"CiliumNetworkPolicy {name} has no metadata.namespace: policyc assumes "
            "'default' (kubectl apply would use -n or its context's namespace); write it down (R1.3b)")


# file name -> [(severity, field, line, column, message)], in output order.
EXPECTED = {
    # `operator: "in"`: the CRD schema only admits In, NotIn, Exists, DoesNotExist (R1.6), so the
    # API server rejects the file. The first key also has a '.' where Cilium needs ':' after the
    # source, so even with `In` that branch would select nothing.
    "l3__match-expressions__or-statement.yaml": [
        assumed_default("or-statement-policy"),
        ("warning", "spec.ingress[0].fromEndpoints[0].matchExpressions[0].key", 10, 9,
         "no identity carries the label key 'k8s.io.kubernetes.pod.namespace': a source prefix is "
         "separated by ':', not '.'; did you mean 'k8s:io.kubernetes.pod.namespace'?"),
        ("error", "spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator", 11, 9,
         "invalid operator 'in': expected In, NotIn, Exists or DoesNotExist; did you mean 'In'? "
         "(operators are case-sensitive)"),
    ],
    # Kafka L7 rules: deprecated in 1.18, removed for 1.20 (V2); the port is still allowed.
    "getting-started__kafka.yaml": [
        TOP_LEVEL_DESCRIPTION,
        assumed_default("rule2", 4),
        ("warning", "spec.ingress[0].toPorts[0].rules.kafka", 19, 9,
         "Kafka L7 rules are deprecated and removed in Cilium 1.20 (V2); modelled as an opaque L7 "
         "filter on an allowed port"),
    ],
    # `description` written next to `metadata` instead of inside the rule: not part of the CRD.
    "kubernetes__clusterwide__wildcard-from-endpoints.yaml": [TOP_LEVEL_DESCRIPTION],
    **{f"{file}.yaml": [assumed_default(name)] for file, name in (
        ("getting-started__l7-policy", "l7-rule"), ("kubernetes__serviceaccount__serviceaccount-policy", "k8s-svc-account"),
        ("l3__cidr__cidr", "cidr-rule"), ("l3__egress-deny__egress-deny", "deny-egress-example"),
        ("l3__entities__world", "from-world-to-role-public"), ("l3__fqdn__fqdn", "to-fqdn"), ("l4__icmp", "icmp-rule"))},
}


def validate(capsys, path: Path) -> tuple[int, dict]:
    code = main(["validate", str(path), "--format", "json"])
    out, err = capsys.readouterr()
    assert err == "", err
    return code, json.loads(out)


def test_corpus_is_there():
    assert len(FILES) >= 11
    names = {p.name for p in FILES}
    assert set(EXPECTED) <= names, f"listed but missing from the corpus: {set(EXPECTED) - names}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus_file(path: Path, capsys):
    code, report = validate(capsys, path)
    got = [(d["severity"], d["field"], d["line"], d["column"], d["message"]) for d in report["diagnostics"]]
    for d in report["diagnostics"]:
        assert Path(d["file"]).resolve() == path.resolve()
    want = EXPECTED.get(path.name, [])
    assert got == want, (f"{path.name}: diagnostics changed; if this is a new corpus file with diagnostics, "
                         f"list them in EXPECTED")
    assert code == (2 if any(w[0] == "error" for w in want) else 0)
    assert report["valid"] is (code == 0)
    if code == 0:
        assert report["policies"] >= 1


def test_whole_corpus_at_once(capsys):
    """One directory argument: the bad file is reported and the exit status is 2, nothing else breaks."""
    code, report = validate(capsys, CORPUS)
    assert code == 2
    errors = [d for d in report["diagnostics"] if d["severity"] == "error"]
    assert [Path(d["file"]).name for d in errors] == ["l3__match-expressions__or-statement.yaml"]


# What `policyc check` should find in each file beyond PC008/PC009 (namespaces that no policy of
# this one file puts in default-deny: true of any single example, not worth pinning).
EXPECTED_FINDINGS = {
    # toFQDNs with only an L3 rule to kube-dns: no DNS rule, so the DNS proxy never sees a lookup
    # and the FQDN peer never matches (R10.1; cilium issue 32567, a maintainer: port 53 DNS rules
    # "also required for ToFQDN rules to work").
    "l3__fqdn__fqdn.yaml": {"PC014"},
    # fromEndpoints: [{}] in a CCNP admits every pod of every namespace (R2.13).
    "kubernetes__clusterwide__wildcard-from-endpoints.yaml": {"PC012"},
    # fromEntities: [world] without toPorts opens every port and protocol to the internet.
    "l3__entities__world.yaml": {"PC011"},
}
NOISE = {"PC008", "PC009"}


@pytest.mark.parametrize("path", [p for p in FILES if not any(e[0] == "error" for e in EXPECTED.get(p.name, []))],
                         ids=lambda p: p.name)
def test_corpus_findings(path: Path, capsys):
    code = main(["check", str(path), "--format", "json", "--fail-on", "never"])
    out, _ = capsys.readouterr()
    assert code == 0
    found = {f["id"] for f in json.loads(out)["findings"]} - NOISE
    assert found == EXPECTED_FINDINGS.get(path.name, set())
