"""`policyc check`: planted defects at the right lines and nothing else; witnesses replay in the evaluator;
suppressions, baseline, SARIF and exit codes."""
from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from irgen import inventories, peers, policy_sets

from policyc.cli import main
from policyc.compiler.evaluate import Evaluator, Flow, peer_labels, rule_matches, selects
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.inventory import external
from policyc.compiler.ir import Action, DefaultDeny, Direction, Protocol
from policyc.compiler.source import load_documents
from policyc.compiler.verify import checks
from policyc.compiler.verify.checks import Context, _deletable, run_checks, suppress
from policyc.compiler.verify.findings import CATALOGUE, Finding

DATA = Path(__file__).parent / "data" / "check"
PLANTED = DATA / "planted.yaml"
JOINT = DATA / "joint.yaml"
DELETING = {"PC001", "PC002", "PC003", "PC005", "PC018"}


def _expected(path: Path) -> set[tuple[str, int]]:
    return {(m.group(1), i) for i, line in enumerate(path.read_text().splitlines(), 1)
            for m in re.finditer(r"expect: (PC\d{3})", line)}


def replay(policy, finding: Finding) -> None:
    """A witness flow gets the claimed verdict in its direction, and the claimed rules match it."""
    w = finding.witness
    if w is None or w.flow is None:
        return
    f = w.flow
    verdict = Evaluator(policy).evaluate(f)
    side = verdict.egress if w.direction is Direction.EGRESS else verdict.ingress
    if w.allowed is not None:
        assert side.allowed == w.allowed, (finding, verdict)
    subject, peer = (f.src, f.dst) if w.direction is Direction.EGRESS else (f.dst, f.src)
    rules = {r.id: r for r in policy.rules}
    for rid in w.matching:
        rule = rules[rid]
        assert selects(rule.subject_kind, rule.subject, subject), (finding, rid)
        assert rule_matches(rule, peer, peer_labels(peer, subject), f.protocol, f.port, f.dst), (finding, rid)
    if finding.check == "PC013":
        assert side.l7 == (), "the L7 filter must really be bypassed for the witness"


def test_planted_defects_reported_at_their_lines_and_nothing_else():
    policy = build_policy_set(load_documents([PLANTED])).policy
    findings = run_checks(policy)
    got = {(f.check, f.location.line) for f in findings}
    assert got == _expected(PLANTED)
    for f in findings:
        replay(policy, f)
    # every finding about traffic shows some: only the duplicate policy (its rules are reported nowhere
    # else) and the contradictory selector (no flow can exist) come without a witness
    assert {f.check for f in findings if f.witness is None} == {"PC004", "PC006"}


def test_annotation_and_baseline_suppress(tmp_path, capsys):
    text = PLANTED.read_text().replace("  name: shop-baseline\n",
                                       "  name: shop-baseline\n  annotations:\n    policyc.io/ignore: PC001,PC003\n")
    target = tmp_path / "p.yaml"
    target.write_text(text)
    policy = build_policy_set(load_documents([target])).policy
    ids = {f.check for f in suppress(run_checks(policy), policy)}
    assert "PC001" not in ids and "PC003" not in ids and "PC002" in ids
    assert main([ "check", str(target), "--format", "json", "--fail-on", "never"]) == 0
    baseline = tmp_path / "baseline.json"
    baseline.write_text(capsys.readouterr().out)
    assert main(["check", str(target), "--baseline", str(baseline), "--fail-on", "note"]) == 0
    assert "0 finding(s)" in capsys.readouterr().out


