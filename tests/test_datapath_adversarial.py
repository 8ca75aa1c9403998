"""Crafted packets (scapy) through the loaded hooks with BPF_PROG_TEST_RUN: each bypass of the parser
closed, and the legitimate packet beside it still passing.

Inventory: x/a, x/b, y/a, y/b with 10.244.<ns>.<pod> and fd00::<ns>:<pod> (tests/dpgen.py).
Policy: x/a admits world on every port except 22/TCP (an L3 allow and a port deny); x/b admits world on
80/TCP and 80/UDP and may reach world on 443/TCP only; y/b admits only x/a. World is 198.51.100.7 and
2001:db8::7, a router on the way 203.0.113.1 / 2001:db8:ffff::1.
"""
from __future__ import annotations

import os
import struct

import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment  # noqa: E402
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6MLReport2, ICMPv6ND_NA, ICMPv6ND_NS,  # noqa: E402
                                ICMPv6ND_RS, ICMPv6PacketTooBig, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, RouterAlert, fragment6)
from scapy.layers.ipsec import AH  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from dpgen import make_rule, policy_set, selector, standard_inventory  # noqa: E402
from kernelreq import require_kernel  # noqa: E402
from policyc.bpf_runtime.artifact import fill_maps, read_manifest  # noqa: E402
from policyc.bpf_runtime.events import decode_event  # noqa: E402
from policyc.bpf_runtime.libbpf import BPFObject, RingBuffer  # noqa: E402
from policyc.bpf_runtime.testrun import TC_ACT_OK, XDP_PASS, Hooks, skb_ctx  # noqa: E402
from policyc.compiler.artifact import OBJECT, compile_artifact  # noqa: E402
from policyc.compiler.codegen import REASON_WORDS  # noqa: E402
from policyc.compiler.entities import entity_selectors  # noqa: E402
from policyc.compiler.ir import L3_ONLY, Action, Direction, PortMatch, Protocol, SelectorPeer  # noqa: E402
from policyc.compiler.layouts import layouts  # noqa: E402
from policyc.compiler.mapdata import CT_MAPS, STATS  # noqa: E402

pytestmark = pytest.mark.kernel

WORLD = SelectorPeer(entity_selectors("world", "default"), "entity", "world")
XA4, XB4, YB4, W4, R4 = "10.244.1.1", "10.244.1.2", "10.244.2.2", "198.51.100.7", "203.0.113.1"
XA6, XB6, YB6, W6, R6 = "fd00::1:1", "fd00::1:2", "fd00::2:2", "2001:db8::7", "2001:db8:ffff::1"
NODE_LL, POD_LL = "fe80::1", "fe80::b"
MACS = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
RING_BYTES = 4096  # small, so the loss test fills it with a few dozen events


class Datapath:
    """The three hooks of one loaded artifact, its events, and its counters. A pod hook runs on the
    interface of the pod at its end of the packet (the source for from_pod, the destination for to_pod;
    x/b for what a pod sends from a link-local or unspecified address), as the loader binds it."""

    def __init__(self, obj: BPFObject, features: dict):
        self.obj = obj
        self.progs = {name: obj.program(name) for name in ("from_pod", "to_pod", "xdp_node")}
        self.events: list = []
        self.ring = RingBuffer(obj.map("events"), lambda raw: self.events.append(decode_event(raw)))
        self.lay = layouts(16, False)
        self.hooks = Hooks(obj, features)
        self.pods = {str(ip): tuple(ep.ips) for ep in standard_inventory(v6=True).pods for ip in ep.ips}

    def passes(self, hook: str, pkt) -> bool:
        return self.passes_frame(hook, bytes(Ether(**MACS) / pkt))

    def passes_frame(self, hook: str, data: bytes) -> bool:
        if hook == "xdp_node":
            return self.progs[hook].test_run(data).retval == XDP_PASS
        ip = Ether(data).payload
        end = str(ip.src if hook == "from_pod" else ip.dst)
        self.hooks.bind(self.pods.get(end, self.pods[XB6]))
        return self.progs[hook].test_run(data, ctx=skb_ctx()).retval == TC_ACT_OK

    def drained(self) -> list:
        self.ring.consume()
        out, self.events = self.events, []
        return out

    def counter(self, map_name: str, slot: int) -> int:
        return sum(self.lay["counter"].unpack(v)["packets"]
                   for v in self.obj.map(map_name).percpu_values(struct.pack("<I", slot)))

    def drops(self, reason: str) -> int:
        return self.counter("drops", next(c for c, word in REASON_WORDS.items() if word == reason))

    def stat(self, name: str) -> int:
        return self.counter("stats", STATS.index(name))

    def conntrack(self) -> list[dict]:
        return [self.lay["ct_key"].unpack(k) for name in CT_MAPS for k in self.obj.map(name).keys()]


