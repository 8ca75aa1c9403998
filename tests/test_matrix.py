"""`policyc matrix` computes verdicts per endpoint class by set algebra: it must equal the evaluator pair by pair."""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
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
    import ipaddress
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


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy=policy_sets(), inventory=inventories())
def test_json_is_compute_row_per_line(policy, inventory):
    endpoints = list(inventory.pods) + list(EXTERNALS[:2])
    buf = io.StringIO()
    write_json(policy, endpoints, PORTS[:2], buf)
    rows = list(compute(policy, endpoints, PORTS[:2]))
    want = '{"flows": [' + "".join(("\n" if n == 0 else ",\n") + json.dumps(r) for n, r in enumerate(rows)) + "\n]}\n"
    assert buf.getvalue() == want
    assert json.loads(buf.getvalue())["flows"] == rows
