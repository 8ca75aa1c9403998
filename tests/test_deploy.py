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


def container(name: str, init: bool = False) -> dict:
    return next(c for c in pod_spec()["initContainers" if init else "containers"] if c["name"] == name)


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
    assert {"pods", "namespaces"} <= set(rule["resources"]) and {"list", "get"} <= set(rule["verbs"])


def test_daemonset_has_host_network_bpffs_and_capabilities():
    spec = pod_spec()
    assert spec["hostNetwork"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    main = container("agent")
    caps = set(main["securityContext"]["capabilities"]["add"])
    assert {"BPF", "NET_ADMIN", "SYS_ADMIN"} <= caps or main["securityContext"].get("privileged")
    bpffs = mounts(main)["bpffs"]
    assert bpffs["mountPath"] == "/sys/fs/bpf" and volumes["bpffs"]["hostPath"]["path"] == "/sys/fs/bpf"
    # Bidirectional propagation is only allowed in privileged containers: the init container mounts.
    for each in [*spec.get("initContainers", []), *spec["containers"]]:
        for mount in mounts(each).values():
            if mount.get("mountPropagation") == "Bidirectional":
                assert each.get("securityContext", {}).get("privileged") is True, each["name"]
    assert "mount -t bpf bpf /sys/fs/bpf" in " ".join(container("mount-bpffs", init=True)["command"])
    env = {e["name"]: e for e in main["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_daemonset_runs_the_agent_on_the_mounted_artifact_and_installs_the_plugin():
    """The agent watches the ConfigMap, reads the inventory the sidecar writes, serves the socket the
    plugin (installed and chained on the host) connects to, and answers the kubelet's probes."""
    from policyc.cli import build_parser

    spec = pod_spec()
    volumes = {v["name"]: v for v in spec["volumes"]}
    agent = container("agent")
    args = build_parser().parse_args([a.replace("$(NODE_NAME)", "n").replace("$(POLICYC_NODE_IP)", "10.0.0.1")
                                      for a in agent["command"][1:]])
    assert args.command == "agent"
    by_path = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    assert volumes[by_path[args.artifact]]["configMap"]["name"] == "policyc-artifact"
    assert volumes[by_path[args.inventory_dir]] == volumes["inventory"] and "emptyDir" in volumes["inventory"]
    sidecar = container("inventory")
    assert mounts(sidecar)["inventory"]["mountPath"] in " ".join(sidecar["command"])
    state = volumes[by_path[str(Path(args.socket).parent)]]
    assert state["hostPath"]["path"] == str(Path(args.socket).parent)  # the host's plugin reaches the socket
    install = container("install-cni", init=True)
    assert install["command"][:4] == ["python3", "-m", "policyc.cni", "install"]
    assert install["command"][install["command"].index("--socket") + 1] == args.socket
    dirs = {m["mountPath"]: volumes[m["name"]]["hostPath"]["path"] for m in install["volumeMounts"]}
    assert dirs[install["command"][4]] == "/opt/cni/bin"
    assert dirs[install["command"][install["command"].index("--chain") + 1]] == "/etc/cni/net.d"
    port = int(args.listen.rsplit(":", 1)[1])
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert agent[probe]["httpGet"] == {"host": "127.0.0.1", "port": port, "path": path}
    header = (DEPLOY / "daemonset.yaml").read_text()
    assert "create configmap policyc-artifact" in header, "how to create the artifact ConfigMap is not documented"


def test_example_conflists_chain_policyc_after_a_veth_plugin():
    import json
    for kind in ("ptp", "bridge"):
        conf = json.loads((DEPLOY.parent / "cni" / f"10-{kind}-policyc.conflist").read_text())
        assert conf["cniVersion"] == "1.0.0" and [p["type"] for p in conf["plugins"]] == [kind, "policyc-cni"]


def test_install_chains_the_plugin_once(tmp_path):
    """`python -m policyc.cni install BIN --chain CONF`: the zipapp answers VERSION; the conflist gets it once."""
    import json
    import sys
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-flannel.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "cbr0", "plugins": [
        {"type": "flannel", "delegate": {"isDefaultGateway": True}}, {"type": "portmap"}]}))
    (conf / "99-other.conflist").write_text("{}")
    root = Path(__file__).resolve().parents[1]
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "policyc.cni", "install", str(tmp_path / "bin"), "--chain",
                               str(conf), "--python", sys.executable], capture_output=True, text=True, cwd=root)
        assert proc.returncode == 0, proc.stderr
    plugins = json.loads((conf / "10-flannel.conflist").read_text())["plugins"]
    assert [p["type"] for p in plugins] == ["flannel", "portmap", "policyc-cni"]
    assert "chained already" in proc.stdout and (conf / "99-other.conflist").read_text() == "{}"
    out = subprocess.run([str(tmp_path / "bin" / "policyc-cni")], input="", capture_output=True, text=True,
                         env={"CNI_COMMAND": "VERSION"})
    assert json.loads(out.stdout)["supportedVersions"][-1] == "1.0.0"


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
    for needle in ("daemonset.yaml", "policyc-node.sh", "policyc agent", "policyc-cni", "CONFIG_BPF_SYSCALL",
                   "CONFIG_NET_CLS_ACT",
                   "CONFIG_DEBUG_INFO_BTF", "bpffs", "hostNetwork", "CAP_BPF"):
        assert needle in text, needle
