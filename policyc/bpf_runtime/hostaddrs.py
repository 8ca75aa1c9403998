"""The local node's addresses, which the datapath sees as identity ``host`` (docs/runtime.md, Host identity).

``host`` is every address configured in the loader's network namespace (the node's): its InternalIP,
the CNI bridge or gateway address pods route through, tunnel and other interface addresses, IPv4 and
IPv6 link-local ones.  They are read from the kernel with one netlink dump (RTM_GETADDR, which sees
secondary addresses that the older SIOCGIFADDR ioctl misses) at load, at replace and when a pod is
added, the moments a CNI creates addresses.  Pod addresses are never ``host``, even if configured here.
"""
from __future__ import annotations

import ipaddress
import json
import socket
import struct
from pathlib import Path

from ..compiler.layouts import layouts
from ..compiler.lower import HOST_ID
from ..compiler.mapdata import ipcache_host_key
from .libbpf import Map

RTM_GETADDR, RTM_NEWADDR, NLMSG_DONE, NLMSG_ERROR = 22, 20, 3, 2
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
_NLMSG, _IFADDRMSG, _RTATTR = struct.Struct("=IHHII"), struct.Struct("=BBBBI"), struct.Struct("=HH")


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        out[kind] = data[offset + _RTATTR.size:offset + length]
        offset += (length + 3) & ~3
    return out


def parse_addresses(data: bytes) -> tuple[set[str], bool]:
    """The addresses in one netlink reply buffer, and whether the dump is complete (NLMSG_DONE seen)."""
    out, offset = set(), 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _, _, _ = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size or kind in (NLMSG_DONE, NLMSG_ERROR):
            return out, True
        if kind == RTM_NEWADDR:
            family = data[offset + _NLMSG.size]
            attrs = _attributes(data, offset + _NLMSG.size + _IFADDRMSG.size, offset + length)
            raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))  # IFA_ADDRESS is the peer on point-to-point links
            if raw and family in (socket.AF_INET, socket.AF_INET6):
                out.add(str(ipaddress.ip_address(raw)))
        offset += (length + 3) & ~3
    return out, False


def local_addresses() -> set[str]:
    """Every address configured in this network namespace, both families (a netlink dump)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        request = _NLMSG.pack(_NLMSG.size + _IFADDRMSG.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        sock.send(request + _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        out: set[str] = set()
        done = False
        while not done:
            found, done = parse_addresses(sock.recv(65536))
            out |= found
    return out


def node_addresses(artifact: Path, explicit: tuple[str, ...]) -> list[str]:
    """The addresses to see as ``host``: those given, plus every local address that is no pod's."""
    try:
        pods = {ip for e in json.loads((artifact / "endpoints.json").read_text()) for ip in e["ips"]}
    except (OSError, ValueError, KeyError):
        pods = set()
    return sorted(set(explicit) | (local_addresses() - pods), key=lambda a: (ipaddress.ip_address(a).version,
                                                                               ipaddress.ip_address(a)))


def set_host_identity(hosts: Map, features: dict, ips: list[str]) -> None:
    """Rewrite the local node's addresses to identity host (docs/artifact.md, Identities)."""
    addr_len = 16 if features.get("ipv6") else 4
    lay = layouts(addr_len, bool(features.get("port_ranges")))
    for text in ips:
        ip = ipaddress.ip_address(text)
        if ip.version == 6 and addr_len == 4:
            continue  # an IPv4-only artifact drops IPv6 anyway
        hosts.update(ipcache_host_key(lay, ip, addr_len), lay["ipcache_value"].pack(identity=HOST_ID))
