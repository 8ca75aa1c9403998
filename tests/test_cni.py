"""policyc-cni chained after Debian's ptp and bridge plugins, with `policyc agent`, as a container runtime runs them.

Every pod gets its own network namespace and is plugged in by the real plugins (host-local IPAM);
probes are real TCP connections. A pod is enforced from the first packet after ADD returns, both
ways; DEL leaves nothing behind; the agent can die and come back under traffic without the policy
going anywhere; the errors a runtime can meet are the spec's JSON with its codes.

Names start with "pcc" (this suite's prefix).
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from cnirt import Node, conflist, plugins_missing
from kernelreq import require_kernel
from policyc.cli import main

pytestmark = pytest.mark.kernel

NAME = "pcctest"
SUBNET = "10.245.0.0/24"
METRICS = "127.0.0.1:19971"  # the agent's HTTP listener, on the node namespace's loopback

NAMESPACES = [{"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns, "team": team}}}
              for ns, team in (("x", "a"), ("y", "b"))]


def pod(ns: str, name: str, labels: dict, ip: str | None = None, node: str = "node-1",
        ports: dict | None = None) -> dict:
    container = {"name": "c", "ports": [{"name": n, "containerPort": p} for n, p in (ports or {}).items()]}
    obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"nodeName": node, "containers": [container]}, "status": {}}
    if ip:
        obj["status"] = {"podIP": ip, "podIPs": [{"ip": ip}]}
    return obj


# Compiled from a cluster whose other node runs one pod of each kind: every feature the pods here need
# is compiled in; this node's pods come and go through the CNI plugin.
COMPILED = NAMESPACES + [pod("x", "web-0", {"app": "web"}, "10.250.0.10", "other"),
                         pod("x", "db-0", {"app": "db"}, "10.250.0.11", "other"),
                         pod("y", "client-0", {"app": "client"}, "10.250.0.12", "other"),
                         pod("x", "api-0", {"app": "api"}, "10.250.0.13", "other", {"http": 8080})]
LOCAL = [pod("x", "web-1", {"app": "web"}), pod("x", "web-2", {"app": "web"}), pod("x", "db-1", {"app": "db"}),
         pod("y", "client-1", {"app": "client"}), pod("y", "client-2", {"app": "client"}),
         pod("x", "api-1", {"app": "api"}, ports={"http": 8080})]

POLICIES = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y-on-81, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: b}}}]
    ports: [{port: 81, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: x}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 80, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-to-db, namespace: x}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
    ports: [{port: 80, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-on-http, namespace: x}
spec:
  podSelector: {matchLabels: {app: api}}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: b}}}]
    ports: [{port: http, protocol: TCP}]
"""
# the same, and web may also reach the db on 81 (web's egress and db's ingress)
WIDER = POLICIES.replace("ports: [{port: 80, protocol: TCP}]",
                         "ports: [{port: 80, protocol: TCP}, {port: 81, protocol: TCP}]")


def kube_list(items: list[dict]) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}, sort_keys=False)


def compile_artifact(out: Path, policies: str) -> Path:
    src = out.parent / f"{out.name}-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "policies.yaml").write_text(policies)
    (src / "inventory.yaml").write_text(kube_list(COMPILED))
    assert main(["compile", str(src / "policies.yaml"), "--inventory", str(src / "inventory.yaml"),
                 "--output-dir", str(out)]) == 0
    return out


def publish(volume: Path, artifact: Path, stamp: str) -> None:
    """Put ``artifact`` into ``volume`` the way the kubelet refreshes a ConfigMap: a new timestamped
    directory, then one atomic rename of the ``..data`` symlink."""
    target = volume / f"..{stamp}"
    target.mkdir(parents=True)
    for f in artifact.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    tmp = volume / "..data_tmp"
    tmp.symlink_to(target.name)
    tmp.rename(volume / "..data")
    for f in artifact.iterdir():
        if not (volume / f.name).is_symlink():
            (volume / f.name).symlink_to(f"..data/{f.name}")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    require_kernel()
    reason = plugins_missing()
    if reason:
        pytest.fail(f"{reason}: scripts/install-deps.sh installs containernetworking-plugins")
    base = tmp_path_factory.mktemp("pcc")
    return compile_artifact(base / "a1", POLICIES), compile_artifact(base / "a2", WIDER)


