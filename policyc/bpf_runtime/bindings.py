"""Which endpoint a pod hook serves, and the revision that tells tracked flows to be decided again.

The pod hooks read their endpoint from the ``interfaces`` map by ``skb->ifindex``, never from a packet
address (docs/artifact.md, "Endpoint binding"): binding writes the endpoint's record (as the
``endpoints`` map holds it) with its addresses there, and flags the addresses ``local`` in the
ipcache, which xdp_node's anti-spoofing reads.  Every change of policy, labels or addresses bumps
``revision``: a conntrack entry made under an older revision is decided again before it passes a packet.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable, Mapping

from ..compiler.layouts import Layout, layouts
from ..compiler.lower import IPCACHE_LOCAL
from ..compiler.mapdata import addr_bytes, ipcache_host_key
from .errors import error
from .libbpf import Map

ADDR_SLOTS = 2  # interface_value.addrs: a pod has at most one address per family
MAPS = ("endpoints", "interfaces", "ipcache_hosts")  # what binding reads and writes


def layouts_for(features: dict) -> tuple[dict[str, Layout], int]:
    """The layouts of an artifact with these features, and its address length."""
    addr_len = 16 if features.get("ipv6") else 4
    return layouts(addr_len, bool(features.get("port_ranges"))), addr_len


def addr_slots(ips: Iterable, addr_len: int) -> bytes:
    """The endpoint's addresses for interface_value.addrs; a single address fills both slots, so an
    empty slot never matches a zero address."""
    packed = [addr_bytes(ipaddress.ip_address(ip), addr_len) for ip in ips]
    if not packed or len(packed) > ADDR_SLOTS:
        raise error(f"an endpoint has one or two addresses (one per family), not {len(packed)}")
    return b"".join((packed * ADDR_SLOTS)[:ADDR_SLOTS])


def set_local(hosts: Map, lay: dict[str, Layout], addr_len: int, ips: Iterable, local: bool) -> None:
    """Flag (or unflag) the ipcache entries of ``ips`` as a pod bound on this node."""
    for ip in ips:
        key = ipcache_host_key(lay, ipaddress.ip_address(ip), addr_len)
        raw = hosts.lookup(key)
        if raw is None:
            continue
        value = lay["ipcache_value"].unpack(raw)
        flags = value["flags"] | IPCACHE_LOCAL if local else value["flags"] & ~IPCACHE_LOCAL
        hosts.update(key, lay["ipcache_value"].pack(identity=value["identity"], flags=flags))


def set_identity(hosts: Map, lay: dict[str, Layout], addr_len: int, ip, identity: int) -> None:
    """A pod address's identity in the ipcache, keeping its local flag (a relabel never unbinds)."""
    key = ipcache_host_key(lay, ipaddress.ip_address(ip), addr_len)
    raw = hosts.lookup(key)
    flags = lay["ipcache_value"].unpack(raw)["flags"] & IPCACHE_LOCAL if raw is not None else 0
    hosts.update(key, lay["ipcache_value"].pack(identity=identity, flags=flags))


def object_maps(obj) -> dict[str, Map]:
    """The maps binding writes, of a loaded object (libbpf's or the bcc loader's)."""
    return {name: obj.map(name) for name in MAPS}


def bind(maps: Mapping[str, Map], features: dict, ifindex: int, ips: list) -> None:
    """The pod hooks on interface ``ifindex`` serve the endpoint that holds ``ips`` (its ``endpoints`` record)."""
    lay, addr_len = layouts_for(features)
    record = maps["endpoints"].lookup(lay["endpoint_key"].pack(addr=addr_bytes(ipaddress.ip_address(ips[0]),
                                                                                addr_len)))
    if record is None:
        raise error(f"no endpoint holds {ips[0]}: cannot bind interface {ifindex} to it")
    maps["interfaces"].update(lay["interface_key"].pack(ifindex=ifindex), record + addr_slots(ips, addr_len))
    set_local(maps["ipcache_hosts"], lay, addr_len, ips, True)


def unbind(maps: Mapping[str, Map], features: dict, ifindex: int, ips: list) -> None:
    lay, addr_len = layouts_for(features)
    maps["interfaces"].delete(lay["interface_key"].pack(ifindex=ifindex))
    set_local(maps["ipcache_hosts"], lay, addr_len, ips, False)


def bump_revision(revision: Map) -> int:
    """Count one change of policy, labels or addresses; returns the new revision."""
    key = (0).to_bytes(4, "little")
    value = int.from_bytes(revision.lookup(key) or bytes(4), "little") + 1
    revision.update(key, value.to_bytes(4, "little"))
    return value
