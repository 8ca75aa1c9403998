"""The conntrack fresh window: a plain segment of an established entry fully checked within CT_FRESH_TICKS
ticks skips the clock (conntrack.h ct_get). Real packets through the bypass artifact (tests/data/bypass, test_datapath_bypass's
Node): TCP state moves while the clock is not read, a busy flow's last_seen lags less than the shortest
lifetime in real time, and what the window trusts blindly (a stamp whose low 32 bits equal the tick counter).
"""
from __future__ import annotations

import time

import pytest

from kernelreq import require_kernel
from policyc.bpf_runtime.conntrack import CLOCK_MONOTONIC_COARSE, clock_age, expired
from policyc.compiler.codegen import CT_LIFETIMES, CT_TCP_BITS
from policyc.compiler.ir import Protocol
from policyc.cli import main
from test_datapath_bypass import PODS, WORLD, _ticks, artifact, node, syn  # noqa: F401 (fixtures)

pytestmark = pytest.mark.kernel

FRESH = 64  # config.h CT_FRESH_TICKS


def _fresh(stamp: int) -> bool:
    """conntrack.h ct_fresh, read now: a stamp may be one tick ahead of the counter (stamps are ticks | 1)."""
    return (_ticks() + 1 - stamp) % 2**32 <= FRESH


def _value(node, table: str) -> tuple[bytes, dict]:
    (key,) = node.obj.map(table).keys()
    return key, node.lay["ct_value"].unpack(node.obj.map(table).lookup(key))


def _set(node, table: str, key: bytes, **fields) -> None:
    m = node.obj.map(table)
    m.update(key, node.lay["ct_value"].pack(**{**node.lay["ct_value"].unpack(m.lookup(key)), **fields}))


def _handshake(node, a, world, sport):
    assert node.tc("from_pod", "x/a", syn(a, world, sport, 443))
    assert node.tc("to_pod", "x/a", syn(world, a, 443, sport, "SA"))
    assert node.tc("from_pod", "x/a", syn(a, world, sport, 443, "A"))
    assert node.tc("to_pod", "x/a", syn(world, a, 443, sport, "A"))


def test_a_rst_inside_the_window_starts_the_closing_lifetime_from_itself(node):
    """A SYN, FIN or RST meets its entry in full even inside the fresh window: the RST moves the state to
    closing and last_seen to itself, so the 10 s a closing entry lives count from the RST, not from the
    last refresh up to a second and a window earlier (last_seen is set 5 s back here, the stamp kept)."""
    a, world = PODS["x/a"][0], WORLD[0]
    _handshake(node, a, world, 41000)
    key, v = _value(node, "ct_tcp")
    _set(node, "ct_tcp", key, last_seen=(v["last_seen"] - 5 * 10**9) % 2**64)
    assert node.tc("to_pod", "x/a", syn(world, a, 443, 41000, "R"))
    _, after = _value(node, "ct_tcp")
    assert after["tcp"] & CT_TCP_BITS["CLOSING"]
    assert clock_age(time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE), after["last_seen"]) < 10**9
    node.age(9)
    assert node.tc("from_pod", "x/a", syn(a, world, 41000, 443, "A"))      # 9 s after the RST: still closing
    node.age(11)
    assert not node.tc("to_pod", "x/a", syn(world, a, 443, 41000, "A"))
    assert node.entries("ct_tcp") == 0                                      # deleted where met

    _handshake(node, a, world, 41001)
    assert node.tc("from_pod", "x/a", syn(a, world, 41001, 443, "FA"))
    assert node.tc("to_pod", "x/a", syn(world, a, 443, 41001, "FA"))
    _, closing = _value(node, "ct_tcp")
    assert closing["tcp"] & CT_TCP_BITS["CLOSING"]
    assert node.tc("from_pod", "x/a", syn(a, world, 41001, 443))            # a SYN reopens: a new flow
    assert node.entries("ct_tcp") == 0
    _, opened = _value(node, "ct_new")
    assert opened["tcp"] == 0                                               # SYN state, 60 s to be answered
    assert node.tc("to_pod", "x/a", syn(world, a, 443, 41001, "SA"))        # the world answers the new SYN