@pytest.fixture
def node(tmp_path, artifacts):
    volume, inventory = tmp_path / "volume", tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "namespaces.yaml").write_text(kube_list(NAMESPACES))
    (inventory / "pods.yaml").write_text(kube_list(LOCAL))
    publish(volume, artifacts[0], "2024_01_01_00_00_00.1")
    with Node(tmp_path) as n:
        n.volume, n.inventory = volume, inventory
        n.start_agent(NAME, volume, "--inventory-dir", str(inventory), "--node-name", "node-1",
                      "--listen", METRICS)
        yield n


def add(node: Node, net: dict, display: str):
    p = node.new_pod(display)
    res = node.add(net, p)
    assert res.code == 0, (res.out, res.err)
    return p


def verdicts(node: Node, flows) -> list[str]:
    """``[(src pod, dst pod, port)]`` over TCP, each probed from its source."""
    return [node.probe(src, [(dst.ip, port, "TCP")])[0] for src, dst, port in flows]


@pytest.mark.parametrize("kind", ["ptp", "bridge"])
def test_pods_are_enforced_from_their_first_packet_and_del_leaves_nothing(node, kind):
    net = conflist(kind, node.prefix, SUBNET, node.ipam, node.socket)
    db, client = add(node, net, "x/db-1"), add(node, net, "y/client-1")
    node.serve(db, 80, 81)
    node.serve(client, 80, 81)
    web = add(node, net, "x/web-2")
    # ADD has returned: the first connection web-2 makes already meets its egress policy and its identity
    assert verdicts(node, [(web, db, 80), (web, client, 80)]) == ["allow", "deny"]
    node.serve(web, 80, 81)
    assert verdicts(node, [(client, web, 81), (client, web, 80), (client, db, 81), (client, db, 80)]) == \
        ["allow", "deny", "allow", "deny"]
    # `policyc observe` reads the flows through the agent, naming the pods the CNI plugin registered
    seen = node.policyc("observe", NAME, "--verdict", "deny", "--format", "json")
    flows = {(f["source"], f["destination"], f["dport"]) for f in map(json.loads, seen.stdout.splitlines())}
    assert (web.display, client.display, 80) in flows and (client.display, web.display, 80) in flows
    status = json.loads(node.policyc("status", NAME, "--format", "json").stdout)
    hooked = {(a["endpoint"], a["iface"], a["hook"]) for a in status["attachments"]}
    assert {(web.display, web.host_veth, h) for h in ("ingress", "egress")} <= hooked
    assert status["agent"]["endpoints"]["cni"] == 3 and status["agent"]["endpoints"]["pending"] == []
    assert [r.code for r in node.check(net, web)] == [0, 0]

    links = node.workdir / "links-before"
    links.write_text("\n".join(sorted(p.name for p in Path(status["pin_dir"], "links").iterdir())))
    for r in node.delete(net, web):
        assert r.code == 0, r.err
    status = json.loads(node.policyc("status", NAME, "--format", "json").stdout)
    assert web.display not in {a["endpoint"] for a in status["attachments"]}
    pins = {p.name for p in Path(status["pin_dir"], "links").iterdir()}
    assert not any(web.host_veth in p for p in pins) and len(pins) == 4  # db-1's and client-1's
    state = node.policyc("endpoint", "remove", NAME, web.display)
    assert state.returncode == 2 and "unknown endpoint" in state.stderr  # its endpoint entries are gone
    assert [r.code for r in node.delete(net, web)] == [0, 0]  # DEL again: still fine (idempotent)


def test_a_pod_whose_labels_are_unknown_gets_only_what_its_namespace_is_granted(node):
    net = conflist("ptp", node.prefix, SUBNET, node.ipam, node.socket)
    web, client = add(node, net, "x/web-1"), add(node, net, "y/client-1")
    mystery = add(node, net, "x/mystery")  # in no inventory: registered pending
    node.serve(mystery, 80, 81)
    status = json.loads(node.policyc("status", NAME, "--format", "json").stdout)
    assert status["agent"]["endpoints"]["pending"] == ["x/mystery"]
    assert "labels not known yet" in node.policyc("status", NAME).stdout
    # every pod of x admits y on 81 (no label needed); web may reach only app=db, which mystery may or may not be
    assert verdicts(node, [(client, mystery, 81), (client, mystery, 80), (web, mystery, 80)]) == \
        ["allow", "deny", "deny"]
    # its labels arrive (app=db): the agent relabels it within a poll
    (node.inventory / "mystery.yaml").write_text(kube_list([pod("x", "mystery", {"app": "db"})]))
    deadline = time.monotonic() + 20
    while json.loads(node.policyc("status", NAME, "--format", "json").stdout)["agent"]["endpoints"]["pending"]:
        assert time.monotonic() < deadline, node.agent_log.read_text()[-2000:]
        time.sleep(0.1)
    assert verdicts(node, [(web, mystery, 80), (client, mystery, 80), (client, mystery, 81)]) == \
        ["allow", "deny", "allow"]