@pytest.fixture(scope="module")
def dp(tmp_path_factory):
    require_kernel()
    tcp = lambda port: PortMatch(Protocol.TCP, port, port)  # noqa: E731
    policy = policy_set([
        make_rule(0, selector("x", "a"), Direction.INGRESS, Action.ALLOW, [WORLD], L3_ONLY),
        make_rule(1, selector("x", "a"), Direction.INGRESS, Action.DENY, [WORLD], [tcp(22)]),
        make_rule(2, selector("x", "b"), Direction.INGRESS, Action.ALLOW, [WORLD],
                  [tcp(80), PortMatch(Protocol.UDP, 80, 80)]),
        make_rule(3, selector("x", "b"), Direction.EGRESS, Action.ALLOW, [WORLD], [tcp(443)]),
        make_rule(4, selector("y", "b"), Direction.INGRESS, Action.ALLOW, [SelectorPeer((selector("x", "a"),))],
                  [tcp(80)]),
    ])
    out = tmp_path_factory.mktemp("adversarial")
    compile_artifact(policy, standard_inventory(v6=True), out, [])
    obj = BPFObject.open(str(out / OBJECT))
    try:
        obj.set_max_entries("events", RING_BYTES)
        obj.load()
        fill_maps(obj, out)
        d = Datapath(obj, read_manifest(out)["features"])
        yield d
        d.ring.close()
    finally:
        obj.close()


def world_to(dp: Datapath, pkt) -> list[bool]:
    """A packet from outside meets xdp_node, then to_pod."""
    return [dp.passes("xdp_node", pkt), dp.passes("to_pod", pkt)]


# -- 1: IPv6 extension headers ------------------------------------------------------------------

EXT_CHAINS = {
    "dstopts": lambda: IPv6ExtHdrDestOpt(),
    "atomic-fragment": lambda: IPv6ExtHdrFragment(offset=0, m=0, id=7),
    "hop-routing-dst": lambda: IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=[]) / IPv6ExtHdrDestOpt(),
    "auth": lambda: AH(nh=6, payloadlen=4, spi=1, icv=b"\0" * 12),  # 24 bytes: (4 + 2) * 4
}


@pytest.mark.parametrize("chain", sorted(EXT_CHAINS))
def test_syn_behind_extension_headers_gets_its_ports_verdict(dp, chain):
    """A SYN to x/a:22 behind extension headers meets the 22/TCP deny (it used to be protocol 60/44,
    port 0, and the L3 allow let it in); the same chain to port 80 is still allowed."""
    denied = IPv6(src=W6, dst=XA6) / EXT_CHAINS[chain]() / TCP(sport=40001, dport=22, flags="S")
    allowed = IPv6(src=W6, dst=XA6) / EXT_CHAINS[chain]() / TCP(sport=40001, dport=80, flags="S")
    dp.drained()
    assert world_to(dp, denied) == [False, False]
    events = dp.drained()
    assert [(e.verdict, e.reason, e.protocol, e.dport) for e in events] == [("deny", "denied-by-rule", "TCP", 22)] * 2
    assert world_to(dp, allowed) == [True, True]


def test_extension_headers_that_cannot_be_walked_are_dropped_with_their_reason(dp):
    """Five headers (one more than the walk follows), NO NEXT HEADER, two fragment headers, and a header
    cut short are dropped with a reason of their own, even where an L3 allow would admit anything."""
    before = dp.drops("invalid-ipv6-extension-header"), dp.drops("malformed-packet")
    base = IPv6(src=W6, dst=XA6)
    five = base / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() \
        / IPv6ExtHdrDestOpt() / TCP(dport=80)
    none = base / IPv6ExtHdrDestOpt(nh=59)
    two_frags = base / IPv6ExtHdrFragment(offset=0, m=0, id=1) / IPv6ExtHdrFragment(offset=0, m=0, id=2) / TCP(dport=80)
    cut = bytes(base / IPv6ExtHdrDestOpt(len=4) / TCP(dport=80))[:40 + 16]  # says 40 bytes, has 16
    for pkt in (five, none, two_frags):
        assert not dp.passes("to_pod", pkt)
    assert not dp.passes("to_pod", IPv6(cut))
    events = dp.drained()
    assert [e.reason for e in events] == ["invalid-ipv6-extension-header"] * 3 + ["malformed-packet"]
    assert all(e.verdict == "deny" and e.direction == "ingress" and e.dst == XA6 for e in events)
    assert (dp.drops("invalid-ipv6-extension-header"), dp.drops("malformed-packet")) == (before[0] + 3, before[1] + 1)
    # four headers are walked
    four = base / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(addresses=[]) \
        / IPv6ExtHdrDestOpt() / TCP(sport=40002, dport=80, flags="S")
    assert dp.passes("to_pod", four)


