"""`host` is every address of the local node, remote nodes' gateway and tunnel addresses are `remote-node`,
and a pod has one address per family (docs/artifact.md, Identities; docs/runtime.md, Host identity)."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kernelreq import require_kernel
from policyc.compiler.diagnostics import PolicycError
from policyc.compiler.entities import RESERVED_IDS
from policyc.compiler.frontend import build_policy_set
from policyc.compiler.inventory import load_inventory
from policyc.compiler.lower import lower

ROOT = Path(__file__).resolve().parents[1]
NODE = """apiVersion: v1
kind: Node
metadata:
  name: n2
  annotations: {%s}
status: {addresses: [{type: InternalIP, address: 192.0.2.20}, {type: Hostname, address: n2}]}
"""


def inventory(tmp_path: Path, text: str):
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return load_inventory([path])


def test_gateway_and_tunnel_addresses_of_a_node_are_remote_node(tmp_path):
    inv = inventory(tmp_path, NODE % '"network.cilium.io/ipv4-cilium-host": 10.0.2.1, '
                                    '"projectcalico.org/IPv4VXLANTunnelAddr": 10.0.2.2, '
                                    '"projectcalico.org/IPv4Address": 192.0.2.20/24')
    assert [str(ip) for ip in inv.find("n2").ips] == ["192.0.2.20", "10.0.2.1", "10.0.2.2"]
    assert inv.find("10.0.2.2").name == "n2"  # query, matrix and verify see the same node
    dp = lower(build_policy_set([]).policy, inv)
    remote = {str(e.network) for e in dp.ipcache if e.identity == RESERVED_IDS["remote-node"]}
    assert remote == {"192.0.2.20/32", "10.0.2.1/32", "10.0.2.2/32"}


def test_a_bad_node_annotation_is_an_error_at_its_line(tmp_path):
    with pytest.raises(PolicycError) as err:
        inventory(tmp_path, NODE % '"io.cilium.network.ipv4-cilium-host": not-an-ip')
    diag = err.value.diagnostics[0]
    assert diag.line == 5 and "invalid node address 'not-an-ip'" in diag.message


def test_a_pod_has_one_address_per_family(tmp_path):
    pod = """apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x}
spec: {containers: []}
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: "fd00::1"}, {ip: 10.0.0.2}]}
"""
    with pytest.raises(PolicycError) as err:
        inventory(tmp_path, pod)
    assert "second IPv4 address" in err.value.diagnostics[0].message and err.value.diagnostics[0].line == 5


def ns_run(netns: str, *argv: str) -> str:
    done = subprocess.run(["nsenter", f"--net=/var/run/netns/{netns}", *argv], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT)}, check=True, timeout=60)
    return done.stdout


@pytest.mark.kernel
def test_every_local_address_is_host(tmp_path):
    """In a network namespace with a bridge-like gateway (a /32 and a secondary address), a link-local
    IPv6 address and a pod address configured by mistake: every address but the pod's is `host`."""
    require_kernel()
    netns = f"pch-{uuid.uuid4().hex[:6]}"
    (tmp_path / "art").mkdir()
    (tmp_path / "art" / "endpoints.json").write_text(json.dumps([{"name": "x/a", "ips": ["10.244.1.1"]}]))
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        for cmd in ("link add gw0 type dummy", "link set gw0 up", "link set lo up",
                    "addr add 169.254.1.1/32 dev gw0", "addr add 10.244.1.254/24 dev gw0",
                    "addr add 10.244.1.253/24 dev gw0", "addr add 10.244.1.1/32 dev gw0",
                    "addr add fe80::1/64 dev gw0 nodad"):
            subprocess.run(["ip", "-n", netns, *cmd.split()], check=True)
        out = ns_run(netns, sys.executable, "-c",
                     "import json, sys; from pathlib import Path; "
                     "from policyc.bpf_runtime.hostaddrs import node_addresses; "
                     f"print(json.dumps(node_addresses(Path({str(tmp_path / 'art')!r}), ('192.0.2.9',))))")
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
    host = set(json.loads(out))
    assert {"169.254.1.1", "10.244.1.254", "10.244.1.253", "fe80::1", "127.0.0.1", "::1", "192.0.2.9"} <= host
    assert "10.244.1.1" not in host  # a pod's address is never host
