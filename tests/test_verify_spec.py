"""`policyc verify`: spec parsing (errors at file:line:column with field paths), proofs in both universes,
witnesses that replay in the concrete evaluator, and the JUnit/JSON outputs."""
from __future__ import annotations

import ipaddress
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from irgen import EXTERNALS, inventories, policy_sets, selectors

from policyc.cli import main
from policyc.compiler.diagnostics import PolicycError
from policyc.compiler.evaluate import Evaluator, Flow, selects
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.inventory import load_inventory
from policyc.compiler.ir import Direction, Protocol, SubjectKind
from policyc.compiler.source import load_documents
from policyc.compiler.verify.findings import Location
from policyc.compiler.verify.invariants import Outcome, prove
from policyc.compiler.verify.spec import (KINDS, WORLD, Addresses, DefaultDenyIn, Isolation, MustAllow, MustDeny, Pods,
                                          PortRange, Spec, WorldOnly, load_spec, parse_spec)
from policyc.compiler.source import parse_text

DATA = Path(__file__).parent / "data" / "verify"
POLICIES, INVENTORY = DATA / "policies.yaml", DATA / "inventory.yaml"


def _policy():
    return build_policy_set(load_documents([POLICIES])).policy


def _member(peer, ep) -> bool:
    if isinstance(peer, Pods):
        return selects(SubjectKind.ENDPOINT, peer.selector, ep)
    if isinstance(peer, Addresses):
        return ep.kind.value == "external" and any(ip in n for n in peer.networks for ip in ep.ips)
    return ep.display == peer.ref


def _on(ports, flow: Flow) -> bool:
    return not ports or any(p.protocol is flow.protocol and p.first <= flow.port <= p.last for p in ports)


def replay(policy, o: Outcome) -> None:
    """A failure's witness is in the invariant's set of flows and gets the opposite of the promised verdict."""
    inv, w = o.invariant, o.witness
    if o.holds:
        assert w is None
        return
    if w is None:  # only an empty mustAllow fails without a flow to show
        assert isinstance(inv, MustAllow) and "nothing to allow" in o.message, o
        return
    ev = Evaluator(policy)
    if isinstance(inv, DefaultDenyIn):
        assert w.endpoint.namespace in inv.namespaces and not ev.is_default_deny(w.endpoint, w.direction)
        return
    f = w.flow
    if isinstance(inv, (MustAllow, MustDeny)):
        assert _member(inv.src, f.src) and _member(inv.dst, f.dst) and _on(inv.ports, f), o
    elif isinstance(inv, Isolation):
        assert (_member(inv.a, f.src) and _member(inv.b, f.dst)) or (_member(inv.b, f.src) and _member(inv.a, f.dst))
    elif isinstance(inv, WorldOnly):
        assert f.src.kind.value == "external" and _member(inv.dst, f.dst) and not _on(inv.ports, f)
    verdict = ev.evaluate(f)
    assert verdict.allowed == (not isinstance(inv, MustAllow)), o
    assert w.allowed == verdict.allowed
    if w.direction is not None:
        side = verdict.egress if w.direction is Direction.EGRESS else verdict.ingress
        assert not side.allowed and {r.id for r in side.rules} == set(w.matching)


@pytest.mark.parametrize("inventory", [None, INVENTORY])
def test_spec_that_holds(inventory):
    inv = load_inventory([inventory]) if inventory else None
    outcomes = prove(_policy(), load_spec(str(DATA / "spec.yaml")), inv)
    assert [o.holds for o in outcomes] == [True] * 5


def test_failures_carry_witnesses_that_replay():
    policy = _policy()
    symbolic = prove(policy, load_spec(str(DATA / "failing.yaml")))
    assert [o.holds for o in symbolic] == [False] * 5
    exact = prove(policy, load_spec(str(DATA / "failing.yaml")), load_inventory([INVENTORY]))
    # the inventory's frontend has no env label, so the ingressDeny on env=test cannot bite it
    assert [o.holds for o in exact] == [True, False, False, False, False]
    for o in symbolic + exact:
        replay(policy, o)
    assert symbolic[2].witness.direction is Direction.INGRESS  # legacy has egress default-deny only


