"""The verifier's neighbour indexes against the pairwise definitions they replace."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from irgen import ENTITIES, EXTERNALS, RESERVED, inventories, peers, policy_sets, ports, selectors
from policyc.compiler.entities import entity_selectors, reserved_label
from policyc.compiler.evaluate import subject_labels
from policyc.compiler.verify import prefilter


@settings(max_examples=150, deadline=None)
@given(st.lists(ports(), min_size=1, max_size=12), st.lists(ports(), min_size=9, max_size=12))
def test_ports_meet_equals_every_pair(xs, ys):
    """Long lists (above SMALL pairs) take the sorted sweep."""
    assert prefilter.ports_meet(xs, ys) == any(prefilter.ports_overlap(x, y) for x in xs for y in ys)


INTERVALS = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 6)).map(lambda t: (t[0], t[0] + t[1])),
                     max_size=10)


@settings(max_examples=200, deadline=None)
@given(INTERVALS, INTERVALS)
def test_interval_sweep_equals_every_pair(a, b):
    assert prefilter._sweep_meets(a, b) == any(x[0] <= y[1] and y[0] <= x[1] for x in a for y in b)


@settings(max_examples=150, deadline=None)
@given(st.lists(peers(), min_size=1, max_size=12), st.lists(peers(), min_size=9, max_size=12))
def test_peers_meet_equals_every_pair(xs, ys):
    assert prefilter.peers_meet(xs, ys) == any(prefilter.peers_overlap(x, y) for x in xs for y in ys)


@settings(max_examples=100, deadline=None)
@given(selectors, st.lists(selectors, max_size=8))
def test_selector_index_keeps_every_selector_that_may_meet(query, sels):
    bound, produce = prefilter.SelectorIndex(sels).candidates(query)
    found = set(produce())
    assert {i for i, s in enumerate(sels) if not prefilter.selectors_disjoint(query, s)} <= found
    assert bound == prefilter.EVERY or len(found) <= bound


@settings(max_examples=100, deadline=None)
@given(policy_sets(max_rules=8))
def test_overlapping_and_near_equal_the_pairwise_scan(policy):
    index = prefilter.Index(policy.rules)
    for rule in policy.rules:
        assert index.overlapping(rule) == [r for r in policy.rules if prefilter.rules_overlap(rule, r)]
        assert index.near(rule.direction, rule.subject_kind, rule.subject) == [
            r for r in policy.rules if r.direction is rule.direction and r.subject_kind is rule.subject_kind
            and not prefilter.selectors_disjoint(rule.subject, r.subject)]


ANY_SELECTOR = st.one_of(selectors, st.sampled_from(ENTITIES).flatmap(
    lambda name: st.sampled_from(entity_selectors(name, "default"))))


@settings(max_examples=1000, deadline=None)
@given(ANY_SELECTOR, ANY_SELECTOR, inventories())
def test_disjoint_selectors_share_no_endpoint(a, b, inventory):
    """``selectors_disjoint`` is sound over every label set an endpoint shows: a pod's, a node's as subject
    and as peer, its own node seen from a pod (reserved:host), the world's and reserved identities'.
    A k8s label and a reserved one are never an endpoint's together (entity peers against pod selectors)."""
    views = [frozenset({reserved_label("host")})]
    for ep in (*inventory.endpoints, *EXTERNALS, *RESERVED):
        views += [ep.identity.labels, subject_labels(ep)]
    if prefilter.selectors_disjoint(a, b):
        assert not [labels for labels in views if a.matches(labels) and b.matches(labels)]