def test_exit_codes(tmp_path, capsys):
    assert main(["check", str(PLANTED)]) == 1                      # PC006 is an error
    assert main(["check", str(PLANTED), "--fail-on", "never"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: a}\nspec: 3\n")
    assert main(["check", str(bad)]) == 2
    assert main(["check", str(PLANTED), "--baseline", str(bad)]) == 2
    capsys.readouterr()


def test_sarif_has_rules_help_and_regions(capsys):
    main(["check", str(PLANTED), "--format", "sarif", "--fail-on", "never"])
    log = json.loads(capsys.readouterr().out)
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert {r["id"] for r in rules} == set(CATALOGUE)
    assert all(r["help"]["text"] and r["helpUri"] for r in rules)
    for res in run["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        region = res["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1
        assert res["partialFingerprints"]["policyc/v1"]


def reported_deletions(policy, findings) -> set[str]:
    """The ids of the rules a user acting on every finding deletes: each rule reported, and the rules of
    each duplicate policy (PC004)."""
    located = {(f.location.file, f.location.field) for f in findings if f.check in DELETING}
    policies = {f.policy for f in findings if f.check == "PC004"}
    return {r.id for r in policy.rules
            if (r.origin.file, r.origin.path) in located or checks._policy_name(r.origin) in policies}


def test_reported_deletions_hold_together():
    """Two deny rules of one section, each deletable alone: deleting every rule check reports keeps the
    world out of db (it deleted both, and with them db's ingress default-deny)."""
    policy = build_policy_set(load_documents([JOINT])).policy
    findings = run_checks(policy)
    db = next(f.witness.flow.dst for f in findings if f.check == "PC018")
    flows = [f.witness.flow for f in findings if f.witness and f.witness.flow] + [
        Flow(external(ipaddress.ip_address("8.8.8.8")), db, Protocol.TCP, port) for port in (80, 443)]
    before, after = Evaluator(policy), Evaluator(policy.without(reported_deletions(policy, findings)))
    assert [after.evaluate(f).allowed for f in flows] == [before.evaluate(f).allowed for f in flows]
    assert not any(before.evaluate(f).allowed for f in flows[-2:])
    assert [f.check for f in findings if f.check in DELETING] == ["PC018"]  # the covered one goes, alone


def test_a_cited_rule_reported_for_deletion_too_is_said_to_be(tmp_path):
    """The earlier rule a duplicate repeats is itself ineffective once the duplicate is gone (PC005): both
    go, and the duplicate's finding says its earlier rule goes too, rather than suggest that it stays."""
    target = tmp_path / "p.yaml"
    deny = "  ingressDeny:\n  - fromEntities: [world]\n"
    head = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {}, namespace: shop}}\n" \
           "spec:\n  endpointSelector: {{matchLabels: {{app: db}}}}\n"
    target.write_text(head.format("db") + "  ingress:\n  - fromEndpoints: [{matchLabels: {app: web}}]\n" + deny
                      + "---\n" + head.format("db-world") + deny)
    policy = build_policy_set(load_documents([target])).policy
    findings = {f.check: f for f in run_checks(policy) if f.check in DELETING}
    assert set(findings) == {"PC003", "PC005"}
    assert [loc.message for loc in findings["PC003"].related] == ["the earlier rule" + checks.DELETED_TOO]
    assert findings["PC003"].related[0].line == findings["PC005"].location.line


def test_no_deletion_near_a_service_that_does_not_exist_yet():
    """web may reach Service shop/dbsvc, which no inventory holds yet, and its egress deny keeps it from
    db:80. The deny decides nothing today (the toServices entry allows nothing), but once dbsvc selects
    db, deleting it lets web in: PC005 said it could go."""
    policy = build_policy_set(load_documents([DATA / "service-later.yaml"])).policy
    assert not [f for f in run_checks(policy) if f.check in DELETING]


def test_a_duplicate_policys_earlier_policy_reported_for_deletion_too_is_said_to_be(tmp_path):
    """a and b are equal (PC004 on b) and c covers a's only rule (PC001 on a): acting on both deletes a
    too, so PC004's "the earlier policy" says it goes as well."""
    head = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {}, namespace: shop}}\n" \
           "spec:\n  endpointSelector: {{matchLabels: {{app: db}}}}\n  ingress:\n" \
           "  - fromEndpoints: [{{matchLabels: {{app: web}}}}]\n"
    port = "    toPorts: [{ports: [{port: '80', protocol: TCP}]}]\n"
    target = tmp_path / "p.yaml"
    target.write_text(head.format("a") + port + "---\n" + head.format("b") + port + "---\n" + head.format("c"))
    policy = build_policy_set(load_documents([target])).policy
    findings = {f.check: f for f in run_checks(policy)}
    assert {"PC001", "PC004"} <= set(findings)
    assert [loc.message for loc in findings["PC004"].related] == ["the earlier policy" + checks.DELETED_TOO]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets(max_rules=6), inventory=inventories())
