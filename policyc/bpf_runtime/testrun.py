"""Drive loaded programs with BPF_PROG_TEST_RUN: crafted frames through the hooks a packet meets.

A pod-to-pod packet leaves the source pod through ``from_pod`` (its egress
policy) and reaches the destination through ``to_pod`` (its ingress policy);
a packet from outside first meets ``xdp_node`` on the node's interface.
Every hook's verdict is reported separately, so each side can be held
against the evaluator's own direction verdict.  A test run executes a TC
program on ``lo`` unless its context names another device, so before each
pod hook runs, ``lo`` is bound to that pod (bindings.py), as the loader
binds a pod's veth.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ..compiler.ir import Protocol
from .bindings import bind, object_maps
from .libbpf import BPFObject, Program

TC_ACT_OK, TC_ACT_SHOT = 0, 2
XDP_DROP, XDP_PASS = 1, 2
SKB_CTX_BYTES = 192  # sizeof(struct __sk_buff)
SKB_INGRESS_IFINDEX_OFFSET, SKB_IFINDEX_OFFSET = 36, 40
LOOPBACK_IFINDEX = 1  # the device of a test run whose context names none
_SRC_MAC, _DST_MAC = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def l4_header(protocol: Protocol, sport: int, dport: int) -> bytes:
    """TCP SYN, UDP, SCTP common header, or ICMP with the port slot as type and sport as echo id."""
    if protocol is Protocol.TCP:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    if protocol is Protocol.UDP:
        return struct.pack("!HHHH", sport, dport, 8 + 4, 0) + b"ping"
    if protocol is Protocol.SCTP:
        return struct.pack("!HHII", sport, dport, 0, 0)
    if protocol in (Protocol.ICMP, Protocol.ICMPV6):
        return struct.pack("!BBHHH", dport, 0, 0, sport, 1)
    raise ValueError(f"cannot craft a {protocol.label} packet")


def frame(src, dst, protocol: Protocol, sport: int, dport: int) -> bytes:
    """An Ethernet frame with an IPv4 or IPv6 header and the L4 header."""
    l4 = l4_header(protocol, sport, dport)
    if src.version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, 64, int(protocol), 0, src.packed, dst.packed)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        return _DST_MAC + _SRC_MAC + b"\x08\x00" + ip + l4
    ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(l4), int(protocol), 64, src.packed, dst.packed)
    return _DST_MAC + _SRC_MAC + b"\x86\xdd" + ip6 + l4


def skb_ctx(ifindex: int = 0, ingress_ifindex: int = 0) -> bytes:
    """A ``struct __sk_buff`` for a test run: the device it runs on (0: lo) and the one it came in by."""
    ctx = bytearray(SKB_CTX_BYTES)
    struct.pack_into("<I", ctx, SKB_IFINDEX_OFFSET, ifindex)
    struct.pack_into("<I", ctx, SKB_INGRESS_IFINDEX_OFFSET, ingress_ifindex)
    return bytes(ctx)


@dataclass(frozen=True)
class HookResult:
    hook: str
    passed: bool
    retval: int = 0


class Hooks:
    """The three programs of one loaded artifact (``features``: its manifest's), pod hooks bound to ``lo``."""

    def __init__(self, obj: BPFObject, features: dict):
        self.from_pod = obj.program("from_pod")
        self.to_pod = obj.program("to_pod")
        self.xdp_node = obj.program("xdp_node")
        self.maps = object_maps(obj)
        self.features = features
        self.bound: tuple = ()

    def bind(self, pod_ips: tuple) -> None:
        """Bind ``lo`` to the pod holding ``pod_ips`` (all its addresses), unless it is bound already."""
        if pod_ips != self.bound:
            bind(self.maps, self.features, LOOPBACK_IFINDEX, list(pod_ips))
            self.bound = pod_ips

    def _tc(self, prog: Program, data: bytes, pod_ips: tuple) -> HookResult:
        self.bind(pod_ips)
        run = prog.test_run(data, ctx=skb_ctx())
        if run.retval not in (TC_ACT_OK, TC_ACT_SHOT):
            raise AssertionError(f"{prog.name} returned {run.retval}")
        return HookResult(prog.name, run.retval == TC_ACT_OK, run.retval)

    def send(self, src_ip, dst_ip, protocol: Protocol, sport: int, dport: int,
             src_pod: tuple, dst_pod: tuple, src_outside: bool) -> list[HookResult]:
        """One packet through every hook it meets: from_pod, xdp_node (from outside), to_pod.

        ``src_pod`` / ``dst_pod`` are the addresses of the pod at that end (empty: not a pod, no hook).
        All hooks run even after a drop, so each direction's verdict is observed on its own.
        """
        data = frame(ipaddress.ip_address(src_ip), ipaddress.ip_address(dst_ip), protocol, sport, dport)
        out = []
        if src_pod:
            out.append(self._tc(self.from_pod, data, src_pod))
        if dst_pod:
            if src_outside:
                run = self.xdp_node.test_run(data)
                out.append(HookResult("xdp_node", run.retval == XDP_PASS, run.retval))
            out.append(self._tc(self.to_pod, data, dst_pod))
        return out

    def time_per_packet(self, data: bytes, src_pod: tuple, dst_pod: tuple, repeat: int = 10000) -> dict[str, int]:
        """Average ns per run of each TC program on ``data`` (bench use): from_pod on the source pod's
        interface, to_pod on the destination's."""
        out = {}
        for prog, pod in ((self.from_pod, src_pod), (self.to_pod, dst_pod)):
            self.bind(pod)
            out[prog.name] = prog.test_run(data, ctx=skb_ctx(), repeat=repeat).duration_ns
        return out
