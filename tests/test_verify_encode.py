"""The Z3 encoding against the concrete evaluator: same verdict for every concrete flow, and models decode
to flows the evaluator agrees with."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
import z3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from irgen import EXTERNALS, RESERVED, inventories, policy_sets

from cases import inventory as case_inventory, own_cases, params

from policyc.compiler.evaluate import Evaluator, Flow, possible
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.inventory import load_inventory
from policyc.compiler.ir import Direction, EndpointKind, Protocol
from policyc.compiler.source import load_documents
from policyc.compiler.verify.encode import FLOW_PROTOCOLS, InventorySpace, SymbolicSpace, new_flow

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def _z3_verdict(space, policy, flow: Flow) -> tuple[bool, bool, bool] | None:
    """(allowed, egress allows, ingress allows) as Z3 sees the concrete flow; None when Z3 says no such flow."""
    solver = z3.Solver()
    sym = new_flow(space, solver)
    exprs = (space.allows(policy, sym), space.direction_allows(policy, Direction.EGRESS, sym),
             space.direction_allows(policy, Direction.INGRESS, sym))
    solver.add(*sym.fix(flow))
    if solver.check() != z3.sat:
        return None
    return tuple(z3.is_true(solver.model().eval(e, model_completion=True)) for e in exprs)


def _spaces(policy, inventory):
    return (InventorySpace(inventory), SymbolicSpace.for_rules(policy.rules, policy.default_deny))


@SETTINGS
@given(policy=policy_sets(), inventory=inventories(), data=st.data())
def test_z3_verdict_equals_evaluator(policy, inventory, data):
    peers = inventory.endpoints + EXTERNALS + RESERVED
    src = data.draw(st.sampled_from(peers))
    dst = data.draw(st.sampled_from([p for p in peers if p != src]))
    proto = data.draw(st.sampled_from(FLOW_PROTOCOLS))
    icmp = proto in (Protocol.ICMP, Protocol.ICMPV6)  # the port slot holds the type, 0-255
    flow = Flow(src, dst, proto, data.draw(st.sampled_from((0, 8, 53, 63, 80, 128, 255) if icmp else
                                                           (0, 53, 63, 80, 443, 8080, 8090, 9000, 65535))))
    v = Evaluator(policy).evaluate(flow)
    verdict = (v.allowed, v.egress.allowed, v.ingress.allowed)
    # ICMPv4 to or from an IPv6-only address is no flow at all; invented pods have no address (either family)
    addressless = replace(flow, src=_invented(flow.src), dst=_invented(flow.dst))
    inventory_space, symbolic_space = _spaces(policy, inventory)
    assert _z3_verdict(inventory_space, policy, flow) == (verdict if possible(flow) else None)
    assert _z3_verdict(symbolic_space, policy, flow) == (verdict if possible(addressless) else None)


def _invented(ep):
    return ep if ep.kind is EndpointKind.EXTERNAL else replace(ep, ips=())


@SETTINGS
@given(policy=policy_sets(), inventory=inventories(), want=st.booleans(),
       direction=st.sampled_from((None,) + tuple(Direction)))
def test_models_decode_to_flows_with_the_same_verdict(policy, inventory, want, direction):
    """Overall or one direction's verdict: whatever Z3 finds decodes to a flow the evaluator agrees on."""
    for space in _spaces(policy, inventory):
        solver = z3.Solver()
        sym = new_flow(space, solver)
        expr = space.allows(policy, sym) if direction is None else space.direction_allows(policy, direction, sym)
        solver.add(expr == want)
        if direction is not None:  # a flow to itself never meets either direction's decision (R11.5)
            solver.add(z3.Not(sym.same))
        if solver.check() == z3.sat:
            flow = sym.decode(solver.model())
            v = Evaluator(policy).evaluate(flow)
            got = v.allowed if direction is None else (v.egress if direction is Direction.EGRESS else v.ingress).allowed
            assert got == want, (type(space).__name__, flow)


@pytest.mark.parametrize("case", params(own_cases()))
def test_conformance_probes_agree(case: Path):
    """Conformance probes: Z3 (both universes) says what the evaluator says (a third of a shared
    case's exhaustive probes; every probe of an own case, which lists only the telling ones)."""
    docs = load_documents([case / "policies"]) if (case / "policies").is_dir() else []
    policy = build_policy_set(docs).policy
    inventory = load_inventory([case_inventory(case)])
    evaluator = Evaluator(policy)
    probes = yaml.safe_load((case / "expected.yaml").read_text())["probes"]
    for space in _spaces(policy, inventory):
        solver = z3.Solver()
        sym = new_flow(space, solver)
        allowed = space.allows(policy, sym)
        for p in probes[::3] if len(probes) > 20 else probes:
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
    ("[-a-z0-9_]+", ["api", "a-b", "-"], ["A", "a.b"]),  # a leading '-' is literal: the rest are still ranges
    ("[a-c-]+", ["abc-", "-"], ["d"]),
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