def test_a_pod_gets_its_named_ports_from_the_inventory(node):
    """api-1's container names 8080 `http`, the port api-on-http admits y on: the agent registers the pod
    with the inventory's named ports, so that port (and only it) is open from the first packet."""
    net = conflist("ptp", node.prefix, SUBNET, node.ipam, node.socket)
    api, client = add(node, net, "x/api-1"), add(node, net, "y/client-1")
    node.serve(api, 80, 8080, 8081)
    assert verdicts(node, [(client, api, 8080), (client, api, 8081), (client, api, 80)]) == ["allow", "deny", "deny"]


def test_an_agent_restart_under_traffic_loses_no_policy(node, tmp_path):
    net = conflist("ptp", node.prefix, SUBNET, node.ipam, node.socket)
    web, db, client = add(node, net, "x/web-1"), add(node, net, "x/db-1"), add(node, net, "y/client-1")
    for p in (web, db, client):
        node.serve(p, 80, 81)
    hold = node.spawn(web, ["hold", db.ip, "80"])
    assert hold.stdout.readline().strip() == "connected"
    expected = ["allow", "deny", "deny", "allow"]
    flows = [(web, db, 80), (web, db, 81), (client, db, 80), (client, db, 81)]
    assert verdicts(node, flows) == expected
    for how in (signal.SIGKILL, signal.SIGTERM):
        node.stop_agent(how)
        assert not node.socket.exists() or how == signal.SIGKILL
        assert verdicts(node, flows) == expected  # no agent: the pinned programs and maps enforce alone
        hold.stdin.write("ping\n")
        hold.stdin.flush()
        assert hold.stdout.readline().strip() == db.display  # the open connection goes on
        node.start_agent(NAME, node.volume, "--inventory-dir", str(node.inventory), "--node-name", "node-1",
                         "--listen", "off")
        assert verdicts(node, flows) == expected
    adopted = [line for line in node.log_lines() if line["msg"] == "adopted the policy in force"]
    assert len(adopted) == 2 and not [line for line in node.log_lines() if line["msg"] == "loaded the artifact"][1:]
    # the adopted agent knows its pods: a new one, a relabel by hand and a DEL work as before
    web2 = add(node, net, "x/web-2")
    assert verdicts(node, [(web2, db, 80), (web2, client, 80)]) == ["allow", "deny"]
    out = node.policyc("endpoint", "relabel", NAME, web2.display, "--label", "app=client")
    assert out.returncode == 0 and "through the agent" in out.stdout, out.stderr
    assert verdicts(node, [(web2, db, 80), (web2, client, 80)]) == ["deny", "allow"]
    assert [r.code for r in node.delete(net, web)] == [0, 0]