def test_every_witness_replays(policy, inventory):
    for inv in (None, inventory):
        for finding in run_checks(policy, inv):
            replay(policy, finding)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets(max_rules=6))
def test_deletion_proofs_do_not_depend_on_their_order(policy):
    """Every deletion proof is a scope of one shared solver (issue 15): a proof that left a constraint
    behind would answer the next rule's question under the last one's subject, so the answers would
    depend on the order they are asked in, and the solver would not be back at its base."""
    forward, backward = Context(policy), Context(policy)
    ahead = [_deletable(forward, r) for r in policy.rules]
    behind = [_deletable(backward, r) for r in reversed(policy.rules)][::-1]
    assert ahead == behind
    for ctx in (forward, backward):
        assert ctx.deletions.solver.num_scopes() == 0


@st.composite
def own_default_deny(draw):
    """A policy set whose rules each switch their subjects to default-deny, as a Cilium policy's sections do
    (R3.2): the case where deny rules are plainly without effect.  Some sections hold a second rule (same
    subject, other peers or action): their entry stays while either is left."""
    policy = draw(policy_sets(max_rules=6))
    rules, own = list(policy.rules), []
    for r in policy.rules:
        if not draw(st.booleans()):
            continue
        section = [r]
        if draw(st.booleans()):
            section.append(replace(r, id=f"{r.id}s", origin=replace(r.origin, line=r.origin.line + 1000),
                                   peers=tuple(draw(st.lists(peers(), min_size=1, max_size=2))),
                                   action=draw(st.sampled_from(list(Action)))))
            rules.append(section[-1])
        own.append(DefaultDeny(r.subject, r.subject_kind, r.direction, r.origin, tuple(x.id for x in section)))
    return replace(policy, rules=tuple(rules), default_deny=policy.default_deny + tuple(own))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=own_default_deny(), inventory=inventories())
def test_deny_rules_decided_without_z3_are_what_z3_proves(policy, inventory):
    """PC005's two shortcuts answer as the queries they skip: a deny rule no allow meets, under a
    default-deny entry that selects its subjects, is ineffective over the inventory and deletable; and so
    they do once the checks have reported rules for deletion, over the policy without them."""
    ctx = Context(policy, inventory)
    for reported in (False, True):
        for check in checks.CHECKS if reported else ():
            check(ctx)
        for rule in policy.rules:
            if rule.action is not Action.DENY:
                continue
            allows, dds = ctx.neighbours(rule, Action.ALLOW), ctx.default_denies(rule)
            assert checks._ineffective(ctx, rule) == checks._proves_ineffective(ctx, rule, allows, dds), rule
            near = checks._near(ctx, rule)
            for pair in (checks._split(near, rule, ctx.deleted), checks._split(near, rule, ())):
                assert checks._deny_meets_no_allow(rule, *pair) <= checks._proves_deletable(ctx, rule, *pair), rule


def test_pc005_decides_a_generated_clusters_deny_rules_without_z3(tmp_path, monkeypatch):
    """gen_cluster's Cilium policies deny the world a port range no allow rule opens, under their own
    default-deny: each such rule is PC005, decided without a query (issue 15: two queries a rule were a
    third of `check` at 10,000 pods).  Only the clusterwide egress deny, which allow rules meet, is asked."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import gen_cluster

    from policyc.compiler.inventory import load_inventory
    gen_cluster.generate(tmp_path, 150, 150, "cilium", seed=3)
    policy = build_policy_set(load_documents([tmp_path / "policies"])).policy
    asked = []
    for name in ("_proves_ineffective", "_proves_deletable"):
        proof = getattr(checks, name)
        monkeypatch.setattr(checks, name, lambda ctx, rule, *rest, proof=proof: asked.append(rule.id) or
                            proof(ctx, rule, *rest))
    reported = [f for f in run_checks(policy, load_inventory([tmp_path / "inventory.yaml"])) if f.check == "PC005"]
    assert len(reported) > 50 and len(set(asked)) <= 1, (len(reported), asked)
