"""The evaluator's label indexes against testing every selector on every label set."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from irgen import inventories, policy_sets, selectors
from policyc.compiler.evaluate import LabelIndex, PeerBuckets, SubjectBuckets, subject_labels
from policyc.compiler.inventory import external
from dpgen import ORIGIN
from policyc.compiler.ir import (NAMESPACE_KEY, PENDING_SCOPES, DefaultDeny, Direction, EndpointKind, Label, Op,
                                 Requirement, Selector, SelectorPeer, SubjectKind)
from test_pending_labels import pending_version


@settings(max_examples=100, deadline=None)
@given(inventories(), st.lists(selectors, max_size=6))
def test_label_index_finds_exactly_the_matching_sets(inventory, sels):
    sets = [ep.identity.labels for ep in inventory.endpoints]
    sets += [external(ep.ips[0]).identity.labels for ep in inventory.endpoints[:1]]
    index = LabelIndex(sets)
    for sel in sels:
        assert index.matching(sel) == [i for i, labels in enumerate(sets) if sel.matches(labels)]


@settings(max_examples=100, deadline=None)
@given(inventories(), inventories(), st.lists(selectors, max_size=6))
def test_a_label_index_grown_set_by_set_is_the_index_of_all_of_them(first, later, sels):
    """The node agent keeps one index and adds the label sets pods take later (LabelIndex.add)."""
    sets = [ep.identity.labels for ep in first.endpoints]
    grown = LabelIndex(sets)
    for ep in later.endpoints:
        assert grown.add(ep.identity.labels) == len(sets)
        sets.append(ep.identity.labels)
        assert ep.identity.labels in grown
    for sel in sels:
        assert grown.matching(sel) == LabelIndex(sets).matching(sel)


@settings(max_examples=100, deadline=None)
@given(policy_sets(max_rules=8), inventories(), st.sampled_from((None, *PENDING_SCOPES)))
def test_peer_buckets_keep_every_rule_a_label_set_may_be_a_peer_of(policy, inventory, scope):
    """A relabel to labels no pod holds lowers only the rules PeerBuckets names: none that has a selector
    peer matching them (or, for a pending pod, one that may) may be missing, and in policy order."""
    buckets = PeerBuckets(policy.rules)
    for ep in inventory.endpoints:
        labels = pending_version(ep, scope).identity.labels if scope and ep.kind is EndpointKind.POD \
            else ep.identity.labels
        pending = scope if scope and ep.kind is EndpointKind.POD else None
        found = buckets.candidates(labels, pending)
        assert [policy.rules.index(r) for r in found] == sorted(policy.rules.index(r) for r in found)
        for r in policy.rules:
            sels = [s for p in r.peers if isinstance(p, SelectorPeer) for s in p.selectors]
            if any(s.bounds(labels, pending)[1] if pending else s.matches(labels) for s in sels):
                assert r in found, (r.id, sorted(map(str, labels)))


@settings(max_examples=100, deadline=None)
@given(policy_sets(max_rules=8), inventories())
def test_subject_buckets_keep_every_item_that_selects(policy, inventory):
    for items in (policy.rules, policy.default_deny):
        buckets = SubjectBuckets(items)
        for ep in inventory.endpoints:
            labels = subject_labels(ep)
            found = buckets.candidates(labels)
            assert found == sorted(found)
            assert {i for i, x in enumerate(items) if x.subject.matches(labels)} <= set(found)


@settings(max_examples=100, deadline=None)
@given(policy_sets(max_rules=8), inventories(), st.sampled_from(PENDING_SCOPES))
def test_subject_buckets_keep_every_item_that_may_select_a_pending_pod(policy, inventory, scope):
    """A pod whose labels are not known yet lacks the label an item may be bucketed under: every item
    that may select it is still a candidate."""
    pods = [pending_version(ep, scope).identity.labels for ep in inventory.endpoints if ep.kind is EndpointKind.POD]
    for items in (policy.rules, policy.default_deny):
        buckets = SubjectBuckets(items)
        for labels in pods:
            may = {i for i, x in enumerate(items) if x.subject.bounds(labels, scope)[1]}
            assert may <= set(buckets.candidates(labels, scope))


def test_an_item_sits_under_its_rarest_requirement():
    """An app name repeated in every namespace names many items, a namespace few: bucket by namespace,
    so a pod meets its namespace's items only."""
    def item(ns: str, app: str) -> DefaultDeny:
        sel = Selector((Requirement("k8s", NAMESPACE_KEY, Op.IN, (ns,)), Requirement("k8s", "app", Op.IN, (app,))))
        return DefaultDeny(sel, SubjectKind.ENDPOINT, Direction.INGRESS, ORIGIN)
    items = [item(f"ns-{k}", app) for k in range(50) for app in ("web", "db")]
    pod = frozenset({Label("k8s", NAMESPACE_KEY, "ns-7"), Label("k8s", "app", "web")})
    assert SubjectBuckets(items).candidates(pod) == [14, 15]
