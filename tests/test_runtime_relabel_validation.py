"""Runtime relabels against the evaluator: after `endpoint relabel`, every pinned hook's verdict on every
probe equals the concrete evaluator's on the relabelled inventory, for every conformance case.

This holds the node-side lowering (endpoints.py over lower.subject_entries) to the same standard as
`policyc compile --validate` holds the compiler.
"""
from __future__ import annotations

import pytest

from cases import inventory as case_inventory, own_cases, params, policy_paths
from kernelreq import require_kernel
from policyc.bpf_runtime.endpoints import current, load_sources
from policyc.bpf_runtime.libbpf import Map, Program
from policyc.bpf_runtime.loaded import loaded_state, manifest_of
from policyc.bpf_runtime.endpoints import change
from policyc.bpf_runtime.testrun import Hooks
from policyc.bpf_runtime.validate import check_probe, default_probes
from policyc.compiler.evaluate import Evaluator
from policyc.compiler.inventory import Inventory, load_inventory
from policyc.compiler.diagnostics import PolicycError
from policyc.compiler.lower import lower
from policyc.cli import main
from runtimekit import loaded_name, pins

pytestmark = pytest.mark.kernel

# a new label set still selected by pod=b rules, an existing one (x/a's), then a new one nothing names:
# the third must not inherit the first one's number (its entries are still in the policy map)
RELABELS = ({"pod": "b", "pcr": "new"}, {"pod": "a"}, {"pod": "zz"})


class PinnedObject:
    """The pinned programs and maps of a loaded name, shaped like a BPFObject for testrun.Hooks."""

    def __init__(self, name: str):
        self.opened = []
        self.name = name

    def program(self, prog: str) -> Program:
        p = Program.open_pinned(str(pins(self.name) / "progs" / prog))
        self.opened.append(p)
        return p

    def map(self, name: str) -> Map:
        m = Map.open_pinned(str(pins(self.name) / "maps" / name))
        self.opened.append(m)
        return m

    def close(self) -> None:
        for p in self.opened:
            p.close()


def has_pod(case, display: str) -> bool:
    return any(p.display == display for p in load_inventory([case_inventory(case)]).pods)


# cases without the relabelled pod x/b (some Services cases) have nothing to relabel: not collected
@pytest.mark.parametrize("case", params([c for c in own_cases() if has_pod(c, "x/b")]))
def test_relabel_matches_the_evaluator(case, tmp_path, capsys):
    require_kernel()
    out = tmp_path / "art"
    empty = tmp_path / "no-policies"
    empty.mkdir()
    policies = policy_paths(case, empty)
    assert main(["compile", *policies, "--inventory", str(case_inventory(case)), "--output-dir", str(out)]) == 0
    with loaded_name("pcrtest-val") as name:
        assert main(["load", str(out), "--name", name]) == 0
        obj = PinnedObject(name)
        hooks = Hooks(obj, manifest_of(loaded_state(name))["features"])
        try:
            sport = 20000
            for labels in RELABELS:
                state = loaded_state(name)
                src = load_sources(state)
                try:
                    change(state, manifest_of(state)["features"], "relabel", "x/b", None, labels)
                except PolicycError as exc:
                    assert "compiled without" in str(exc)  # a feature the artifact lacks: refused, not wrong
                    continue
                state = loaded_state(name)
                pods = current(state, src)
                inventory = Inventory(tuple(p.endpoint for p in pods.values()) + src.inventory.nodes,
                                      src.inventory.namespaces, src.inventory.cluster)
                evaluator = Evaluator(src.policy)
                probes = default_probes(src.policy, inventory, lower(src.policy, src.inventory))
                mismatches = []
                for probe in probes:
                    if "x/b" in (probe.src.display, probe.dst.display):
                        sport += 1
                        mismatches += check_probe(hooks, evaluator, probe, sport)
                assert not mismatches, f"after relabel to {labels}:\n" + "\n".join(map(str, mismatches[:10]))
        finally:
            obj.close()