def test_after_an_unload_the_next_agent_puts_the_registered_pods_back_on_their_hooks(node, artifacts, tmp_path):
    """The operator's remove-and-reinstall: the agent stops, `policyc unload` takes every hook and map away,
    the CNI registrations stay in /run/policyc. The next agent waits for an artifact (a DEL meanwhile
    succeeds: nothing is in force to undo), loads it and attaches every registered pod whose veth is
    there; before, it wrote their entries but no hooks, and the pods ran unfiltered."""
    net = conflist("ptp", node.prefix, SUBNET, node.ipam, node.socket)
    web, db = add(node, net, "x/web-1"), add(node, net, "x/db-1")
    client, gone = add(node, net, "y/client-1"), add(node, net, "y/client-2")
    node.serve(db, 80, 81)
    node.serve(client, 80)
    flows = [(web, db, 80), (web, client, 80), (client, db, 80), (client, db, 81)]
    assert verdicts(node, flows) == ["allow", "deny", "deny", "allow"]
    node.stop_agent()
    assert node.policyc("unload", NAME).returncode == 0
    assert verdicts(node, flows) == ["allow"] * 4  # no policy at all
    volume = tmp_path / "later"
    volume.mkdir()
    node.start_agent(NAME, volume, "--inventory-dir", str(node.inventory), "--node-name", "node-1",
                     "--listen", "off", wait=False)
    _wait(node, lambda s: s.get("agent", {}).get("ready") is False)
    text = node.policyc("status", NAME).stdout  # nothing loaded: the agent's view says why
    assert "waiting for a valid artifact" in text and "REFUSED" in text and "manifest.json" in text, text
    assert [r.code for r in node.delete(net, gone)] == [0, 0], [r.out for r in node.delete(net, gone)]
    publish(volume, artifacts[0], "2024_01_01_00_00_00.9")
    status = _wait(node, lambda s: len(s.get("attachments", [])) == 6)
    assert {a["endpoint"] for a in status["attachments"]} == {web.display, db.display, client.display}
    assert status["agent"]["endpoints"]["cni"] == 3
    assert verdicts(node, flows) == ["allow", "deny", "deny", "allow"]
    assert [r.code for r in node.check(net, web)] == [0, 0]
    # structured logs: every line the agent wrote is one JSON object (no HTTP access lines among them)
    lines = node.agent_log.read_text().splitlines()
    assert lines and all(line.startswith("{") and json.loads(line) for line in lines), \
        [line for line in lines if not line.startswith("{")][:3]


def test_a_running_agent_puts_back_what_an_unload_took_away(node, artifacts):
    """`policyc unload` while the agent runs: before, the agent kept the state it had read and answered
    as if the policy were in force while every pod ran unfiltered until its next start. Now its next
    poll notices, loads the watched artifact again and re-attaches every registered pod."""
    net = conflist("ptp", node.prefix, SUBNET, node.ipam, node.socket)
    web, db, client = add(node, net, "x/web-1"), add(node, net, "x/db-1"), add(node, net, "y/client-1")
    node.serve(db, 80, 81)
    flows = [(web, db, 80), (client, db, 80), (client, db, 81)]
    assert verdicts(node, flows) == ["allow", "deny", "allow"]
    out = node.policyc("unload", NAME)
    assert out.returncode == 0 and "policyc agent" in out.stderr, out.stderr  # the operator is told
    status = _wait(node, lambda s: len(s.get("attachments", [])) == 6)
    assert {a["endpoint"] for a in status["attachments"]} == {web.display, db.display, client.display}
    assert verdicts(node, flows) == ["allow", "deny", "allow"]
    assert [line for line in node.log_lines() if line["msg"].startswith("the policy in force was unloaded")]
    assert 'policyc_agent_artifact_loads_total{result="unloaded-elsewhere"} 1.0' in _get(node, f"http://{METRICS}/metrics")
    assert [r.code for r in node.check(net, web)] == [0, 0]


def test_the_watched_artifact_is_replaced_and_a_broken_one_refused(node, artifacts, tmp_path):
    net = conflist("ptp", node.prefix, SUBNET, node.ipam, node.socket)
    web, db = add(node, net, "x/web-1"), add(node, net, "x/db-1")
    node.serve(db, 80, 81)
    assert verdicts(node, [(web, db, 81)]) == ["deny"]
    before = json.loads(node.policyc("status", NAME, "--format", "json").stdout)["manifest_sha256"]
    # a half-written artifact: maps.bin does not match the manifest
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in artifacts[1].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "maps.bin").write_bytes((broken / "maps.bin").read_bytes()[:-7])
    publish(node.volume, broken, "2024_01_01_00_00_00.2")
    status = _wait(node, lambda s: s["agent"]["artifact"]["refused"])
    assert "maps.bin: sha256 differs" in status["agent"]["artifact"]["refused"]["reason"]
    assert status["manifest_sha256"] == before and verdicts(node, [(web, db, 81)]) == ["deny"]
    assert "REFUSED" in node.policyc("status", NAME).stdout
    assert any(line["msg"].startswith("refused the artifact") for line in node.log_lines())
    refused = _get(node, f"http://{METRICS}/metrics")
    assert "policyc_agent_artifact_refused 1.0" in refused
    assert 'policyc_agent_artifact_loads_total{result="refused"} 1.0' in refused
    # a manifest cut short (written in place, not through the ..data swap): refused too, the old one stays
    half = tmp_path / "half"
    half.mkdir()
    for f in artifacts[1].iterdir():
        (half / f.name).write_bytes(f.read_bytes())
    (half / "manifest.json").write_bytes((half / "manifest.json").read_bytes()[:40])
    publish(node.volume, half, "2024_01_01_00_00_00.2b")
    status = _wait(node, lambda s: "not a complete manifest" in
                   (s["agent"]["artifact"]["refused"] or {}).get("reason", ""))
    assert status["manifest_sha256"] == before and verdicts(node, [(web, db, 81)]) == ["deny"]
    # the complete one: replaced in place, the pods keep their hooks, the new verdict holds
    publish(node.volume, artifacts[1], "2024_01_01_00_00_00.3")
    status = _wait(node, lambda s: s["manifest_sha256"] != before)
    assert status["agent"]["artifact"]["refused"] is None
    assert "policyc_agent_artifact_refused 0.0" in _get(node, f"http://{METRICS}/metrics")
    assert verdicts(node, [(web, db, 81), (web, db, 80)]) == ["allow", "allow"]
    assert {a["endpoint"] for a in status["attachments"]} == {web.display, db.display}


