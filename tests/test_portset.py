"""Port sets: union, intersection and difference by sweeps over sorted spans equal the same operations on
plain sets of (protocol, port), and stay canonical (sorted, disjoint, never touching) so that equal sets
compare equal."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.compiler.ir import Protocol
from policyc.compiler.portset import _ORDER, PortSet

TOP = 40
spans = st.tuples(st.sampled_from((Protocol.TCP, Protocol.UDP, Protocol.ICMP)), st.integers(0, TOP),
                  st.integers(0, 8)).map(lambda s: (s[0], s[1], min(TOP, s[1] + s[2])))
port_sets = st.lists(spans, max_size=8).map(PortSet.of)


def flat(ps: PortSet) -> set:
    return {(p, port) for p, lo, hi in ps.spans for port in range(lo, hi + 1)}


def canonical(ps: PortSet) -> bool:
    keys = [(_ORDER[p], lo, hi) for p, lo, hi in ps.spans]
    return all(lo <= hi for _, lo, hi in keys) and all(
        a[0] < b[0] or a[2] + 1 < b[1] for a, b in zip(keys, keys[1:]))


@settings(max_examples=300, deadline=None)
@given(a=port_sets, b=port_sets, more=st.lists(port_sets, max_size=4))
def test_set_operations_are_those_of_plain_sets(a, b, more):
    for got, want in ((a & b, flat(a) & flat(b)), (a - b, flat(a) - flat(b)), (a | b, flat(a) | flat(b)),
                      (PortSet.union([a, b, *more]), set().union(flat(a), flat(b), *map(flat, more)))):
        assert flat(got) == want and canonical(got)
