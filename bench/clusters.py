"""Generated inputs for the datapath benchmarks: one server pod and N client pods with their own labels.

The server's policy allows ingress from every client on 80/TCP (and from
203.0.113.0/24, the world prefix the XDP hook filters) and egress to every
client on 80/TCP, so the artifact holds about N ipcache entries (one per
client address) and 2N policy entries (one per client identity and
direction).  Port 81 is allowed nowhere: a probe to it misses conntrack and
walks the whole policy path on every repetition.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path

SERVER_IP = "10.200.0.1"
CLIENT_NET = ipaddress.ip_network("10.128.0.0/10")
WORLD_ALLOWED, WORLD_DENIED = "203.0.113.7", "198.51.100.5"
ALLOWED_PORT, DENIED_PORT = 80, 81


def client_ip(i: int) -> str:
    return str(CLIENT_NET.network_address + 1 + i)


def _namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}


def _pod(ns: str, name: str, labels: dict, ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}


def inventory(n_clients: int) -> dict:
    """N clients in namespaces of 1000, each its own identity (label ``id``), and the server."""
    items = [_namespace("srv"), _pod("srv", "server", {"app": "server"}, SERVER_IP)]
    for ns in range((n_clients + 999) // 1000):
        items.append(_namespace(f"c{ns}"))
    items += [_pod(f"c{i // 1000}", f"client-{i}", {"role": "client", "id": str(i)}, client_ip(i))
              for i in range(n_clients)]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def server_policy() -> dict:
    clients = {"matchLabels": {"role": "client"}}
    port = [{"ports": [{"port": str(ALLOWED_PORT), "protocol": "TCP"}]}]
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": "server"},
            "spec": {"endpointSelector": {"matchLabels": {"app": "server"}},
                     "ingress": [{"fromEndpoints": [clients], "toPorts": port},
                                 {"fromCIDR": ["203.0.113.0/24"], "toPorts": port}],
                     "egress": [{"toEndpoints": [clients], "toPorts": port}]}}


def write(directory: Path, n_clients: int) -> tuple[Path, Path]:
    """inventory.json and policies/server.json under ``directory``."""
    (directory / "policies").mkdir(parents=True, exist_ok=True)
    inv = directory / "inventory.json"
    inv.write_text(json.dumps(inventory(n_clients)))
    (directory / "policies" / "server.json").write_text(json.dumps(server_policy()))
    return inv, directory / "policies"
