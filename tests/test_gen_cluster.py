"""bench/gen_cluster.py: its clusters load without errors, have the asked sizes, and are deterministic."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from policyc.compiler.frontend import build_policy_set
from policyc.compiler.diagnostics import Severity
from policyc.compiler.inventory import load_inventory
from policyc.compiler.source import load_documents

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gen_cluster  # noqa: E402


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flavour", ["k8s", "cilium"])
def test_cluster_validates_with_asked_sizes(tmp_path, flavour):
    gen_cluster.generate(tmp_path, 130, 150, flavour, seed=7, changed=True)
    result = build_policy_set(load_documents([tmp_path / "policies"]), "default")
    assert not [d for d in result.diagnostics if d.severity is Severity.ERROR]
    assert len(result.policy.policies) == 150
    inventory = load_inventory([tmp_path / "inventory.yaml"])
    assert len(inventory.pods) == 130
    assert len({ip for ep in inventory.pods for ip in ep.ips}) == 130
    split = load_inventory([tmp_path / "namespaces.yaml", tmp_path / "pods.yaml"])
    assert split.endpoints == inventory.endpoints
    kinds = {d.value["kind"] for d in load_documents([tmp_path / "policies"])}
    assert kinds == ({"NetworkPolicy"} if flavour == "k8s"
                     else {"CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"})


@pytest.mark.parametrize("flavour", ["k8s", "cilium"])
def test_one_port_change_changes_one_line(tmp_path, flavour):
    gen_cluster.generate(tmp_path, 60, None, flavour, changed=True)
    old, new = _files(tmp_path / "policies"), _files(tmp_path / "policies-changed")
    assert old.keys() == new.keys()
    changed = [name for name in old if old[name] != new[name]]
    assert len(changed) == 1
    diff = [(a, b) for a, b in zip(old[changed[0]].splitlines(), new[changed[0]].splitlines()) if a != b]
    assert len(diff) == 1 and b"port" in diff[0][0]
    build_policy_set(load_documents([tmp_path / "policies-changed"]), "default")


def test_deterministic_and_seeded(tmp_path):
    gen_cluster.generate(tmp_path / "a", 200, 260, "k8s", seed=5, changed=True)
    gen_cluster.generate(tmp_path / "b", 200, 260, "k8s", seed=5, changed=True)
    gen_cluster.generate(tmp_path / "c", 200, 260, "k8s", seed=6, changed=True)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert _files(tmp_path / "a") != _files(tmp_path / "c")


def test_too_few_policies_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="below the"):
        gen_cluster.generate(tmp_path, 200, 5)


def test_inventory_is_a_kubectl_list(tmp_path):
    gen_cluster.generate(tmp_path, 30)
    (doc,) = yaml.safe_load_all((tmp_path / "inventory.yaml").read_text())
    assert doc["kind"] == "List" and doc["apiVersion"] == "v1"
    assert {i["kind"] for i in doc["items"]} == {"Namespace", "Pod"}
