"""The deployment example (examples/deploy/) parses and asks for what docs/deploy.md says a node needs."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "examples" / "deploy"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "deploy.md"


def manifests() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()) if d]
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
    return {doc["kind"]: doc for doc in docs}


def pod_spec() -> dict:
    return manifests()["DaemonSet"]["spec"]["template"]["spec"]


def mounts(container: dict) -> dict[str, dict]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def test_manifest_kinds_and_api_versions():
    by_kind = manifests()
    assert set(by_kind) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"}
    assert by_kind["DaemonSet"]["apiVersion"] == "apps/v1"
    ds = by_kind["DaemonSet"]["spec"]
    assert ds["selector"]["matchLabels"].items() <= ds["template"]["metadata"]["labels"].items()


def test_service_account_may_list_pods():
    by_kind = manifests()
    spec = pod_spec()
    binding = by_kind["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == by_kind["ClusterRole"]["metadata"]["name"]
    assert {"kind": "ServiceAccount", "name": spec["serviceAccountName"],
            "namespace": by_kind["DaemonSet"]["metadata"]["namespace"]} in binding["subjects"]
    rule = by_kind["ClusterRole"]["rules"][0]
    assert "pods" in rule["resources"] and {"list", "get"} <= set(rule["verbs"])


def test_daemonset_has_host_network_bpffs_and_capabilities():
    spec = pod_spec()
    assert spec["hostNetwork"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    (main,) = spec["containers"]
    caps = set(main["securityContext"]["capabilities"]["add"])
    assert {"BPF", "NET_ADMIN", "SYS_ADMIN"} <= caps or main["securityContext"].get("privileged")
    bpffs = mounts(main)["bpffs"]
    assert bpffs["mountPath"] == "/sys/fs/bpf" and volumes["bpffs"]["hostPath"]["path"] == "/sys/fs/bpf"
    # Bidirectional propagation is only allowed in privileged containers: the init container mounts.
    for container in [*spec.get("initContainers", []), main]:
        for mount in mounts(container).values():
            if mount.get("mountPropagation") == "Bidirectional":
                assert container["securityContext"].get("privileged") is True, container["name"]
    (init,) = spec["initContainers"]
    assert "mount -t bpf bpf /sys/fs/bpf" in " ".join(init["command"])
    env = {e["name"]: e for e in main["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_daemonset_runs_the_node_script_on_the_mounted_artifact():
    spec = pod_spec()
    (main,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    by_path = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    script = next(arg for arg in main["command"] if arg.endswith("policyc-node.sh"))
    script_volume = by_path[str(Path(script).parent)]
    assert volumes[script_volume]["configMap"]["name"] == "policyc-node"
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert volumes[by_path[env["POLICYC_ARTIFACT"]]]["configMap"]["name"] == "policyc-artifact"
    header = (DEPLOY / "daemonset.yaml").read_text()
    for configmap in ("policyc-node", "policyc-artifact"):
        assert f"create configmap {configmap}" in header, f"how to create {configmap} is not documented"


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
def test_node_script_is_valid_posix_sh():
    proc = subprocess.run(["sh", "-n", str(DEPLOY / "policyc-node.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_node_script_uses_commands_that_exist():
    """Every `policyc SUBCOMMAND` the script runs is a registered command of the CLI."""
    from policyc.cli import COMMANDS

    text = (DEPLOY / "policyc-node.sh").read_text()
    used = set(re.findall(r"^\s*(?:if\s+)?policyc ([a-z]+)", text, re.M))
    assert used and used <= set(COMMANDS), used - set(COMMANDS)


def test_deploy_doc_names_the_files_and_node_requirements():
    text = DOCS.read_text()
    for needle in ("daemonset.yaml", "policyc-node.sh", "CONFIG_BPF_SYSCALL", "CONFIG_NET_CLS_ACT",
                   "CONFIG_DEBUG_INFO_BTF", "bpffs", "hostNetwork", "CAP_BPF"):
        assert needle in text, needle
