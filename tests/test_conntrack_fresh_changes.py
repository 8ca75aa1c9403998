"""What the conntrack fresh window must not change, with real packets through the bypass artifact
(test_datapath_bypass's Node): a policy change still meets a fresh entry (ct_recheck), an ICMP error about
an expired flow is not related; and that a full check at an even tick, which stamps the next tick, leaves
the rest of its own tick fresh.
"""
from __future__ import annotations

import time

import pytest

from policyc.bpf_runtime.bindings import bump_revision
from policyc.bpf_runtime.conntrack import CLOCK_MONOTONIC_COARSE, clock_age
from policyc.compiler.codegen import CT_LIFETIMES
from test_conntrack_fresh import _fresh, _handshake, _set, _value
from test_datapath_bypass import (PODS, WORLD, _relabel, _ticks, artifact, icmp_error, node,  # noqa: F401 (fixtures)
                                 quoted, syn)

pytestmark = pytest.mark.kernel


def test_a_change_meets_an_entry_inside_its_window(node):
    """x/b -> x/a:80 established and fresh. An unrelated change: the next plain ACK (no clock read) is
    decided again and keeps its stamp and last_seen (ct_recheck is no full check). Then x/b is relabelled
    to nothing: the fresh entry's next plain ACK is dropped both ways and the entry deleted."""
    a, b = PODS["x/a"][0], PODS["x/b"][0]
    assert node.tc("to_pod", "x/a", syn(b, a, 44000, 80))
    assert node.tc("from_pod", "x/a", syn(a, b, 80, 44000, "SA"))
    assert node.tc("to_pod", "x/a", syn(b, a, 44000, 80, "A"))
    assert node.tc("from_pod", "x/a", syn(a, b, 80, 44000, "A"))           # promoted to ct_tcp
    key, v = _value(node, "ct_tcp")
    stamp, aged = _ticks() | 1, (v["last_seen"] - 3 * 10**9) % 2**64
    _set(node, "ct_tcp", key, last_seen=aged, checked=stamp)
    bump_revision(node.obj.map("revision"))
    assert node.tc("to_pod", "x/a", syn(b, a, 44000, 80, "A"))
    _, after = _value(node, "ct_tcp")
    if _fresh(stamp):                                                    # still inside the window
        assert (after["checked"], after["last_seen"]) == (stamp, aged)
    assert after["revision"] != v["revision"]
    _set(node, "ct_tcp", key, checked=_ticks() | 1)
    _relabel(node, "x/b", 300)
    assert not node.tc("from_pod", "x/a", syn(a, b, 80, 44000, "A"))
    assert node.entries("ct_tcp") == 0
    assert not node.tc("to_pod", "x/a", syn(b, a, 44000, 80, "A"))


def test_an_icmp_error_about_an_expired_established_flow_is_not_related(node):
    """x/a's answered connection to the world, idle past LIFETIME_TCP with a stale stamp: a router's
    Packet Too Big quoting it is no longer related (ct_related checks the entry in full and deletes it).
    With a fresh stamp (inside the window, nothing can have expired) it is related."""
    a, world, router = PODS["x/a"][0], WORLD[0], "203.0.113.1"
    _handshake(node, a, world, 45000)
    key, v = _value(node, "ct_tcp")
    assert node.tc("to_pod", "x/a", icmp_error(router, a, quoted(a, world, 45000, 443, "A"), too_big=True))
    _set(node, "ct_tcp", key, last_seen=(v["last_seen"] - (CT_LIFETIMES["LIFETIME_TCP"] + 1) * 10**9) % 2**64,
         checked=(_ticks() - 100000) % 2**32 | 1)
    assert not node.tc("to_pod", "x/a", icmp_error(router, a, quoted(a, world, 45000, 443, "A"), too_big=True))
    assert node.entries("ct_tcp") == 0
    assert not node.tc("to_pod", "x/a", syn(world, a, 443, 45000, "A"))


def _even_tick(deadline: float) -> int:
    while True:
        t = _ticks()
        if not t & 1:
            return t
        assert time.monotonic() < deadline
        time.sleep(0.0005)


def test_the_packet_after_a_full_check_in_the_same_even_tick_skips_the_clock(node):
    """A full check during even tick T stamps T | 1 = T + 1. The next plain segment, still in tick T, reads
    ticks - checked = -1 (unsigned: 2**32 - 1): not fresh, so it reads the clock and writes the stamp again,
    and so does every packet of the flow until the tick ends (a shared cache line written per packet)."""
    a, world = PODS["x/a"][0], WORLD[0]
    _handshake(node, a, world, 46000)
    key, v = _value(node, "ct_tcp")
    for _ in range(20):
        t = _even_tick(time.monotonic() + 5)
        aged = (v["last_seen"] - 3 * 10**9) % 2**64           # refreshed by a full check, kept by a fast hit
        _set(node, "ct_tcp", key, last_seen=aged, checked=t | 1)  # what a full check in tick t wrote
        assert node.tc("to_pod", "x/a", syn(world, a, 443, 46000, "A"))
        if _ticks() == t:
            break
    else:
        pytest.skip("the tick moved during every attempt")
    _, after = _value(node, "ct_tcp")
    now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
    assert clock_age(now, after["last_seen"]) > 2 * 10**9, "the packet in the stamp's own tick read the clock"
