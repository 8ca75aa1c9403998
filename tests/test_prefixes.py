"""prefixes.PrefixIndex against the pairwise definition (ipaddress.subnet_of / overlaps / in)."""
from __future__ import annotations

import ipaddress
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.compiler.prefixes import PrefixIndex


@st.composite
def networks(draw, version: int):
    """Prefixes in a small corner of the address space, so that they nest and repeat often."""
    bits = 32 if version == 4 else 128
    length = draw(st.integers(bits - 8, bits) | st.just(0) | st.integers(0, bits))
    base = (0xC0000200 if version == 4 else 0x20010DB8 << 96) | draw(st.integers(0, 255))
    if length < bits - 8:
        base = draw(st.integers(0, (1 << bits) - 1))
    net = ipaddress.ip_network((base, bits), strict=False).supernet(new_prefix=length)
    return net


PREFIXES = st.lists(st.tuples(networks(4) | networks(6), st.integers(0, 5)), max_size=30)


@settings(max_examples=150, deadline=None)
@given(PREFIXES, networks(4) | networks(6))
def test_queries_equal_the_pairwise_answers(items, query):
    index = PrefixIndex(items)
    same = [(n, v) for n, v in items if n.version == query.version]
    assert Counter(index.within(query)) == Counter(v for n, v in same if n.subnet_of(query))
    assert Counter(index.containing(query)) == Counter(v for n, v in same if query.subnet_of(n))
    assert Counter(index.overlapping(query)) == Counter(v for n, v in same if n.overlaps(query))
    assert index.bound(query) >= len(list(index.overlapping(query)))
    ip = query.network_address
    assert Counter(index.containing_address(ip)) == Counter(v for n, v in same if ip in n)


def test_containing_is_shortest_first():
    net = ipaddress.ip_network
    index = PrefixIndex([(net("10.1.2.0/24"), "c"), (net("0.0.0.0/0"), "w"), (net("10.0.0.0/8"), "a")])
    assert list(index.containing(net("10.1.2.128/25"))) == ["w", "a", "c"]