def test_cni_errors(node, tmp_path):
    net = conflist("ptp", node.prefix, SUBNET, node.ipam, node.socket)
    web = add(node, net, "x/web-1")
    # duplicate ADD of the same container and interface
    res = node.exec_plugin("policyc-cni", "ADD", node.derived(net, net["plugins"][1], web.result), web)
    assert res.code == 1 and res.out["code"] == 101 and "registered already" in res.out["details"]
    # no pod in CNI_ARGS
    stray = node.new_pod("x/stray")
    res = node.add(net, stray, args="IgnoreUnknown=1")
    assert res.code == 1 and res.out["code"] == 4 and "K8S_POD_NAME" in res.out["details"]
    # a prevResult without a host-side veth (a plugin that is not veth-based)
    conf = node.derived(net, net["plugins"][1], {"cniVersion": "1.0.0", "interfaces": [
        {"name": "eth0", "sandbox": "/var/run/netns/x"}], "ips": [{"address": "10.245.0.99/24", "interface": 0}]})
    res = node.exec_plugin("policyc-cni", "ADD", conf, stray)
    assert res.code == 1 and res.out["code"] == 7 and "no veth on the host side" in res.out["details"]
    res = node.exec_plugin("policyc-cni", "ADD", node.derived(net, net["plugins"][1], None), stray)
    assert res.code == 1 and res.out["code"] == 7 and "chained plugin" in res.out["details"]
    # DEL of a container nobody added, CHECK of one: DEL succeeds, CHECK says unknown (code 3)
    assert node.exec_plugin("policyc-cni", "DEL", node.derived(net, net["plugins"][1], None), stray).code == 0
    res = node.exec_plugin("policyc-cni", "CHECK", node.derived(net, net["plugins"][1], web.result), stray)
    assert res.code == 1 and res.out["code"] == 3
    # VERSION
    res = node.exec_plugin("policyc-cni", "VERSION", {"cniVersion": "1.0.0"}, stray)
    assert res.code == 0 and "1.0.0" in res.out["supportedVersions"]
    # the agent down: ADD fails closed (11, try again), the runtime's DEL after it succeeds, DEL of web too
    node.stop_agent()
    late = node.new_pod("x/web-2")
    res = node.add(net, late)
    assert res.code == 1 and res.out["code"] == 11 and "agent" in res.out["details"]
    assert not [line for line in (node.ipam / net["name"]).iterdir() if line.name.startswith("10.245.0.")
                and line.read_text().strip().startswith(late.container)]  # the failed ADD was undone
    assert [r.code for r in node.delete(net, web)] == [0, 0]
    out = node.policyc("endpoint", "add", NAME, "x/p", "--ip", "10.245.0.200", "--label", "app=web")
    assert out.returncode == 0 and "through the agent" not in out.stdout  # the CLI works alone, as before
    # the agent comes back: web's registration (DEL came while it was down) goes with its veth, hooks too
    node.start_agent(NAME, node.volume, "--inventory-dir", str(node.inventory), "--node-name", "node-1",
                     "--listen", "off")
    status = json.loads(node.policyc("status", NAME, "--format", "json").stdout)
    assert status["agent"]["endpoints"]["cni"] == 0 and status["attachments"] == []
    assert node.policyc("endpoint", "remove", NAME, web.display).returncode == 2


