"""Every hash-map look-up of every loaded program is inlined by the verifier.

The verifier inlines `bpf_map_lookup_elem` only where the call names one map; where clang merges the
look-ups of two maps (ct_tcp or ct_any, chosen by the protocol) into one call on a register, every packet
pays the generic helper and its indirect call (codegen.CLANG_OPTIMIZATION). Checked on the loaded
programs (`bpftool prog dump xlated`) of an artifact with every program and feature that looks up maps:
dual stack, Services (nf_node), ICMP, deny and the any-peer entries.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from kernelreq import require_kernel
from policyc.bpf_runtime.artifact import open_artifact
from policyc.bpf_runtime.libbpf import prog_id
from policyc.cli import main

pytestmark = pytest.mark.kernel

SERVICES = Path(__file__).parent / "data" / "services"


def _calls(program) -> list[str]:
    out = subprocess.run(["bpftool", "prog", "dump", "xlated", "id", str(prog_id(program.fd))],
                         capture_output=True, text=True, check=True).stdout
    return re.findall(r"call (\w+)#", out)


def test_no_program_calls_the_generic_lookup_helper(tmp_path, capsys):
    require_kernel()
    out = tmp_path / "art"
    assert main(["compile", str(SERVICES / "policies"), "--inventory", str(SERVICES / "dualstack.yaml"),
                 "--output-dir", str(out)]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["features"]["services"] and manifest["features"]["ipv6"]
    obj = open_artifact(out)
    try:
        names = sorted({p["name"] for p in manifest["programs"]})
        assert {"to_pod", "from_pod", "xdp_node", "nf_node"} <= set(names)
        for name in names:
            calls = _calls(obj.program(name))
            assert calls.count("__htab_map_lookup_elem") >= 3, (name, calls)  # the look-ups are there, inlined
            assert "bpf_map_lookup_elem" not in calls, f"{name}: a map look-up the verifier could not inline"
    finally:
        obj.close()
