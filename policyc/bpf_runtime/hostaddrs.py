"""The local node's addresses, which the datapath sees as identity ``host`` (docs/runtime.md, Host identity)."""
from __future__ import annotations

import fcntl
import ipaddress
import json
import socket
import struct
from pathlib import Path

from ..compiler.layouts import layouts
from ..compiler.lower import HOST_ID
from ..compiler.mapdata import ipcache_host_key
from .libbpf import Map


def local_addresses() -> set[str]:
    """Addresses configured in this network namespace (from /proc, no tools needed)."""
    out = set()
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            out.add(str(ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))))
    except OSError:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, iface in socket.if_nameindex():
            try:
                req = struct.pack("256s", iface.encode()[:15])
                out.add(socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24]))  # SIOCGIFADDR
            except OSError:
                pass
    return out


def node_addresses(artifact: Path, explicit: tuple[str, ...]) -> list[str]:
    """The local node's addresses: those given, plus inventory node addresses configured here."""
    try:
        ipcache = json.loads((artifact / "maps.json").read_text())["maps"]["ipcache_hosts"]
    except (OSError, ValueError, KeyError):
        ipcache = []
    nodes = {e["prefix"].split("/")[0] for e in ipcache if str(e.get("source", "")).startswith("node ")}
    return sorted(set(explicit) | (nodes & local_addresses()), key=ipaddress.ip_address)


def set_host_identity(hosts: Map, features: dict, ips: list[str]) -> None:
    """Rewrite the local node's addresses to identity host (docs/artifact.md, Identities)."""
    addr_len = 16 if features.get("ipv6") else 4
    lay = layouts(addr_len, bool(features.get("port_ranges")))
    for text in ips:
        ip = ipaddress.ip_address(text)
        if ip.version == 6 and addr_len == 4:
            continue  # an IPv4-only artifact drops IPv6 anyway
        hosts.update(ipcache_host_key(lay, ip, addr_len), lay["ipcache_value"].pack(identity=HOST_ID))
