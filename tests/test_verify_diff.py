"""`policyc diff`: a one-port change is exactly that change; witnesses replay; no change means no difference."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from irgen import EXTERNALS, inventories, policy_sets

from policyc.cli import main
from policyc.compiler.evaluate import Evaluator, Flow
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.ir import Direction, PolicySet, Protocol
from policyc.compiler.source import load_documents
from policyc.compiler.verify.diff import render_markdown, semantic_diff

DATA = Path(__file__).parent / "data" / "diff"


def _load(name: str) -> PolicySet:
    return build_policy_set(load_documents([DATA / name])).policy


def _side(policy, flow, direction):
    v = Evaluator(policy).evaluate(flow)
    return v.egress if direction is Direction.EGRESS else v.ingress


def test_one_port_change_is_exactly_that_change():
    old, new = _load("old.yaml"), _load("new.yaml")
    result = semantic_diff(old, new)
    assert [(c.widened, c.direction, c.ports) for c in result.changes] == [(True, Direction.INGRESS, ("443/TCP",))]
    back = semantic_diff(new, old).changes
    assert [(c.widened, c.direction, c.ports) for c in back] == [(False, Direction.INGRESS, ("443/TCP",))]
    assert semantic_diff(old, old).changes == ()
    assert "443/TCP" in render_markdown(result)


def test_cli_text_names_the_change_and_its_rule(capsys):
    assert main(["diff", str(DATA / "old.yaml"), str(DATA / "new.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{DATA / 'new.yaml'}:10:7: note: PC020 access-widened: newly allowed: ingress")
    assert "ports 443/TCP (" in lines[0] and "443/TCP (ingress allowed)" in lines[1]
    assert lines[-1].startswith("1 finding(s)")


def test_cli_gates(capsys):
    old, new = str(DATA / "old.yaml"), str(DATA / "new.yaml")
    assert main(["diff", old, new]) == 0
    assert main(["diff", old, new, "--no-new-access"]) == 1
    assert main(["diff", new, old, "--no-new-access"]) == 0
    assert main(["diff", new, old, "--fail-on-change"]) == 1
    assert main(["diff", old, old, "--fail-on-change", "--format", "markdown"]) == 0
    assert "No change" in capsys.readouterr().out


def _replay(old, new, changes):
    for c in changes:
        w = c.witness
        before, after = _side(old, w.flow, c.direction), _side(new, w.flow, c.direction)
        assert after.allowed == c.widened and before.allowed != c.widened, c


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(old=policy_sets(4), new=policy_sets(4), inventory=inventories(), data=st.data())
def test_diff_witnesses_replay_and_no_change_is_really_none(old, new, inventory, data):
    renamed = tuple(replace(r, id=f"new-{r.id}") for r in new.rules)
    new = PolicySet(old.rules[: data.draw(st.integers(0, len(old.rules)))] + renamed, new.default_deny,
                    new.policies)
    changes = semantic_diff(old, new).changes
    _replay(old, new, changes)
    exact = semantic_diff(old, new, inventory).changes
    _replay(old, new, exact)
    if not exact:
        peers = inventory.endpoints + EXTERNALS
        for src in peers:
            for dst in peers:
                if src == dst:
                    continue
                for port in (53, 80, 443, 8080):
                    flow = Flow(src, dst, Protocol.TCP, port)
                    for d in Direction:
                        assert _side(old, flow, d).allowed == _side(new, flow, d).allowed, (flow, d)


def _overall(policy, flow) -> bool:
    return Evaluator(policy).evaluate(flow).allowed


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(old=policy_sets(4), new=policy_sets(4), inventory=inventories())
def test_connection_flag_matches_whole_connections(old, new, inventory):
    """A change claims a connection change only with a witness whose overall verdict flips, and any flow
    whose overall verdict flips is covered by such a change."""
    new = PolicySet(tuple(replace(r, id=f"new-{r.id}") for r in new.rules), new.default_deny, new.policies)
    changes = semantic_diff(old, new, inventory).changes
    for c in changes:
        if c.connection:
            assert _overall(new, c.witness.flow) == c.widened != _overall(old, c.witness.flow), c
    peers = inventory.endpoints + EXTERNALS
    flows = [Flow(s, d, Protocol.TCP, p) for s in peers for d in peers if s != d for p in (53, 80, 443, 8080)]
    for widened in (True, False):
        flipped = [f for f in flows if _overall(new, f) == widened != _overall(old, f)]
        assert bool(flipped) <= any(c.widened == widened and c.connection for c in changes), flipped[:1]


HALF_OPEN = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}%s]}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress:
  - toEndpoints: [{matchLabels: {app: api}}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}%s]}]
"""


def test_one_side_opened_is_reported_but_does_not_fail_the_gate(tmp_path, capsys):
    """Teams open ingress in one change and egress in the next: only the second creates new access."""
    extra = ', {port: "8081", protocol: TCP}'
    files = {name: tmp_path / f"{name}.yaml" for name in ("old", "ingress", "both")}
    files["old"].write_text(HALF_OPEN % ("", ""))
    files["ingress"].write_text(HALF_OPEN % (extra, ""))
    files["both"].write_text(HALF_OPEN % (extra, extra))
    assert main(["diff", str(files["old"]), str(files["ingress"]), "--no-new-access"]) == 0
    out = capsys.readouterr().out
    assert "newly allowed: ingress" in out and "8081/TCP" in out
    assert "no connection changes: the egress side still denies these flows" in out
    assert main(["diff", str(files["ingress"]), str(files["both"]), "--no-new-access"]) == 1
    out = capsys.readouterr().out
    assert "newly allowed: egress" in out and "no connection changes" not in out
    assert main(["diff", str(files["old"]), str(files["both"]), "--no-new-access", "--format", "markdown"]) == 1
    assert "no connection changes" not in capsys.readouterr().out