def test_esp_is_an_opaque_protocol_decided_by_l3_rules(dp):
    """ESP ends the walk as Cilium's does: x/a's L3 allow admits it, x/b's port rules do not."""
    dp.drained()
    esp = lambda dst: IPv6(src=W6, dst=dst, nh=50) / (b"\0\0\0\1" + b"\0" * 28)  # noqa: E731
    assert dp.passes("to_pod", esp(XA6))
    assert not dp.passes("to_pod", esp(XB6))
    assert [(e.protocol, e.reason) for e in dp.drained() if e.verdict == "deny"] == [("50", "default-deny")]


# -- 7: fragments -------------------------------------------------------------------------------

@pytest.mark.parametrize("family", [4, 6])
def test_fragments_take_their_first_fragments_ports(dp, family):
    """A large UDP datagram to x/b:80 passes whole, its fragmented answer passes back; one to x/b:81 is
    dropped whole; a later fragment whose first was never seen is dropped with its own reason even to
    x/a, whose L3 allow admitted it as port 0 before, and it plants no port-0 conntrack entry."""
    src, xb, xa = (W4, XB4, XA4) if family == 4 else (W6, XB6, XA6)
    ip = IP if family == 4 else IPv6

    def frags(s, d, sport, dport, ident):
        pkt = ip(src=s, dst=d) / UDP(sport=sport, dport=dport) / (b"x" * 3000)
        if family == 4:
            pkt[IP].id = ident
            return fragment(pkt, fragsize=1200)
        return fragment6(IPv6(src=s, dst=d) / IPv6ExtHdrFragment(id=ident) / UDP(sport=sport, dport=dport)
                         / (b"x" * 3000), 1280)

    good = frags(src, xb, 41000 + family, 80, 100 + family)
    assert len(good) >= 3
    assert [world_to(dp, f)[1] for f in good] == [True] * len(good)
    answer = frags(xb, src, 80, 41000 + family, 200 + family)
    assert [dp.passes("from_pod", f) for f in answer] == [True] * len(answer)
    bad = frags(src, xb, 41010 + family, 81, 300 + family)
    assert [dp.passes("to_pod", f) for f in bad] == [False] * len(bad)
    dp.drained()
    before = dp.drops("fragment-without-first")
    orphan = frags(src, xa, 41020 + family, 53, 400 + family)[1]
    assert not dp.passes("to_pod", orphan)
    assert [e.reason for e in dp.drained()] == ["fragment-without-first"]
    assert dp.drops("fragment-without-first") == before + 1
    assert not [k for k in dp.conntrack() if k["sport"] == 0 and k["dport"] == 0 and k["proto"] == 17]


# -- 6: neighbour discovery ---------------------------------------------------------------------

def test_neighbour_discovery_passes_before_source_check_and_policy(dp):
    """The pod's NS for its gateway from a link-local or :: source, RS and MLD reports leave it; the
    node's NA reaches x/b although x/b admits nothing but 80 from world."""
    ns_gw = lambda src, hlim=255: (IPv6(src=src, dst="ff02::1:ff00:1", hlim=hlim)  # noqa: E731
                                   / ICMPv6ND_NS(tgt=NODE_LL))
    assert dp.passes("from_pod", ns_gw(POD_LL))
    assert dp.passes("from_pod", ns_gw("::"))
    assert dp.passes("from_pod", ns_gw(XB6))
    assert dp.passes("from_pod", IPv6(src=POD_LL, dst="ff02::2", hlim=255) / ICMPv6ND_RS())
    mld = IPv6(src=POD_LL, dst="ff02::16", hlim=1) / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLReport2()
    assert dp.passes("from_pod", mld)
    na = IPv6(src=NODE_LL, dst=XB6, hlim=255) / ICMPv6ND_NA(tgt=NODE_LL, R=1, S=1)
    assert dp.passes("to_pod", na)
    assert dp.stat("nd_passed") >= 6


def test_neighbour_discovery_is_no_way_around_policy(dp):
    """What only looks like ND gets no favour: a routed hop limit, an NS to a remote host (no link
    scope), a link-local source that is not ND, a forwarded NA to x/b."""
    assert not dp.passes("from_pod", IPv6(src=POD_LL, dst="ff02::1:ff00:1", hlim=64) / ICMPv6ND_NS(tgt=NODE_LL))
    assert not dp.passes("from_pod", IPv6(src=XB6, dst=W6, hlim=255) / ICMPv6ND_NS(tgt=W6))
    assert not dp.passes("from_pod", IPv6(src=POD_LL, dst=W6) / TCP(dport=443, flags="S"))
    assert not dp.passes("to_pod", IPv6(src=W6, dst=XB6, hlim=254) / ICMPv6ND_NA(tgt=W6))


