"""The Z3 encoding against the concrete evaluator: same verdict for every concrete flow, and models decode
to flows the evaluator agrees with."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
import z3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from irgen import EXTERNALS, RESERVED, inventories, policy_sets

from policyc.compiler.evaluate import Evaluator, Flow
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.inventory import load_inventory
from policyc.compiler.ir import Protocol
from policyc.compiler.source import load_documents
from policyc.compiler.verify.encode import InventorySpace, SymbolicSpace, new_flow

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _z3_verdict(space, policy, flow: Flow) -> bool:
    solver = z3.Solver()
    sym = new_flow(space, solver)
    allowed = space.allows(policy, sym)
    solver.add(*sym.fix(flow))
    assert solver.check() == z3.sat, "the concrete flow must be expressible"
    return z3.is_true(solver.model().eval(allowed, model_completion=True))


def _spaces(policy, inventory):
    return (InventorySpace(inventory), SymbolicSpace.for_rules(policy.rules, policy.default_deny))


@SETTINGS
@given(policy=policy_sets(), inventory=inventories(), data=st.data())
def test_z3_verdict_equals_evaluator(policy, inventory, data):
    peers = inventory.endpoints + EXTERNALS + RESERVED
    src = data.draw(st.sampled_from(peers))
    dst = data.draw(st.sampled_from([p for p in peers if p != src]))
    flow = Flow(src, dst, data.draw(st.sampled_from((Protocol.TCP, Protocol.UDP, Protocol.ICMP))),
                data.draw(st.sampled_from((53, 80, 443, 8080, 9000))))
    want = Evaluator(policy).evaluate(flow).allowed
    for space in _spaces(policy, inventory):
        assert _z3_verdict(space, policy, flow) == want, type(space).__name__


@SETTINGS
@given(policy=policy_sets(), inventory=inventories(), want=st.booleans())
def test_models_decode_to_flows_with_the_same_verdict(policy, inventory, want):
    for space in _spaces(policy, inventory):
        solver = z3.Solver()
        sym = new_flow(space, solver)
        solver.add(space.allows(policy, sym) == want)
        if solver.check() == z3.sat:
            flow = sym.decode(solver.model())
            assert Evaluator(policy).evaluate(flow).allowed == want, (type(space).__name__, flow)


def _cases(shared: Path):
    return sorted(p for p in (shared / "conformance").iterdir() if p.is_dir())


def test_conformance_probes_agree(shared):
    """Every conformance probe: Z3 (both universes) says what the evaluator says."""
    for case in _cases(shared):
        docs = load_documents([case / "policies"]) if (case / "policies").is_dir() else []
        policy = build_policy_set(docs).policy
        inventory = load_inventory([case / "inventory.yaml"])
        evaluator = Evaluator(policy)
        probes = yaml.safe_load((case / "expected.yaml").read_text())["probes"]
        for space in _spaces(policy, inventory):
            solver = z3.Solver()
            sym = new_flow(space, solver)
            allowed = space.allows(policy, sym)
            for p in probes[::3]:
                flow = Flow(inventory.find(p["from"]), inventory.find(p["to"]), Protocol.parse(p["protocol"]),
                            int(p["port"]))
                solver.push()
                solver.add(*sym.fix(flow), allowed != evaluator.evaluate(flow).allowed)
                assert solver.check() == z3.unsat, (case.name, type(space).__name__, p)
                solver.pop()


@pytest.mark.parametrize("pattern,yes,no", [
    ("GET|HEAD", ["GET", "HEAD"], ["PUT", "GETS"]),
    ("/api/v[0-9]+/.*", ["/api/v1/", "/api/v22/users"], ["/api/v/", "/api/vx/"]),
    ("^/exact$", ["/exact"], ["/exact/"]),
    ("[^/]+\\.html?", ["a.htm", "index.html"], ["a/b.html"]),
    ("a{2,3}", ["aa", "aaa"], ["a", "aaaa"]),
])
def test_regex_translation_matches_python(pattern, yes, no):
    import re

    from policyc.compiler.verify.regex import to_z3
    for text in yes + no:
        solver = z3.Solver()
        solver.add(z3.InRe(z3.StringVal(text), to_z3(pattern)))
        assert (solver.check() == z3.sat) == (text in yes) == bool(re.fullmatch(pattern, text))


@pytest.mark.parametrize("pattern", ["(?i)get", "a\\bc", "[[:alpha:]]", "a**", "x{5000}", "a^b", "(a)\\1"])
def test_unsupported_regex_is_a_diagnostic(pattern):
    from policyc.compiler.verify.regex import check
    assert check(pattern)
