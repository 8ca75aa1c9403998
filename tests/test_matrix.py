"""`policyc matrix` computes verdicts per endpoint class by set algebra: it must equal the evaluator pair by pair."""
from __future__ import annotations

import io
import ipaddress
import json
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from irgen import EXTERNALS, RESERVED, inventories, policy_sets

from policyc.commands.matrix import compute, write_json
from policyc.compiler.evaluate import Evaluator, Flow
from policyc.compiler.frontend import load_policies
from policyc.compiler.inventory import external, load_inventory
from policyc.compiler.ir import Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gen_cluster  # noqa: E402

PORTS = [(80, Protocol.TCP), (53, Protocol.UDP), (8080, Protocol.TCP), (8, Protocol.ICMP), (9105, Protocol.TCP)]


def _expected(policy, endpoints, ports):
    """The evaluator's verdicts; an allowed flow through an L7 filter carries ``l7``."""
    evaluator = Evaluator(policy)
    out = []
    for port, proto in ports:
        for i, s in enumerate(endpoints):
            for j, d in enumerate(endpoints):
                if i != j:
                    v = evaluator.evaluate(Flow(s, d, proto, port))
                    out.append({"from": s.display, "to": d.display, "port": port, "protocol": proto.label,
                                "verdict": v.action.value, **({"l7": True} if v.allowed and v.l7 else {})})
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets(), inventory=inventories())
def test_matrix_equals_evaluator_on_generated_ir(policy, inventory):
    endpoints = list(inventory.pods) + list(EXTERNALS) + list(RESERVED)
    assert list(compute(policy, endpoints, PORTS)) == _expected(policy, endpoints, PORTS)


def test_matrix_equals_evaluator_on_generated_clusters(tmp_path):
    for flavour in ("k8s", "cilium"):
        out = tmp_path / flavour
        gen_cluster.generate(out, 40, 40, flavour, seed=3, apps_per_ns=6, replicas=2)
        policy = load_policies([out / "policies"])[0]
        endpoints = list(load_inventory([out / "inventory.yaml"]).pods) + [
            external(ipaddress.ip_address(a)) for a in ("203.0.113.7", "10.1.2.3", "169.254.169.254")]
        ports = PORTS + [(443, Protocol.TCP), (5432, Protocol.TCP), (9090, Protocol.TCP), (6443, Protocol.TCP)]
        got = list(compute(policy, endpoints, ports))
        assert got == _expected(policy, endpoints, ports), flavour
        assert {r["verdict"] for r in got} == {"allow", "deny"}, "the cluster must exercise both verdicts"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets(), inventory=inventories(), data=st.data())
def test_json_is_compute_row_per_line(policy, inventory, data):
    """write_json joins its lines from pre-encoded strings: byte for byte what ``json.dumps`` writes of
    ``compute``'s flows, with nodes, L7 marks, ICMP and --from/--to subsets."""
    endpoints = list(inventory.pods) + list(inventory.nodes) + list(EXTERNALS[:2])
    picks = st.none() | st.sets(st.integers(0, len(endpoints) - 1))
    rows, cols = data.draw(picks), data.draw(picks)
    buf = io.StringIO()
    write_json(policy, endpoints, PORTS, buf, rows, cols)
    rows = list(compute(policy, endpoints, PORTS, rows, cols))
    want = '{"flows": [' + "".join(("\n" if n == 0 else ",\n") + json.dumps(r) for n, r in enumerate(rows)) + "\n]}\n"
    assert buf.getvalue() == want
    assert json.loads(buf.getvalue())["flows"] == rows


def test_json_of_a_cluster_with_l7_nodes_and_icmp_is_compute_row_per_line():
    """The same, on a fixed cluster whose flows hold every kind of line: an L7-filtered allow (9000/TCP),
    node rows and columns, ICMP, and a --from/--to subset."""
    data = Path(__file__).parent / "data" / "paths"
    policy = load_policies([data / "policies.yaml"])[0]
    inventory = load_inventory([data / "inventory.yaml"])
    endpoints = list(inventory.pods) + list(inventory.nodes) + [external(ipaddress.ip_address("203.0.113.7"))]
    ports = [(9000, Protocol.TCP), (5432, Protocol.TCP), (8, Protocol.ICMP)]
    for rows, cols in ((None, None), ({0, len(endpoints) - 1}, {1, 2, len(endpoints) - 2})):
        buf = io.StringIO()
        write_json(policy, endpoints, ports, buf, rows, cols)
        flows = list(compute(policy, endpoints, ports, rows, cols))
        assert buf.getvalue() == '{"flows": [' + "".join(("\n" if n == 0 else ",\n") + json.dumps(r)
                                                         for n, r in enumerate(flows)) + "\n]}\n"
    assert any(f.get("l7") for f in compute(policy, endpoints, ports)), "the cluster must hold an L7 allow"
