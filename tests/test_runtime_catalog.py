"""The endpoint catalog a resident agent keeps: its identities as policy peers, named ports included, stay what
a scan of every pod gives while pods come, change labels and go (no kernel needed)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policyc.bpf_runtime.endpoints import Catalog, Extra, load_sources, own_labels, plan_set
from policyc.bpf_runtime.loaded import manifest_of
from policyc.bpf_runtime.state import State, manifest_sha256
from policyc.cli import main
from policyc.compiler.evaluate import LabelIndex
from policyc.compiler.ir import pending_scope
from policyc.compiler.lower import PeerIdentity

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> State:
    out = tmp_path_factory.mktemp("catalog") / "shop"
    assert main(["compile", str(SHOP / "policies"), "--inventory", str(SHOP / "inventory.yaml"),
                 "--l7", "l4-only", "--output-dir", str(out)]) == 0
    return State("shop", str(out), manifest_sha256(out), "/nonexistent", "tcx", 0.0)


def _scanned(cat: Catalog, extra=None, without=None) -> tuple[PeerIdentity, ...]:
    """Every identity as a peer from a scan of every pod: what Catalog.peers keeps counted."""
    labels, ports = {}, {}
    for ep in [p.endpoint for n, p in cat.pods.items() if n != without] + ([extra] if extra else []):
        labels[ep.identity.id] = ep.identity.labels
        ports.setdefault(ep.identity.id, set()).update(ep.ports)
    out = dict(cat.fixed_peers)
    for ident, lbls in labels.items():
        out[ident] = PeerIdentity(ident, lbls, None, tuple(sorted(ports[ident], key=lambda n: (n.name, n.protocol, n.port))),
                                  pending_scope(lbls))
    return tuple(out[k] for k in sorted(out))


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_peers_stay_what_a_scan_of_the_pods_gives(shop, data):
    src = load_sources(shop)
    cat = Catalog(shop, src, {})
    names = sorted(cat.pods)
    for _ in range(data.draw(st.integers(0, 8), "changes")):
        pod = data.draw(st.sampled_from(sorted(cat.pods) or names), "pod")
        if pod not in cat.pods:
            continue
        if data.draw(st.booleans(), "remove"):
            cat.apply({"op": "remove", "endpoint": pod})
            continue
        donor = cat.pods[data.draw(st.sampled_from(sorted(cat.pods)), "takes the labels of")].endpoint
        have = cat.pods[pod]
        labels = own_labels(donor.identity.labels)
        full = cat.identity_labels(pod, labels, donor.service_account, Extra())
        cat.apply({"op": "relabel", "endpoint": pod, "ips": [str(i) for i in have.endpoint.ips],
                   "labels": labels, "service_account": donor.service_account,
                   "identity": cat.identity_of(full, pod)[0] if have.endpoint.identity.labels != full
                   else have.endpoint.identity.id,
                   "policy_id": have.policy_id, "endpoint_id": have.endpoint_id})
        assert cat.peers() == _scanned(cat)
    for without in sorted(cat.pods)[:5]:
        assert cat.peers(without=without) == _scanned(cat, without=without)
        ep = cat.pods[without].endpoint
        assert cat.peers(extra=ep, without=without) == _scanned(cat, extra=ep, without=without)


class _Plain(Catalog):
    def label_universe(self, *more):
        return LabelIndex([p.labels for p in self.peers()] + list(more))


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_an_agents_long_lived_indexes_plan_what_a_fresh_catalog_plans(shop, data):
    """The agent keeps its label index across changes (Catalog.label_universe: sets added, never removed
    until rebuilt): after any changes, a relabel plans the entries that a catalog built afresh from the same
    records plans with an index of exactly the peers' label sets."""
    src = load_sources(shop)
    features = manifest_of(shop)["features"]
    cat = Catalog(shop, src, features)
    records = []
    for step in range(data.draw(st.integers(1, 6), "changes")):
        pod = data.draw(st.sampled_from(sorted(cat.pods)), "pod")
        donor = cat.pods[data.draw(st.sampled_from(sorted(cat.pods)), "takes the labels of")].endpoint
        labels = own_labels(donor.identity.labels)
        if data.draw(st.booleans(), "a label set no pod holds"):
            labels = {**labels, "step": str(step)}
        plan = plan_set(cat, cat.pods[pod], "relabel", pod, None, labels, donor.service_account, Extra(),
                        donor.ports)
        fresh = _Plain(State(**{**vars(shop), "runtime": list(records)}), src, features)
        again = plan_set(fresh, fresh.pods[pod], "relabel", pod, None, labels, donor.service_account, Extra(),
                         donor.ports)
        assert sorted(map(repr, plan.entries)) == sorted(map(repr, again.entries))
        assert plan.record == again.record
        cat.apply(plan.record)
        records.append(plan.record)