def test_cli_exit_codes_and_formats(capsys):
    base = ["verify", str(POLICIES), "--spec"]
    assert main(base + [str(DATA / "spec.yaml")]) == 0
    assert "5 hold, 0 failed" in capsys.readouterr().out
    assert main(base + [str(DATA / "failing.yaml"), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["failed"] == 5 and all(i["witness"] for i in data["invariants"])
    assert data["invariants"][0]["location"] == {"file": str(DATA / "failing.yaml"), "line": 2, "column": 5,
                                                 "field": "invariants[0]"}
    assert main(base + [str(DATA / "failing.yaml"), "--format", "junit", "--inventory", str(INVENTORY)]) == 1
    suite = ET.fromstring(capsys.readouterr().out).find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["frontend reaches api from anywhere", "api closed to frontend",
                                              "legacy default-deny", "world only 80", "world cannot reach legacy"]
    assert [c.find("failure") is not None for c in cases] == [False, True, True, True, True]
    assert suite.get("tests") == "5" and suite.get("failures") == "4"
    assert "443/TCP" in cases[3].find("failure").text


def test_bad_spec_is_exit_2_with_positions(capsys):
    assert main(["verify", str(POLICIES), "--spec", str(DATA / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    want = ["bad.yaml:3:5: error: invariants[0].mustAlow: unknown field 'mustAlow'; did you mean 'mustAllow'?",
            "bad.yaml:8:7: error: invariants[1].mustDeny.from: invalid label selector",
            "bad.yaml:14:15: error: invariants[2].mustAllow.ports[0]: unknown protocol 'TCPX'",
            "bad.yaml:18:7: error: invariants[3].defaultDeny.direction: direction 'inbound'",
            "bad.yaml:21:18: error: invariants[4].isolation.between[0].cidr: invalid CIDR"]
    for line in want:
        assert line in err, (line, err)
    assert "Traceback" not in err


@pytest.mark.parametrize("text,message", [
    ("invariants: []", "no invariants"),
    ("invariants: {}", "must be a list"),
    ("kind: Other\ninvariants: [{mustDeny: {from: a, to: b}}]", "expected 'VerificationSpec'"),
    ("invariants:\n  - {name: n, mustDeny: {from: a, to: b}}\n  - {name: n, mustDeny: {from: a, to: b}}", "used twice"),
    ("invariants: [{mustDeny: {from: a}}]", "missing field 'to'"),
    ("invariants: [{mustDeny: {from: a, to: b}, isolation: {between: [a, b]}}]", "exactly one of"),
    ("invariants: [{isolation: {between: [a]}}]", "two peers"),
    ("invariants: [{worldOnly: {to: a}}]", "missing field 'ports'"),
    ("invariants: [{worldOnly: {to: {entity: world}, ports: [80]}}]", "protects pods"),
    ("invariants: [{mustDeny: {from: {entity: cluster}, to: b}}]", "entity 'cluster'"),
    ("invariants: [{mustDeny: {from: {pod: nons}, to: b}}]", "not namespace/name"),
    ("invariants: [{mustDeny: {from: a, to: b, ports: [90-80]}}]", "invalid port range"),
    ("invariants: [{defaultDeny: {namespaces: []}}]", "at least one namespace"),
    ("invariants: [{defaultDeny: {namespaces: [a], direction: [ingress]}}]", "expected both, ingress or egress"),
    ("invariants: [{mustDeny: {from: {pods: [a]}, to: b}}]", "must be a string"),
    ("invariants: [{mustDeny: {from: a, to: b, ports: 80}}]", "must be a list"),
    ("invariants: [{mustDeny: {from: namespace=a,app=b, to: c}}]", "quote selectors that contain commas"),
])
def test_spec_errors(text, message):
    with pytest.raises(PolicycError) as exc:
        parse_spec(parse_text(text, "s.yaml"), "s.yaml")
    assert any(message in d.message for d in exc.value.diagnostics), exc.value.diagnostics


def test_ports_and_peers_parse():
    spec = parse_spec(parse_text("invariants:\n  - mustAllow:\n      from: {cidr: 192.0.2.0/24}\n"
                                 "      to: {pods: 'ns=a,app in (x,y)'}\n      ports: [53/ANY, '*/UDP', 8/ICMP, 443]\n",
                                 "s.yaml"))
    inv = spec.invariants[0]
    assert inv.ports == (PortRange(Protocol.TCP, 53, 53), PortRange(Protocol.UDP, 53, 53),
                         PortRange(Protocol.SCTP, 53, 53), PortRange(Protocol.UDP, 0, 65535),
                         PortRange(Protocol.ICMP, 8, 8), PortRange(Protocol.TCP, 443, 443))
    assert str(inv.src) == "cidr:192.0.2.0/24" and str(inv.dst.selector) == "any:app in (x,y),k8s:io.kubernetes.pod.namespace=a"


# ---------------------------------------------------------------- generated: the two universes and the evaluator

_PORTS = st.lists(st.builds(PortRange, st.sampled_from((Protocol.TCP, Protocol.UDP)), st.just(80),
                            st.sampled_from((80, 443, 8080))), max_size=2).map(tuple)
_HERE = Location("gen.yaml", 1, 1, "invariants[0]")

_peers = st.one_of(selectors.map(lambda s: Pods(s, str(s))), st.just(Addresses(WORLD["world"], "world")),
                   st.just(Addresses((ipaddress.ip_network("192.0.2.0/28"),), "cidr:192.0.2.0/28")))
_invariants = st.one_of(
    st.builds(MustAllow, st.just("a"), st.just(_HERE), _peers, _peers, _PORTS),
    st.builds(MustDeny, st.just("d"), st.just(_HERE), _peers, _peers, _PORTS),
    st.builds(Isolation, st.just("i"), st.just(_HERE), _peers, _peers),
    st.builds(WorldOnly, st.just("w"), st.just(_HERE), selectors.map(lambda s: Pods(s, str(s))), _PORTS),
    st.builds(DefaultDenyIn, st.just("n"), st.just(_HERE), st.just(("x",)),
              st.sampled_from(((Direction.INGRESS,), (Direction.EGRESS,)))))


def _promise_kept(policy, inv, inventory) -> bool:
    """Brute force over the inventory, the sample external addresses and a few ports."""
    ev = Evaluator(policy)
    if isinstance(inv, DefaultDenyIn):
        return all(ev.is_default_deny(ep, d) for ep in inventory.pods if ep.namespace in inv.namespaces
                   for d in inv.directions)
    eps = inventory.endpoints + EXTERNALS
    for src in eps:
        for dst in eps:
            if src == dst:
                continue
            for proto in (Protocol.TCP, Protocol.UDP):
                for port in (80, 443, 8080, 9000):
                    f = Flow(src, dst, proto, port)
                    if isinstance(inv, (MustAllow, MustDeny)):
                        inside = _member(inv.src, src) and _member(inv.dst, dst) and _on(inv.ports, f)
                    elif isinstance(inv, Isolation):
                        inside = (_member(inv.a, src) and _member(inv.b, dst)) or \
                            (_member(inv.b, src) and _member(inv.a, dst))
                    else:
                        inside = src.kind.value == "external" and _member(inv.dst, dst) and not _on(inv.ports, f)
                    if inside and ev.evaluate(f).allowed != isinstance(inv, MustAllow):
                        return False
    return True


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets(4), inventory=inventories(), inv=_invariants)
def test_generated_invariants(policy, inventory, inv):
    """Failures replay; a proof for every possible pod implies one for the inventory; an inventory proof
    holds for every sampled inventory flow."""
    spec = Spec((inv,))
    symbolic, = prove(policy, spec)
    exact, = prove(policy, spec, inventory)
    event(f"{inv.kind}: symbolic {symbolic.holds}, inventory {exact.holds}")
    replay(policy, symbolic)
    replay(policy, exact)
    if symbolic.holds and not (isinstance(inv, MustAllow) and "vacuous" in symbolic.message):
        assert exact.holds or "nothing to allow" in exact.message, (symbolic, exact)
    if exact.holds:
        assert _promise_kept(policy, inv, inventory), exact


_json = st.recursive(st.none() | st.booleans() | st.integers(-3, 70000) | st.sampled_from(
    ["", "*", "app=a", "a,b", "80/TCP", "1-2/UDP", "x/y", "shop/a", "10.0.0.0/8", "world", "both", "ingress"]),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(
        ["name", "from", "to", "ports", "between", "namespaces", "direction", "pods", "pod", "cidr", "entity",
         "app=b"] + list(KINDS)), kids, max_size=3), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(invariants=_json)
def test_any_spec_is_parsed_or_refused_with_positions(invariants):
    """Whatever the YAML holds, the parser returns a spec or raises PolicycError (exit 2), never crashes."""
    text = json.dumps({"invariants": invariants})
    try:
        parse_spec(parse_text(text, "s.json"), "s.json")
    except PolicycError as exc:
        assert exc.diagnostics and all(d.file == "s.json" for d in exc.diagnostics)
