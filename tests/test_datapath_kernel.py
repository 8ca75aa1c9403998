"""Translation validation in the kernel: every conformance case and generated policy sets, probe by probe.

Each artifact is compiled, loaded once, and every probe (and the reply of
every allowed one) runs through the hooks with BPF_PROG_TEST_RUN; each hook
must give the concrete evaluator's verdict for its direction.
"""
from __future__ import annotations

import ipaddress
import json
import struct
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cases import inventory as case_inventory, own, own_cases, params
from dpgen import make_rule, policy_set, policy_sets, selector, standard_inventory
from kernelreq import require_kernel
from policyc.bpf_runtime.artifact import open_artifact
from policyc.bpf_runtime.events import decode_event
from policyc.bpf_runtime.libbpf import BPFError, BPFObject, Map, RingBuffer
from policyc.bpf_runtime.testrun import Hooks
from policyc.bpf_runtime.validate import Probe, default_probes, run_probes
from policyc.cli import main
from policyc.compiler.artifact import compile_artifact
from policyc.compiler.frontend import load_policies
from policyc.compiler.inventory import load_inventory
from policyc.compiler.layouts import layouts
from policyc.compiler.ir import (Action, CIDRPeer, Direction, L7Rules, PolicySet, PortMatch, Protocol,
                                 Selector, SelectorPeer)

EVENT_COUNTER = layouts(4, False)["counter"]
DENY_CASE = own("L25-cnp-deny-beats-allow")  # y/a admits all but y/b, refused by a deny rule


def load_case(case: Path):
    policies = case / "policies"
    policy = load_policies([policies])[0] if policies.is_dir() else PolicySet()
    inventory = load_inventory([case_inventory(case)])
    probes = [Probe(inventory.find(p["from"]), inventory.find(p["to"]), Protocol.parse(p["protocol"]), p["port"])
              for p in yaml.safe_load((case / "expected.yaml").read_text())["probes"]]
    return policy, inventory, probes, [str(policies)] if policies.is_dir() else []


@pytest.mark.kernel
@pytest.mark.parametrize("case", params(own_cases()))
def test_conformance_case_in_kernel(case, tmp_path):
    require_kernel()
    policy, inventory, probes, inputs = load_case(case)
    compile_artifact(policy, inventory, tmp_path, inputs)
    assert probes
    mismatches = run_probes(tmp_path, policy, probes)
    assert not mismatches, "\n".join(map(str, mismatches[:20]))


@pytest.mark.kernel
def test_validation_catches_a_wrong_datapath(tmp_path):
    """Hold an artifact against another policy's evaluator: the check must fail."""
    require_kernel()
    policy, inventory, probes, inputs = load_case(DENY_CASE)
    compile_artifact(policy, inventory, tmp_path, inputs)
    assert run_probes(tmp_path, PolicySet(), probes)


@pytest.mark.kernel
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy=policy_sets(), v6=st.booleans())
def test_generated_policy_sets_in_kernel(policy, v6, tmp_path_factory):
    require_kernel()
    inventory = standard_inventory(v6, node=True)
    out = tmp_path_factory.mktemp("gen")
    result = compile_artifact(policy, inventory, out, [], l7="l4-only")
    probes = default_probes(policy, inventory, result.datapath)
    mismatches = run_probes(out, policy, probes)
    assert not mismatches, "\n".join(map(str, mismatches[:20]))


@pytest.mark.kernel
def test_ipv6_icmp_l7_and_ranges_in_kernel(tmp_path):
    """The optional paths: IPv6 parsing, ICMP types, the proxy mark, LPM port ranges, CIDR except."""
    require_kernel()
    inventory = standard_inventory(v6=True)
    net = ipaddress.ip_network
    policy = policy_set([
        make_rule(0, selector("x"), Direction.INGRESS, Action.ALLOW, [SelectorPeer((selector("y"),))],
                  [PortMatch(Protocol.TCP, 80, 80, l7=L7Rules("http")), PortMatch(Protocol.ICMP, 8, 8),
                   PortMatch(Protocol.ICMPV6, 128, 128), PortMatch(Protocol.UDP, 1000, 2000)]),
        make_rule(1, selector("x"), Direction.EGRESS, Action.ALLOW,
                  [CIDRPeer(net("2001:db8::/32"), (net("2001:db8:1::/48"),)), SelectorPeer((Selector(),))],
                  [PortMatch(Protocol.TCP, 443, 443)]),
        make_rule(2, selector("x"), Direction.EGRESS, Action.DENY, [CIDRPeer(net("2001:db8:2::/48"))],
                  [PortMatch(Protocol.TCP, 443, 443)]),
    ])
    result = compile_artifact(policy, inventory, tmp_path, [], l7="l4-only")
    feats = result.datapath.features
    assert feats.ipv6 and feats.icmp and feats.l7 and feats.port_ranges and feats.deny
    probes = default_probes(policy, inventory, result.datapath)
    assert any(p.protocol is Protocol.ICMPV6 for p in probes)
    mismatches = run_probes(tmp_path, policy, probes)
    assert not mismatches, "\n".join(map(str, mismatches[:20]))


