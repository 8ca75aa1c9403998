"""The verifier held to the evaluator over generated policy YAML (CNP, CCNP, KNP) and inventories.

(a) Every flow that goes from deny to allow between two policy sets makes the merge gate fail, and
    lies in a group the gate names as a new connection; with and without an inventory.
(b) Every rule `check` calls removable (shadowed, dead, duplicate, ineffective, covered L7 entry) can
    be deleted from its YAML without changing one verdict; and so can all of them at once.
(c) Every witness replays: the evaluator gives it the verdict claimed, for the rules claimed.

The judge is the concrete evaluator over every pod, node and address of the inventory (some with DNS
names), on probe ports with HTTP and DNS requests and failed handshakes.  Example counts come from the
hypothesis profile: ``ci`` (the default, a few minutes) or ``nightly`` (bench/verify_properties.py).
"""
from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policygen import changed, flows, inventories, parse, policy_docs, without

from policyc.compiler.evaluate import ALWAYS_FAIL, Evaluator, Reason
from policyc.compiler.ir import Direction
from policyc.compiler.verify.checks import run_checks
from policyc.compiler.verify.diff import semantic_diff
from test_verify_checks import replay

COMMON = dict(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
settings.register_profile("ci", max_examples=int(os.environ.get("POLICYC_PROPERTY_EXAMPLES", "800")),
                          derandomize=True, **COMMON)
settings.register_profile("nightly", max_examples=int(os.environ.get("POLICYC_PROPERTY_EXAMPLES", "5000")),
                          **COMMON)
PROFILE = settings.get_profile(os.environ.get("POLICYC_PROPERTY_PROFILE", "ci"))
CHECKED = settings(PROFILE, max_examples=max(1, PROFILE.max_examples // 2))  # check's queries cost more per set
COUNTS: Counter = Counter()  # what the properties saw, for bench/verify_properties.py
REMOVABLE = {"PC001", "PC002", "PC003", "PC005", "PC018"}
_UNENFORCED = {Reason.LOCALHOST, Reason.NOT_ENDPOINT, Reason.SELF}


def _side(verdict, direction: Direction):
    return verdict.egress if direction is Direction.EGRESS else verdict.ingress


def _same_reason(v, claimed) -> bool:
    """``v`` lies in the group of flows decided like ``claimed`` (diff._Side.reason, concretely)."""
    if v.reason in _UNENFORCED or claimed.reason in _UNENFORCED:
        return v.reason in _UNENFORCED and claimed.reason in _UNENFORCED
    return v.reason is claimed.reason and (not claimed.rules or bool(set(v.rules) & set(claimed.rules)))


def _in_group(change, before, after) -> bool:
    return (_same_reason(_side(before, change.direction), change.before)
            and _same_reason(_side(after, change.direction), change.after))


def _replay_changes(result, ev_old, ev_new) -> None:
    """(c) for diff: each witness changes as claimed on its side; a new connection's changes overall."""
    for c in result.changes:
        before, after = ev_old.evaluate(c.witness.flow), ev_new.evaluate(c.witness.flow)
        assert _side(after, c.direction).allowed == c.widened != _side(before, c.direction).allowed, c
        if c.connection:
            assert after.allowed == c.widened != before.allowed, c
        COUNTS["diff witnesses replayed"] += 1


def _gate_holds(result, opened, ev_old, ev_new) -> None:
    """(a): every flow the judge saw open fails the gate and lies in a group it names as a new connection."""
    if not opened:
        return
    assert result.new_connections, opened[0]
    for flow, before, after in opened:
        sides = [d for d in Direction if not _side(before, d).allowed and _side(after, d).allowed]
        for d in sides:
            assert any(_in_group(c, before, after) for c in result.new_connections if c.direction is d), \
                (flow, d, [str(c.finding().message) for c in result.new_connections])
    COUNTS["new flows named"] += len(opened)


@PROFILE
@given(docs=policy_docs(), inventory=inventories(), data=st.data())
def test_gate_fails_on_every_new_flow_and_names_it(docs, inventory, data):
    new_docs = data.draw(changed(docs))
    old, new = parse(docs), parse(new_docs)
    ev_old, ev_new = Evaluator(old), Evaluator(new)
    opened = []
    for flow in flows(inventory, old, new):
        before, after = ev_old.evaluate(flow), ev_new.evaluate(flow)
        if after.allowed and not before.allowed:
            opened.append((flow, before, after))
        COUNTS["flows judged"] += 1
    COUNTS["pairs"] += 1
    COUNTS["pairs opening a flow"] += bool(opened)
    exact = semantic_diff(old, new, inventory)
    _replay_changes(exact, ev_old, ev_new)
    _gate_holds(exact, opened, ev_old, ev_new)
    if opened or data.draw(st.integers(0, 4)) == 0:  # every possible pod: as sound, checked less often
        symbolic = semantic_diff(old, new)
        _replay_changes(symbolic, ev_old, ev_new)
        assert symbolic.new_connections or not symbolic.gate_complete or not opened, opened[0]
        COUNTS["pairs diffed symbolically"] += 1


def _verdicts(policy, universe) -> list[bool]:
    ev = Evaluator(policy)
    return [ev.evaluate(f).allowed for f in universe]


@CHECKED
@given(docs=policy_docs(), inventory=inventories(), symbolic=st.booleans())
def test_every_removable_rule_can_be_deleted_and_every_witness_replays(docs, inventory, symbolic):
    policy = parse(docs)
    findings = run_checks(policy, None if symbolic else inventory)
    COUNTS["policy sets checked"] += 1
    universe = list(flows(inventory, policy))
    reference = None
    # known gap (docs/checks.md): a witness beside a test-always-fail rule may claim the wrong verdict
    fails = any(r.auth == ALWAYS_FAIL for r in policy.rules)
    for finding in findings:
        if not fails:
            replay(policy, finding)
            COUNTS["check witnesses replayed"] += finding.witness is not None and finding.witness.flow is not None
        if finding.check not in REMOVABLE | {"PC019"}:
            continue
        reference = reference or _verdicts(policy, universe)
        smaller = without(docs, **_deletion(policy, finding))
        assert _verdicts(parse(smaller), universe) == reference, (finding.check, finding.message, finding.location)
        COUNTS[f"{finding.check} deletions judged"] += 1


def _deletion(policy, finding) -> dict:
    """What acting on ``finding`` deletes, as ``without``'s keywords: the later policy of a duplicate pair,
    the covered L7 entry, or the rule."""
    if finding.check == "PC004":
        return {"policies": [finding.policy.split()[-1].rsplit("/", 1)[-1]]}
    rule = next(r for r in policy.rules if r.origin.path == finding.location.field
                and r.origin.file == finding.location.file)
    if finding.check == "PC019":
        kind, index = finding.key.rstrip("]").split("[")
        l7 = next(pm.l7 for pm in rule.ports if pm.l7 and pm.l7.kind == kind)
        return {"entries": [(rule.origin, kind, int(index), l7.http if kind == "http" else l7.dns)]}
    return {"rules": [rule.origin]}


@settings(CHECKED, max_examples=min(CHECKED.max_examples, 60), derandomize=True)
@given(docs=policy_docs(max_denies=2), inventory=inventories(), symbolic=st.booleans())
def test_all_removable_rules_can_be_deleted_at_once(docs, inventory, symbolic):
    """(b) jointly: a user who acts on every finding that recommends a deletion (the duplicate policies,
    the covered L7 entries, the rules) changes no verdict.  Two deny rules per section, which together
    imply the section's default-deny: each may look deletable alone while deleting both is not (issue: PC018
    on one and PC005 on the other)."""
    policy = parse(docs)
    findings = [f for f in run_checks(policy, None if symbolic else inventory)
                if f.check in REMOVABLE | {"PC004", "PC019"}]
    if len(findings) < 2:
        return  # one deletion at a time is the property above
    deletions = [_deletion(policy, f) for f in findings]
    smaller = without(docs, **{k: [x for d in deletions for x in d.get(k, ())]
                               for k in ("rules", "entries", "policies")})
    universe = list(flows(inventory, policy))
    assert _verdicts(parse(smaller), universe) == _verdicts(policy, universe), [(f.check, f.location) for f in findings]
    COUNTS["joint deletions judged"] += 1
