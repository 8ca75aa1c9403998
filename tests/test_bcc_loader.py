"""The bcc loader: the generated C translated to bcc's dialect, compiled on the node, checked probe by probe."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bccreq import require_bcc
from cases import inventory as case_inventory, own, own_cases, params
from dpgen import policy_sets, standard_inventory
from kernelreq import require_kernel
from policyc.bpf_runtime import bcc_loader
from policyc.bpf_runtime.bcc_loader import bcc_source, compile_and_load
from policyc.bpf_runtime.validate import default_probes, run_probes
from policyc.compiler.artifact import compile_artifact
from policyc.compiler.diagnostics import PolicycError
from policyc.compiler.frontend import load_policies
from policyc.compiler.inventory import load_inventory
from policyc.compiler.ir import PolicySet



def compiled(case: Path, out: Path):
    policies = case / "policies"
    policy = load_policies([policies])[0] if policies.is_dir() else PolicySet()
    inventory = load_inventory([case_inventory(case)])
    result = compile_artifact(policy, inventory, out, [str(policies)] if policies.is_dir() else [])
    return policy, inventory, result


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """A case with deny rules and an any-peer rule, so every map and check is in the C."""
    out = tmp_path_factory.mktemp("bcc-artifact")
    compiled(own("L25-cnp-deny-beats-allow"), out)
    return out


# -- translation (no kernel) ----------------------------------------------------------------------

def test_translation_declares_every_map_as_a_bcc_table(artifact):
    c_text = (artifact / "policyc.bpf.c").read_text()
    out = bcc_source(c_text)
    maps = re.findall(r'\} (\w+) SEC\("\.maps"\);', c_text)
    assert maps and all(re.search(rf"BPF_(F_TABLE\([^;]*, {m}, |RINGBUF_OUTPUT\({m}, )", out) for m in maps), out
    assert 'SEC("tc")' not in out and "bpf/bpf_helpers.h" not in out
    assert out.count(".lookup(") == c_text.count("bpf_map_lookup_elem(&")
    assert out.count(".update(") == c_text.count("bpf_map_update_elem(&")
    assert "events.ringbuf_reserve(" in out and "events.ringbuf_submit(" in out
    assert 'BCC_SEC("license")' in out  # the artifact's licence, not bcc's default


def test_translation_refuses_what_it_does_not_know(artifact):
    c_text = (artifact / "policyc.bpf.c").read_text()
    with pytest.raises(PolicycError, match=r"bpf_map_push_elem\(&"):
        bcc_source(c_text + "\nstatic void f(void) { bpf_map_push_elem(&events, 0, 0); }\n")
    with pytest.raises(PolicycError, match="map ct_tcp has type STACK"):
        bcc_source(c_text.replace("BPF_MAP_TYPE_LRU_HASH", "BPF_MAP_TYPE_STACK"))


def test_changed_source_is_refused(artifact, tmp_path):
    copy = tmp_path / "a"
    shutil.copytree(artifact, copy)
    with open(copy / "policyc.bpf.c", "a") as f:
        f.write("/* edited on the node */\n")
    with pytest.raises(PolicycError, match="sha256 differs"):
        compile_and_load(copy)


def test_missing_headers_is_a_clear_error(artifact, monkeypatch):
    monkeypatch.setenv("BCC_KERNEL_SOURCE", "/nonexistent/headers")
    with pytest.raises(PolicycError, match=r"kernel headers .*linux-headers-\$\(uname -r\)"):
        compile_and_load(artifact)


# -- compiled by bcc, run in the kernel -----------------------------------------------------------

@pytest.mark.kernel
@pytest.mark.parametrize("case", params(own_cases()))
def test_bcc_compiled_conformance_case(case, tmp_path, tmp_path_factory, monkeypatch):
    """Every probe of `compile --validate` through the programs bcc built: the evaluator's verdicts."""
    require_kernel()
    require_bcc(tmp_path_factory.getbasetemp(), monkeypatch)
    policy, inventory, result = compiled(case, tmp_path)
    if result.datapath.features.services:  # the Services cases: nf_node is libbpf's only
        with pytest.raises(PolicycError, match="nf_node, a netfilter program .* load it with the libbpf loader"):
            compile_and_load(tmp_path)
        return
    probes = default_probes(policy, inventory, result.datapath)
    mismatches = run_probes(tmp_path, policy, probes, opener=compile_and_load)
    assert not mismatches, "\n".join(map(str, mismatches[:20]))


@pytest.mark.kernel
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(policy=policy_sets(), v6=st.booleans())
def test_bcc_compiled_generated_policy_sets(policy, v6, tmp_path_factory, monkeypatch):
    """Generated sets reach the other specializations (IPv6, port ranges, ICMP, L7) of the C."""
    require_kernel()
    require_bcc(tmp_path_factory.getbasetemp(), monkeypatch)
    inventory = standard_inventory(v6, node=True)
    out = tmp_path_factory.mktemp("bcc-gen")
    result = compile_artifact(policy, inventory, out, [], l7="l4-only")
    mismatches = run_probes(out, policy, default_probes(policy, inventory, result.datapath),
                            opener=compile_and_load)
    assert not mismatches, "\n".join(map(str, mismatches[:20]))


def test_module_documents_its_needs():
    doc = bcc_loader.__doc__
    assert "python3-bpfcc" in doc and "/lib/modules/$(uname -r)/build" in doc