@pytest.mark.kernel
def test_verifier_rejection_shows_log_tail(tmp_path):
    require_kernel()
    src = tmp_path / "bad.c"
    src.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                   'SEC("tc") int bad(struct __sk_buff *skb) { return *(int *)(long)skb->data; }\n'
                   'char LICENSE[] SEC("license") = "GPL";\n')
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    "-c", str(src), "-o", str(tmp_path / "bad.o")], check=True)
    with BPFObject.open(str(tmp_path / "bad.o")) as obj:
        with pytest.raises(BPFError, match="verifier log") as err:
            obj.load()
    assert "invalid access to packet" in err.value.log


@pytest.mark.kernel
def test_events_and_counters_name_the_deciding_rule(tmp_path):
    """A denied packet yields one ring-buffer event and counts on the deny rule (id from rules.json)."""
    require_kernel()
    policy, inventory, _, inputs = load_case(DENY_CASE)
    compile_artifact(policy, inventory, tmp_path, inputs)
    rules = json.loads((tmp_path / "rules.json").read_text())
    deny_id = next(r["id"] for r in rules if r["action"] == "deny")
    yb, ya = inventory.find("y/b"), inventory.find("y/a")
    obj = open_artifact(tmp_path)
    events = []
    ring = RingBuffer(obj.map("events"), lambda raw: events.append(decode_event(raw)))
    try:
        features = json.loads((tmp_path / "manifest.json").read_text())["features"]
        results = Hooks(obj, features).send(yb.ips[0], ya.ips[0], Protocol.TCP, 40001, 80, yb.ips, ya.ips, False)
        assert [r.passed for r in results] == [True, False]  # y/b egress free, y/a ingress denies
        ring.consume()
        counters = obj.map("counters")
        packets = sum(EVENT_COUNTER.unpack(v)["packets"]
                      for v in counters.percpu_values(struct.pack("<I", deny_id)))
    finally:
        ring.close()
        obj.close()
    denied = [e for e in events if e.verdict == "deny"]
    assert len(denied) == 1 and packets == 1
    e = denied[0]
    assert (e.direction, e.reason, e.rule, e.src, e.dst, e.protocol, e.sport, e.dport) == \
        ("ingress", "denied-by-rule", deny_id, str(yb.ips[0]), str(ya.ips[0]), "TCP", 40001, 80)
    assert (e.src_identity, e.dst_identity) == (yb.identity.id, ya.identity.id)


@pytest.mark.kernel
def test_compile_validate_command(tmp_path, capsys):
    require_kernel()
    case = own("L26-cnp-cidr-never-matches-pods")
    assert main(["compile", str(case / "policies"), "--inventory", str(case_inventory(case)),
                 "--output-dir", str(tmp_path), "--validate"]) == 0
    assert " 0 mismatch(es)" in capsys.readouterr().out


@pytest.fixture
def bpffs(tmp_path):
    """A private bpffs mount, so pins never touch /sys/fs/bpf; unmounted even when the test fails."""
    require_kernel()
    mnt = tmp_path / "bpffs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.kernel
def test_pinned_map_reopens_with_its_contents(tmp_path, bpffs):
    policy, inventory, _, inputs = load_case(own("L12-knp-pod-peer-is-own-namespace"))
    compile_artifact(policy, inventory, tmp_path / "art", inputs)
    pin = str(bpffs / "endpoints")
    obj = open_artifact(tmp_path / "art")
    try:
        endpoints = obj.map("endpoints")
        endpoints.pin(pin)
        again = Map.open_pinned(pin)
        try:
            assert (again.name, again.key_size, again.value_size) == ("endpoints", 4, 16)
            assert sorted(again.keys()) == sorted(endpoints.keys()) and len(again.keys()) == 9
            key = again.keys()[0]
            assert again.lookup(key) == endpoints.lookup(key)
            assert again.delete(key) and endpoints.lookup(key) is None
        finally:
            again.close()
    finally:
        obj.close()
