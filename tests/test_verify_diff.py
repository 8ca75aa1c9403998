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
    changes = semantic_diff(old, new)
    assert [(c.widened, c.direction, c.ports) for c in changes] == [(True, Direction.INGRESS, ("443/TCP",))]
    back = semantic_diff(new, old)
    assert [(c.widened, c.direction, c.ports) for c in back] == [(False, Direction.INGRESS, ("443/TCP",))]
    assert semantic_diff(old, old) == []
    assert "443/TCP" in render_markdown(changes)


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
    changes = semantic_diff(old, new)
    _replay(old, new, changes)
    exact = semantic_diff(old, new, inventory)
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