# -- 6: ICMP errors related to their connection ---------------------------------------------------

def quoted(family, src, dst, proto, sport, dport):
    ip = IP(src=src, dst=dst) if family == 4 else IPv6(src=src, dst=dst)
    return ip / (TCP(sport=sport, dport=dport, flags="S") if proto == "tcp" else UDP(sport=sport, dport=dport))


@pytest.mark.parametrize("family", [4, 6])
def test_packet_too_big_for_a_tracked_connection_passes(dp, family):
    """x/b connects to world:443; a router's fragmentation-needed / Packet Too Big quoting that SYN
    reaches x/b (xdp_node and to_pod) although x/b admits no ICMP; the same error quoting a flow that
    does not exist, or sent to another pod, is decided by policy and dropped."""
    xb, w, r, yb = (XB4, W4, R4, YB4) if family == 4 else (XB6, W6, R6, YB6)
    sport = 42000 + family
    assert dp.passes("from_pod", quoted(family, xb, w, "tcp", sport, 443))

    def too_big(to, inner):
        if family == 4:
            return IP(src=r, dst=to) / ICMP(type=3, code=4, nexthopmtu=1200) / inner
        return IPv6(src=r, dst=to) / ICMPv6PacketTooBig(mtu=1280) / inner

    assert world_to(dp, too_big(xb, quoted(family, xb, w, "tcp", sport, 443))) == [True, True]
    assert dp.stat("icmp_related") >= 2
    assert world_to(dp, too_big(xb, quoted(family, xb, w, "tcp", sport, 444))) == [False, False]
    assert not dp.passes("to_pod", too_big(yb, quoted(family, xb, w, "tcp", sport, 443)))
    assert not dp.passes("to_pod", too_big(xb, b"\x45"))  # nothing quoted worth the name


@pytest.mark.parametrize("family", [4, 6])
def test_port_unreachable_answer_passes_only_for_an_admitted_flow(dp, family):
    """world sends UDP to x/b:80 (admitted); x/b's port unreachable about it leaves x/b although x/b may
    only send 443/TCP to world. A port unreachable about a datagram x/b never received is dropped."""
    xb, w = (XB4, W4) if family == 4 else (XB6, W6)
    sport = 43000 + family
    assert dp.passes("to_pod", quoted(family, w, xb, "udp", sport, 80))

    def unreachable(inner):
        if family == 4:
            return IP(src=xb, dst=w) / ICMP(type=3, code=3) / inner
        return IPv6(src=xb, dst=w) / ICMPv6DestUnreach(code=4) / inner

    assert dp.passes("from_pod", unreachable(quoted(family, w, xb, "udp", sport, 80)))
    assert not dp.passes("from_pod", unreachable(quoted(family, w, xb, "udp", sport, 81)))


# -- 12: event budgets and losses -----------------------------------------------------------------

def test_allowed_churn_does_not_hide_drops_and_losses_are_counted(dp):
    """Thousands of new allowed flows exhaust the allow budget (counted as rate-limited), yet the drop
    after them is reported; with nobody reading, a full ring buffer counts what it loses."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one CPU: one per-CPU budget
    try:
        dp.drained()
        limited = dp.stat("events_ratelimited_allow")
        syn = bytearray(bytes(Ether(**MACS) / IPv6(src=W6, dst=XA6) / TCP(dport=8080, flags="S")))
        for n in range(2500):  # raw frames, so 2500 new flows take well under a second
            struct.pack_into("!H", syn, 14 + 40, 10000 + n)
            assert dp.passes_frame("to_pod", bytes(syn))
            if n % 40 == 0:
                dp.drained()  # keep the small ring buffer from filling: only the budget may stop events
        assert dp.stat("events_ratelimited_allow") > limited
        assert not dp.passes("to_pod", IPv6(src=W6, dst=XA6) / TCP(sport=9999, dport=22, flags="S"))
        assert [(e.verdict, e.dport) for e in dp.drained() if e.verdict == "deny"] == [("deny", 22)]

        lost = dp.stat("events_lost")
        for n in range(200):  # drops: their own budget has room, the 4 KiB ring buffer does not
            dp.passes("to_pod", IPv6(src=W6, dst=XB6) / TCP(sport=20000 + n, dport=9, flags="S"))
        assert dp.stat("events_lost") > lost
        assert 0 < len(dp.drained()) < 200
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
