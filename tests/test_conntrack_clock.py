"""The carry-over rule reads ages exactly as the datapath does (conntrack.h.j2 clock_age).

A machine up for less than a lifetime holds clock values smaller than the lifetime, so an entry aged by
subtracting modulo 2**64 (as the datapath and the tests that age entries do) must still read as old.
"""
from policyc.bpf_runtime.conntrack import CT_LIFETIMES, CT_TCP_BITS, clock_age, expired
from policyc.compiler.ir import Protocol

HOUR = 3600 * 10**9


def test_an_age_across_the_boot_is_an_age_not_the_future():
    now = HOUR  # up one hour
    then = (now - 6 * HOUR) % 2**64
    assert clock_age(now, then) == 6 * HOUR


def test_a_time_ahead_of_now_is_no_age():
    assert clock_age(10**9, 10**9 + 5) == 0
    assert clock_age(10**9, 10**9) == 0
    assert clock_age(10**9 + 5, 10**9) == 5


def test_an_entry_aged_past_its_lifetime_soon_after_boot_is_expired():
    lifetime = CT_LIFETIMES["LIFETIME_TCP"] * 10**9
    now = 60 * 10**9  # up one minute
    value = {"tcp": CT_TCP_BITS["SEEN_NON_SYN"], "last_seen": (now - lifetime - 10**9) % 2**64}
    assert expired(value, Protocol.TCP, now)
    assert not expired({**value, "last_seen": (now - lifetime + 10**9) % 2**64}, Protocol.TCP, now)