def test_a_busy_flows_last_seen_never_lags_into_any_lifetime(node):
    """Real time, about 2.5 s: packets every 10 ms both ways. last_seen, which the agent's and replace's
    expiry read (conntrack.py expired), lags at most CT_REFRESH_NS plus the window behind the clock, so even
    the shortest lifetime (a closing entry's 10 s) never sees the busy flow as expired; the stamp moves."""
    a, world = PODS["x/a"][0], WORLD[0]
    _handshake(node, a, world, 42000)
    start_ticks, start = _ticks(), time.monotonic()
    stamps, worst = set(), 0
    while time.monotonic() - start < 2.5:
        assert node.tc("from_pod", "x/a", syn(a, world, 42000, 443, "A"))
        assert node.tc("to_pod", "x/a", syn(world, a, 443, 42000, "A"))
        _, v = _value(node, "ct_tcp")
        now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
        worst = max(worst, clock_age(now, v["last_seen"]))
        stamps.add(v["checked"])
        assert not expired({**v, "tcp": v["tcp"] | CT_TCP_BITS["CLOSING"]}, Protocol.TCP, now)
        time.sleep(0.01)
    hz = ((_ticks() - start_ticks) % 2**32) / (time.monotonic() - start)
    assert len(stamps) >= 3                                    # full checks happen every CT_FRESH_TICKS
    assert worst < 10**9 + FRESH / hz * 10**9 + 10**8, (worst, hz)
    assert worst < CT_LIFETIMES["CLOSE_TIMEOUT"] * 10**9


@pytest.mark.parametrize("flags", ["SA", "A"])
def test_an_unanswered_entry_whose_stamp_matches_the_tick_counter_is_checked_in_full(node, flags):
    """x/a's SYN to the world is never answered; 61 s later (past its 60 s) the world's SYN-ACK, or a bare
    ACK, is dropped (x/a admits nothing from the world). The stamp is set to the tick counter's current low
    32 bits, what it reads after exactly 2**32 ticks without a packet (49.7 days at 1000 Hz): an entry in
    ct_new, or one a packet could change (a handshake, a promotion), never skips its full check."""
    a, world = PODS["x/a"][0], WORLD[0]
    assert node.tc("from_pod", "x/a", syn(a, world, 43000, 443))
    key, v = _value(node, "ct_new")
    _set(node, "ct_new", key, last_seen=(v["last_seen"] - 61 * 10**9) % 2**64, checked=_ticks())
    assert not node.tc("to_pod", "x/a", syn(world, a, 443, 43000, flags))
    assert node.entries("ct_new") == 0 and node.entries("ct_tcp") == 0


def test_a_blindly_trusted_stamp_lets_an_expired_entry_pass_for_at_most_the_window(node):
    """What the wrap still allows: an established entry (answered, past its handshake) whose stamp matches
    the tick counter passes plain segments unchecked; they change nothing (no stamp, no last_seen), so the
    first packet CT_FRESH_TICKS later checks it in full and deletes it."""
    a, world = PODS["x/a"][0], WORLD[0]
    _handshake(node, a, world, 43001)
    key, v = _value(node, "ct_tcp")
    stamp = _ticks() | 1
    aged = (v["last_seen"] - (CT_LIFETIMES["LIFETIME_TCP"] + 1) * 10**9) % 2**64
    _set(node, "ct_tcp", key, last_seen=aged, checked=stamp)
    if node.tc("to_pod", "x/a", syn(world, a, 443, 43001, "A")):          # unchecked while inside the window
        _, after = _value(node, "ct_tcp")
        assert (after["checked"], after["last_seen"]) == (stamp, aged)
    deadline = time.monotonic() + 10
    while _fresh(stamp):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not node.tc("to_pod", "x/a", syn(world, a, 443, 43001, "A"))
    assert node.entries("ct_tcp") == 0