@pytest.mark.parametrize("version", ["0.4.0", "0.3.1"])
def test_an_older_cni_version_chains_the_same(node, version):
    """containerd passes the conflist's cniVersion to every plugin: ptp answers in that version's result
    format, policyc-cni reads it, enforces from the first packet and answers in the same version; CHECK
    exists from 0.4.0 on (ptp and policyc-cni both refuse it before, code 1, as libcni's skel does)."""
    net = {**conflist("ptp", node.prefix, SUBNET, node.ipam, node.socket), "cniVersion": version}
    db, web = add(node, net, "x/db-1"), add(node, net, "x/web-1")
    assert web.result["cniVersion"] == version
    node.serve(db, 80, 81)
    assert verdicts(node, [(web, db, 80), (web, db, 81)]) == ["allow", "deny"]
    checks = node.check(net, web)
    if version == "0.4.0":
        assert [r.code for r in checks] == [0, 0], [r.out for r in checks]
    else:
        assert [(r.code, r.out["code"]) for r in checks] == [(1, 1), (1, 1)], [r.out for r in checks]
    assert [r.code for r in node.delete(net, web)] == [0, 0]
    status = json.loads(node.policyc("status", NAME, "--format", "json").stdout)
    assert {a["endpoint"] for a in status["attachments"]} == {db.display}


def test_a_second_interface_of_a_pod_is_refused_and_the_first_keeps_its_policy(node):
    """A second network for the same container (Multus adds one with CNI_IFNAME=net1) chained with
    policyc-cni: policyc enforces one interface per pod, so that ADD fails (100) and the runtime's DEL
    after it removes nothing of eth0's; before, the agent took it for a new sandbox and detached eth0's
    hooks, leaving the pod's first interface unfiltered."""
    net = conflist("ptp", node.prefix, SUBNET, node.ipam, node.socket)
    second = {**conflist("ptp", node.prefix, "10.245.1.0/24", node.ipam, node.socket), "name": f"{node.prefix}-net1"}
    second["plugins"][0]["ipam"]["routes"] = []  # eth0 has the default route
    db, client, web = add(node, net, "x/db-1"), add(node, net, "y/client-1"), add(node, net, "x/web-1")
    node.serve(client, 80)
    node.serve(db, 80)
    prev = node.exec_plugin("ptp", "ADD", node.derived(second, second["plugins"][0], None), web, ifname="net1")
    assert prev.code == 0, prev.err
    res = node.exec_plugin("policyc-cni", "ADD", node.derived(second, second["plugins"][1], prev.out), web,
                           ifname="net1")
    assert res.code == 1 and res.out["code"] == 100 and "one interface per pod" in res.out["details"], res.out
    for plugin in reversed(second["plugins"]):  # the runtime undoes the failed ADD of the second network
        assert node.exec_plugin(plugin["type"], "DEL", node.derived(second, plugin, prev.out), web,
                                ifname="net1").code == 0
    assert verdicts(node, [(web, db, 80), (web, client, 80)]) == ["allow", "deny"]
    status = json.loads(node.policyc("status", NAME, "--format", "json").stdout)
    assert {(a["iface"], a["hook"]) for a in status["attachments"] if a["endpoint"] == web.display} == \
        {(web.host_veth, "ingress"), (web.host_veth, "egress")}
    assert [r.code for r in node.check(net, web)] == [0, 0]


def test_metrics_and_health(tmp_path, artifacts):
    with Node(tmp_path, "pcm") as n:
        port = 19970
        n.start_agent("pcmtest", artifacts[0], "--listen", f"127.0.0.1:{port}")
        ready = _get(n, f"http://127.0.0.1:{port}/readyz")
        assert json.loads(ready)["ready"] is True
        text = _get(n, f"http://127.0.0.1:{port}/metrics")
        for family in ("policyc_agent_ready 1.0", "policyc_agent_artifact_refused 0.0", "policyc_map_entries{",
                       "policyc_agent_artifact_loads_total{result=\"loaded\"} 1.0"):
            assert family in text, family


def _get(node: Node, url: str) -> str:
    """An HTTP GET from inside the node namespace (the agent listens on the node's loopback)."""
    code = f"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    proc = subprocess.run(node.in_node(["python3", "-c", code]), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _wait(node: Node, done, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        out = node.policyc("status", NAME, "--format", "json")  # fails while nothing is loaded and no agent answers
        status = json.loads(out.stdout) if out.returncode == 0 else None
        if status is not None and done(status):
            return status
        assert time.monotonic() < deadline, node.agent_log.read_text()[-3000:]
        time.sleep(0.2)

